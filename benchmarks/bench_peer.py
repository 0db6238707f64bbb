"""editscope beside the peer tool (EasyEdit) in the peer's own columns: ROME, FT-L and FT-M at
block 5 (as the peer was run on this model), with editscope's defaults and with the ``easyedit``
reference preset, on the first N CounterFact records of ../shared/data.

    python benchmarks/bench_peer.py                    # 50 records, every row
    python benchmarks/bench_peer.py --n 10 --rows rome rome/easyedit

Columns, with EasyEdit's token definitions (editscope.metrics ``token_acc`` and
``locality_token_agreement``, from the evaluation engine): rewrite = teacher-forced argmax accuracy
over the new target's tokens on the edit prompt; rephrase = the same on its paraphrase; locality =
share of the neighbourhood answer's tokens whose post-edit argmax is the pre-edit one. Each is
averaged within a record, then over records (as EasyEdit's summary does). s/edit = the median wall
time of ``apply_edit`` one record at a time (no batched preparation; ROME's key covariance is
computed before the timed edits, as the peer's was). An edit that fails (EditFailed, rolled back)
counts 0 in every column; the count is printed. The peer's figures (../shared/reference/anchors.md)
come from 50 other CounterFact records: compare the shape, not the third decimal.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import editscope as es
from editscope.methods.presets import with_preset
from editscope.probes.datasets import load_counterfact

#: (row label, method, preset)
ROWS = [("rome", "rome", None), ("rome/easyedit", "rome", "easyedit"), ("ft-l", "ft-l", None),
        ("ft-l/easyedit", "ft-l", "easyedit"), ("ft-m", "ft-m", None), ("ft-m/easyedit", "ft-m", "easyedit")]
#: the peer's measured figures on this model (anchors.md): s/edit, rewrite, rephrase, locality
PEER = {"rome": (35.3, 0.98, 0.44, 0.90), "ft-l": (4.4, 0.95, 0.21, 0.54), "ft-m": (4.4, 1.00, 0.27, 0.53)}
COLUMNS = {"rewrite": ("target", "token_acc"), "rephrase": ("paraphrase", "token_acc"),
           "locality": ("near", "token_agree")}


def record_scores(result: es.EvalResult) -> dict[str, float]:
    """One record's three columns: the mean of its probes' token metric per category."""
    out = {}
    for col, (cat, field) in COLUMNS.items():
        vals = [r[field] for r in result.rows if r["category"] == cat and r[field] is not None]
        out[col] = sum(vals) / len(vals) if vals else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument("--rows", nargs="*", default=[r[0] for r in ROWS], choices=[r[0] for r in ROWS])
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    model = es.load_model(args.model)
    cases = load_counterfact(limit=args.n)
    sets = [es.ProbeSet(list(c.probes), name=f"peer-{i}") for i, c in enumerate(cases)]
    print(f"{model.name} {model.dtype}, {torch.get_num_threads()} threads; {cases.report.summary()}")
    base = [record_scores(es.evaluate(model, s)) for s in sets]  # also caches the base outputs
    fp = model.fingerprint()
    mean = {c: statistics.fmean(b[c] for b in base) for c in COLUMNS}
    print(f"before editing: rewrite {mean['rewrite']:.2f}  rephrase {mean['rephrase']:.2f}  "
          f"locality {mean['locality']:.2f}  (the peer: rewrite 0.06, rephrase 0.05)\n")
    print(f"{'row':15s}{'s/edit':>8s}{'rewrite':>9s}{'rephrase':>9s}{'locality':>9s}{'failed':>7s}   "
          f"{'peer: s/edit':>12s}{'rewrite':>9s}{'rephrase':>9s}{'locality':>9s}")
    for label, method, preset in ROWS:
        if label not in args.rows:
            continue
        hp = with_preset(method, preset, {"layer": args.layer})
        if method == "rome":  # the covariance (when the settings read one) before the timed edits
            m = es.methods.get_method(method)
            req = m.statistics_request(model, m.resolve_hparams(model.arch, model.n_layers, hp))
            if req is not None:
                from editscope.covariance import prefetch_key_statistics

                prefetch_key_statistics(model, [req])
        scores, times, failed = [], [], 0
        for case, probes in zip(cases, sets):
            t = time.perf_counter()
            try:
                h = es.apply_edit(model, case.requests, method, **hp)
            except es.EditFailed:
                times.append(time.perf_counter() - t)
                failed += 1
                scores.append({c: 0.0 for c in COLUMNS})
                continue
            times.append(time.perf_counter() - t)
            scores.append(record_scores(es.evaluate(model, probes)))
            h.undo()
        assert model.fingerprint() == fp
        avg = {c: statistics.fmean(s[c] for s in scores) for c in COLUMNS}
        peer = PEER.get(method)
        peer_cols = (f"{peer[0]:12.1f}{peer[1]:9.2f}{peer[2]:9.2f}{peer[3]:9.2f}" if peer else "")
        print(f"{label:15s}{statistics.median(times):8.2f}{avg['rewrite']:9.3f}{avg['rephrase']:9.3f}"
              f"{avg['locality']:9.3f}{failed:7d}   {peer_cols}", flush=True)


if __name__ == "__main__":
    main()
