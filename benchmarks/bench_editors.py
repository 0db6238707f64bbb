"""Trained editors against their goals (issue "the field's other editors"): training time on this CPU
(goal <= 2 h each for the default model), the editor's size, its last training losses, and what it
does on held-out records it never saw (the leaderboard's CounterFact records 0..N-1): edit success
(the generated answer is the new target) and, for MEND, the seconds per edit.

    python benchmarks/bench_editors.py                           # MEND and SERAC for smollm2-135m
    python benchmarks/bench_editors.py --kinds serac --steps 200 --n 20

Trains each editor with the given settings (or finds it cached: the time printed is the one recorded
when it was trained) and evaluates it in this one run.
"""

from __future__ import annotations

import argparse
import json
import time

import editscope as es
from editscope.editors.store import SPECS, train_editor
from editscope.probes.datasets import load_counterfact
from editscope.scoring import greedy_continuations


def success(model, reqs) -> float:
    gens = greedy_continuations(model, [r.prompt for r in reqs], max_new_tokens=8)
    return sum(g.text.strip().startswith(r.target_new) for g, r in zip(gens, reqs)) / len(reqs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--kinds", nargs="+", default=["mend", "serac"], choices=sorted(SPECS))
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps (default: each editor's)")
    ap.add_argument("--n", type=int, default=50, help="held-out CounterFact records edited after training")
    args = ap.parse_args()
    model = es.load_model(args.model)
    reqs = [c.requests[0] for c in load_counterfact(limit=args.n)]
    base = success(model, reqs)
    print(f"{args.model}: base model already gives the new target on {base:.2f} of {len(reqs)} held-out records")
    for kind in args.kinds:
        spec = SPECS[kind](model=args.model, **({"steps": args.steps} if args.steps else {}))
        t = time.perf_counter()
        folder = train_editor(spec, model=model if spec.needs_model else None)
        waited = time.perf_counter() - t
        m = json.loads((folder / "manifest.json").read_text())
        goal = "met" if m["train_seconds"] <= 7200 else "NOT met"
        print(f"{kind}: trained {m['spec']['steps']} steps on {m['train_records']} records in {m['train_seconds']:.0f} s "
              f"(this call {waited:.0f} s; goal <= 7200 s: {goal}); {m['editor_parameters']:,} parameters, "
              f"{m['editor_bytes'] / 2**20:.1f} MiB; last losses {dict(zip(m['loss_columns'], m['losses'][-1]))}")
        made, seconds, hits = 0, [], 0
        for r in reqs:
            try:
                t = time.perf_counter()
                h = es.apply_edit(model, [r], kind, editor=str(folder))
                seconds.append(time.perf_counter() - t)
            except es.EditFailed:
                continue
            made += 1
            hits += success(model, [r]) == 1.0
            h.undo()
        per = sum(seconds) / len(seconds) if seconds else float("nan")
        print(f"{kind}: {made}/{len(reqs)} edits passed the guard; generated answer = new target on {hits}/{len(reqs)}; "
              f"{per:.2f} s per edit")


if __name__ == "__main__":
    main()
