"""ROME / MEMIT / AlphaEdit (and GRACE, WISE, IKE) on the default model: key statistics cost, their
token-count sensitivity, and edit quality on CounterFact (probability scores as ROME), single-edit
and sequential.

    python benchmarks/bench_locate.py --n 200            # the issue's protocol (long on 2 CPU cores)
    python benchmarks/bench_locate.py --n 30 --methods rome
    python benchmarks/bench_locate.py --n 25 --methods rome --skip-stats --hparam v_lr=1.0
    python benchmarks/bench_locate.py --n 25 --skip-stats --methods grace wise ike
    python benchmarks/bench_locate.py --n 100 --skip-stats --sequential --methods grace wise alphaedit

``--sequential``: the n edits are applied one after another without undo (methods whose edits do not
stack are skipped), then every record is scored on the final model: retention of the early edits
after the later ones, and what n edits together did to the neighbourhood. IKE's demonstration pool
is moved past the evaluated records (``pool_offset``) so that no evaluated record is in it.

1. Key statistics at ROME's default layer over 10k / 30k / 100k tokens (computed cold, not from the
   cache): seconds, and how much ROME's solved update for the first CounterFact edit changes
   relative to the 100k-token one (``||dW(n) - dW(100k)|| / ||dW(100k)||``).
2. For each of the first n CounterFact records (../shared/data/counterfact, MEND form): apply the edit
   with the method's defaults, score efficacy (P(new) > P(true) on the edit prompt: ES), paraphrase
   (same on its paraphrase: PS) and neighbourhood (P(true) > P(new) on a neighbour: NS), undo.
   Prints each with its 95% Wilson interval, NS relative to the base model's own NS, and the median
   edit latency. A record whose edit the guard rolled back counts as a failure on ES and PS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import editscope as es
from editscope.covariance import key_statistics
from editscope.methods.locate import ROMEHparams, _default_layer, context_templates, keys, rome_update, target_residuals
from editscope.probes.datasets import load_counterfact
from editscope.stats import wilson_interval


def prob_scores(model: es.Model, case) -> dict[str, list[bool]]:
    """Per category: P(new) > P(true) (target, paraphrase) or P(true) > P(new) (near), per probe."""
    prompts, conts, keys_ = [], [], []
    for p in case.probes:
        new, true = (p.target, p.meta["target_true"]) if p.category != "near" else (p.meta["target_new"], p.target)
        for t in (new, true):
            prompts.append(p.prompt)
            conts.append(es.requests.resolve_sep(p.prompt, t, p.sep) + t)
        keys_.append(p.category)
    s = es.score_continuations(model, prompts, conts)
    out: dict[str, list[bool]] = {}
    for i, cat in enumerate(keys_):
        new_lp, true_lp = s[2 * i].logprob, s[2 * i + 1].logprob
        out.setdefault(cat, []).append(new_lp > true_lp if cat != "near" else true_lp > new_lp)
    return out


def cell(xs: list[bool]) -> str:
    iv = wilson_interval(sum(xs), len(xs))
    return f"{sum(xs) / len(xs):.3f} [{iv.low:.3f}, {iv.high:.3f}]"


def stats_sensitivity(model: es.Model, req: es.EditRequest) -> None:
    layer = _default_layer(model.arch, model.n_layers)
    hp = ROMEHparams(layer=layer)
    templates = context_templates(model, hp.n_contexts, hp.context_len, hp.seed)
    k = keys(model, layer, [req], templates, hp.fact_token)[0]
    delta, _ = target_residuals(model, layer, [req], templates, hp)
    w = model.arch.weight_out_in(model.module("mlp_out", layer))
    updates, times = {}, {}
    for n in (10_000, 30_000, 100_000):
        t = time.perf_counter()
        c = key_statistics(model, layer, n_tokens=n, use_cache=False).second_moment
        times[n] = time.perf_counter() - t
        updates[n] = rome_update(w, c, k, delta[0])[0]
    ref = updates[100_000]
    print(f"key statistics at layer {layer} (d_ff {ref.shape[1]}), corpus wikitext2+me_ppl, computed cold:")
    for n in updates:
        rel = float((updates[n] - ref).norm() / ref.norm())
        print(f"  {n:>7,d} tokens: {times[n]:6.1f} s   ROME update vs 100k tokens: relative difference {rel:.3f}")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--methods", nargs="*", default=["rome", "memit", "alphaedit"])
    ap.add_argument("--skip-stats", action="store_true", help="skip the statistics timing/sensitivity part")
    ap.add_argument("--layer-sweep", type=int, nargs="*", default=None,
                    help="instead: ROME at these layers on the first --n records (how the default layer was chosen)")
    ap.add_argument("--sequential", action="store_true", help="apply the n edits one after another, score at the end")
    ap.add_argument("--hparam", action="append", default=[], metavar="K=V",
                    help="override a hyperparameter of every method (JSON value), e.g. --hparam v_lr=1.0")
    ap.add_argument("--model", default="smollm2-135m", help="built-in name, .gguf path, folder or hub id")
    args = ap.parse_args()
    overrides = {k: json.loads(v) for k, v in (h.split("=", 1) for h in args.hparam)}
    model = es.load_model(args.model)
    cases = load_counterfact(limit=args.n)
    print(f"{model.name} {model.dtype}, {torch.get_num_threads()} threads; {cases.report.summary()}\n")
    if args.layer_sweep:
        base_sweep: dict[str, list[bool]] = {}
        for case in cases:
            for cat, v in prob_scores(model, case).items():
                base_sweep.setdefault(cat, []).extend(v)
        print(f"base model: ES {cell(base_sweep['target'])}  PS {cell(base_sweep['paraphrase'])}  "
              f"NS {cell(base_sweep['near'])}\n")
        print(f"{'ROME layer':10s} {'ES':>24s} {'PS':>24s} {'NS':>24s} {'median s':>9s}")
        for layer in args.layer_sweep:
            got: dict[str, list[bool]] = {}
            times = []
            for case in cases:
                t = time.perf_counter()
                h = es.apply_edit(model, case.requests, "rome", layer=layer)
                times.append(time.perf_counter() - t)
                for cat, v in prob_scores(model, case).items():
                    got.setdefault(cat, []).extend(v)
                h.undo()
            print(f"{layer:10d} {cell(got['target']):>24s} {cell(got['paraphrase']):>24s} {cell(got['near']):>24s} "
                  f"{statistics.median(times):9.2f}")
        return
    if not args.skip_stats:
        stats_sensitivity(model, cases[0].requests[0])
    fp = model.fingerprint()
    base: dict[str, list[bool]] = {}
    for case in cases:
        for cat, v in prob_scores(model, case).items():
            base.setdefault(cat, []).append(v[0])
    print(f"base model: ES {cell(base['target'])}  PS {cell(base['paraphrase'])}  NS {cell(base['near'])}\n")
    print(f"{'method':10s} {'ES (efficacy)':>24s} {'PS (paraphrase)':>24s} {'NS (neighbourhood)':>24s} "
          f"{'NS/base':>8s} {'median s':>9s} {'failed':>7s}")
    for name in args.methods:
        hp = {**overrides, **({"pool_offset": args.n} if name == "ike" else {})}
        if args.sequential and not type(es.methods.get_method(name)).supports_sequential:
            print(f"{name:10s} (edits do not stack: no sequential protocol)")
            continue
        got: dict[str, list[bool]] = {"target": [], "paraphrase": [], "near": []}
        times, failed, handles, ok = [], 0, [], []
        for case in cases:
            t = time.perf_counter()
            try:
                h = es.apply_edit(model, case.requests, name, **hp)
            except es.EditFailed:
                failed += 1
                times.append(time.perf_counter() - t)
                ok.append(False)
                continue
            times.append(time.perf_counter() - t)
            ok.append(True)
            if args.sequential:
                handles.append(h)
                continue
            for cat, v in prob_scores(model, case).items():
                got[cat] += v
            h.undo()
        if args.sequential:  # every record on the final model; a rolled-back edit still fails ES and PS
            for case, applied in zip(cases, ok):
                for cat, v in prob_scores(model, case).items():
                    got[cat] += v if applied or cat == "near" else [False] * len(v)
            for h in reversed(handles):
                h.undo()
        else:
            got["target"] += [False] * failed
            got["paraphrase"] += [False] * failed
        assert model.state_key() == fp
        ns_ratio = (sum(got["near"]) / len(got["near"])) / (sum(base["near"]) / len(base["near"]))
        if overrides:
            name = f"{name} {overrides}"
        print(f"{name:10s} {cell(got['target']):>24s} {cell(got['paraphrase']):>24s} {cell(got['near']):>24s} "
              f"{ns_ratio:8.3f} {statistics.median(times):9.2f} {failed:7d}")


if __name__ == "__main__":
    main()
