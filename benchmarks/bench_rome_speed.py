"""A faster single ROME edit, quality-checked: ROME at its defaults against ROME with a speed lever
(default: the ``fast`` preset's settings, the residual optimisation at lr 1.0), on the same
CounterFact records in one process.

    python benchmarks/bench_rome_speed.py                          # 100 records, the fast preset
    python benchmarks/bench_rome_speed.py --n 20 --lever n_contexts=5 --lever v_lr=0.8

For each record both settings are applied in turn (the order alternates from record to record, so
that a drifting machine load affects both alike), each timed over the whole ``apply_edit`` call
(guard included), scored as ROME scores CounterFact (ES: P(new) > P(true) on the edit prompt; PS:
the same on its paraphrases; NS: P(true) > P(new) on its neighbours), then undone. Prints the median
latency of each and their ratio, ES/PS/NS with 95% Wilson intervals, the exact McNemar test of
lever vs default per metric (paired by probe), the residual-optimisation steps, and how far the
lever's weight update is from the default's (relative Frobenius difference, median over records).
A lever is worth adopting when it meets the latency goal and no metric differs (McNemar).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import editscope as es
from editscope.methods.locate import ROMEHparams
from editscope.methods.presets import preset_hparams
from editscope.probes.datasets import load_counterfact
from editscope.stats import mcnemar_exact

sys.path.insert(0, str(Path(__file__).parent))
from bench_locate import cell, prob_scores  # noqa: E402

CATEGORIES = {"target": "ES", "paraphrase": "PS", "near": "NS"}


def lever_setting(text: str) -> tuple[str, object]:
    """``K=V`` (V as JSON, else a string) for ``--lever``; K must be a ROME hyperparameter."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=VALUE, e.g. v_lr=1.0")
    if key not in ROMEHparams.model_fields:
        raise argparse.ArgumentTypeError(f"{key!r} is not a ROME hyperparameter; have {', '.join(ROMEHparams.model_fields)}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def one(model: es.Model, case, hp: dict) -> tuple[float, dict[str, list[bool]] | None, int | None, torch.Tensor | None]:
    """(seconds, per-category outcomes or None if rolled back, residual steps, the weight update)."""
    t = time.perf_counter()
    try:
        h = es.apply_edit(model, case.requests, "rome", **hp)
    except es.EditFailed:
        return time.perf_counter() - t, None, None, None
    secs = time.perf_counter() - t
    name = h.names[0]
    dw = dict(model.hf.named_parameters())[name].detach() - h.weights_before()[name]
    scores = prob_scores(model, case)
    steps = h.info.get("v_steps")
    h.undo()
    return secs, scores, steps, dw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100, help="CounterFact records (the first n)")
    ap.add_argument("--lever", action="append", default=[], metavar="K=V", type=lever_setting,
                    help="ROME hyperparameter of the faster setting (JSON value; repeatable); default: the fast preset's")
    ap.add_argument("--model", default="smollm2-135m", help="built-in name, .gguf path, folder or hub id")
    args = ap.parse_args()
    lever = dict(args.lever) if args.lever else preset_hparams("rome", "fast")
    model = es.load_model(args.model)
    cases = load_counterfact(limit=args.n)
    print(f"{model.name} {model.dtype}, {torch.get_num_threads()} threads; {cases.report.summary()}")
    print(f"lever: {lever}\n")
    es.apply_edit(model, cases[0].requests, "rome").undo()  # warm: key statistics, caches
    settings = {"default": {}, "lever": lever}
    secs: dict[str, list[float]] = {k: [] for k in settings}
    steps: dict[str, list[int]] = {k: [] for k in settings}
    got: dict[str, dict[str, list[bool]]] = {k: {c: [] for c in CATEGORIES} for k in settings}
    failed = {k: 0 for k in settings}
    rel: list[float] = []
    for i, case in enumerate(cases):
        order = list(settings) if i % 2 == 0 else list(reversed(settings))
        out = {k: one(model, case, settings[k]) for k in order}
        for k, (s, scores, st, _) in out.items():
            secs[k].append(s)
            if scores is None:  # a rolled-back edit fails ES and PS; its neighbours keep the base's answers
                failed[k] += 1
                base = prob_scores(model, case)
                scores = {c: (base[c] if c == "near" else [False] * len(base[c])) for c in CATEGORIES}
            else:
                steps[k].append(st)
            for c in CATEGORIES:
                got[k][c] += scores[c]
        if out["default"][3] is not None and out["lever"][3] is not None:
            d, lv = out["default"][3], out["lever"][3]
            rel.append(float((lv - d).norm() / d.norm()))
    med = {k: statistics.median(v) for k, v in secs.items()}
    print(f"{'setting':8s} {'median s':>9s} {'p90 s':>7s} {'steps':>6s} " +
          " ".join(f"{m:>22s}" for m in CATEGORIES.values()) + f" {'failed':>6s}")
    for k in settings:
        p90 = statistics.quantiles(secs[k], n=10)[-1] if len(secs[k]) > 1 else secs[k][0]
        st = statistics.median(steps[k]) if steps[k] else float("nan")
        print(f"{k:8s} {med[k]:9.2f} {p90:7.2f} {st:6.1f} " +
              " ".join(f"{cell(got[k][c]):>22s}" for c in CATEGORIES) + f" {failed[k]:6d}")
    print(f"\nlever/default median latency: {med['lever'] / med['default']:.2f}x "
          f"({med['default'] / med['lever']:.2f}x faster)")
    for c, m in CATEGORIES.items():
        t = mcnemar_exact(got["default"][c], got["lever"][c])
        print(f"{m}: McNemar exact p = {t.pvalue:.3g} (default only {t.n10}, lever only {t.n01}, of {t.n} probes)")
    if rel:
        print(f"weight update, lever vs default: median relative difference {statistics.median(rel):.3f} "
              f"(max {max(rel):.3f}, {len(rel)} records)")


if __name__ == "__main__":
    main()
