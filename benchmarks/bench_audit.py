"""The full audit of one edit on the default model, timed cold (base outputs not cached) and warm.

    python benchmarks/bench_audit.py                     # arithmetic 0..99 (+,-,*) + facts + ME-PPL_1k
    python benchmarks/bench_audit.py --n 20 --dtype bf16

The edit is a synthetic rank-one update of one block's MLP down-projection (the shape of a ROME edit;
the audit's cost does not depend on which method produced it). Cold: the base model's outputs are
computed (and the hidden states entering the edited block kept); warm: the edited model is audited
against the cached base, running only the blocks at and above the edited one (incremental evaluation,
for the probes and the perplexity corpus alike), and once more with full passes for comparison. Prints probes/s and the warm/cold ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

import editscope as es
from editscope.metrics import load_corpus, perplexity


def rank_one_edit(model: es.Model, layer: int, scale: float = 0.05, seed: int = 0) -> None:
    """W += scale * ||W|| * u v^T with random unit u, v, at ``layer``'s MLP down-projection."""
    g = torch.Generator().manual_seed(seed)
    w = model.arch.weight_out_in(model.module("mlp_out", layer))
    u = torch.randn(w.shape[0], generator=g)
    v = torch.randn(w.shape[1], generator=g)
    with torch.no_grad():
        w.add_((scale * w.norm() * torch.outer(u / u.norm(), v / v.norm())).to(w.dtype))


def audit(model, probes, corpus, **kw):
    t = time.perf_counter()
    result = es.evaluate(model, probes, **kw)
    t_probes = time.perf_counter() - t
    ppl = perplexity(model, corpus, keep_hidden=kw.get("keep_hidden"))
    return result, ppl, t_probes, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=99, help="arithmetic operands 0..n")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--layer", type=int, default=17, help="block the synthetic edit changes")
    ap.add_argument("--corpus", default="me_ppl_1k")
    ap.add_argument("--skip-full", action="store_true", help="skip the warm full-pass comparison")
    ap.add_argument("--agreement-sample", type=int, default=500,
                    help="with a non-fp32 dtype: probes on which to compare greedy outputs with fp32")
    args = ap.parse_args()
    model = es.load_model("smollm2-135m", dtype=args.dtype)
    reference = es.load_model("smollm2-135m") if model.dtype != torch.float32 else None
    # Cold means cold: base outputs go to a fresh cache (set after the model itself was loaded).
    os.environ["EDITSCOPE_CACHE"] = tempfile.mkdtemp(prefix="editscope-audit-")
    edit = es.EditRequest("2+2=", "5")
    probes = es.suites.arithmetic(edit, n=args.n) + es.suites.facts()
    corpus = load_corpus(args.corpus)
    print(f"{model.name} {model.dtype}, {torch.get_num_threads()} threads; {len(probes)} probes "
          f"{probes.counts()}; perplexity on {args.corpus} ({len(corpus)} texts)")

    base, base_ppl, tp_cold, t_cold = audit(model, probes, corpus, keep_hidden=args.layer)
    rank_one_edit(model, args.layer)
    edited, ppl, tp_warm, t_warm = audit(model, probes, corpus)
    assert edited.resumed_from == args.layer, edited.resumed_from
    print(f"\n{'audit':34s} {'probes s':>9s} {'total s':>8s} {'probes/s':>9s}")
    print(f"{'cold (base outputs computed)':34s} {tp_cold:9.1f} {t_cold:8.1f} {len(probes) / tp_cold:9.1f}")
    print(f"{'warm (cached base, incremental)':34s} {tp_warm:9.1f} {t_warm:8.1f} {len(probes) / tp_warm:9.1f}")
    if not args.skip_full:
        t = time.perf_counter()
        full = es.evaluate(model, probes, incremental=False)
        tp_full = time.perf_counter() - t
        same = all(a == b for a, b in zip(full.rows, edited.rows))
        print(f"{'warm, full passes (no reuse)':34s} {tp_full:9.1f} {'':8s} {len(probes) / tp_full:9.1f}"
              f"   rows identical to incremental: {same}")
    print(f"warm/cold ratio (total): {t_warm / t_cold:.2f}")

    if reference is not None:
        import random

        from editscope.stats import wilson_interval

        idx = sorted(random.Random(0).sample(range(len(probes)), min(args.agreement_sample, len(probes))))
        sample = es.ProbeSet([probes[i] for i in idx], name="agreement-sample")
        ref = es.evaluate(reference, sample, use_cache=False)
        same = sum(r["base_greedy"] == base.rows[i]["base_greedy"] for r, i in zip(ref.rows, idx))
        top1 = sum(r["top1"] == base.rows[i]["top1"] for r, i in zip(ref.rows, idx))
        a, b = wilson_interval(same, len(idx)), wilson_interval(top1, len(idx))
        print(f"{model.dtype} vs fp32 on {len(idx)} sampled probes (base model): identical greedy "
              f"continuation {a.value:.3f} [{a.low:.3f}, {a.high:.3f}], same top-1 verdict "
              f"{b.value:.3f} [{b.low:.3f}, {b.high:.3f}]")

    s = edited.summary(["unchanged", "kl", "says_target", "top1"])
    print(f"\nedited model (rank-one at block {args.layer}): perplexity {base_ppl.ppl:.2f} -> {ppl.ppl:.2f}")
    for cat in ("target", "paraphrase", "near", "far", "general"):
        if cat in s:
            cells = "  ".join(f"{m} {c['value']:.3f} [{c['low']:.3f},{c['high']:.3f}]" for m, c in s[cat].items())
            print(f"  {cat:10s} n={s[cat]['unchanged']['n']:6d}  {cells}")


if __name__ == "__main__":
    main()
