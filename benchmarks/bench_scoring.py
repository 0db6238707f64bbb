"""Scoring throughput on the default model (or ``--model``): the naive per-prompt way vs editscope, against this
machine's measured matmul ceiling, all in one run (machines are noisy: compare ratios).

    python benchmarks/bench_scoring.py            # 1,000 pairs, fp32 and bf16
    python benchmarks/bench_scoring.py --n 200    # quicker
    python benchmarks/bench_scoring.py --model gemma3-270m   # the second built-in (262k vocabulary)

Pairs: half CounterFact prompts with their new targets, half "a+b=" sums (from ../shared/data).
"Naive" is what typical research scripts do: one unpadded forward per pair with full-vocabulary
logits at every position (logprob + teacher-forced top-1), and one ``model.generate`` per prompt
for greedy answers. editscope computes the same quantities batched.
FLOPs counted per real token: 2 x non-embedding parameters + attention (4 x layers x context x
heads x head width), plus 2 x vocab x width at every position whose logits are computed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

import editscope as es
from editscope.data.fetch import data_path
from editscope.scoring import encode_pairs, encode_prompts, plan_batches


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Best observed GFLOP/s of an n x n x n matmul in ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def make_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    records = json.loads(data_path("counterfact", "counterfact-edit.json").read_text())
    cf = rng.sample(records, n // 2)
    prompts = [r["prompt"] for r in cf]
    conts = [" " + r["target_new"] for r in cf]
    for _ in range(n - len(prompts)):
        a, b = rng.randrange(100), rng.randrange(100)
        prompts.append(f"{a}+{b}=")
        conts.append(str(a + b))
    order = list(range(n))
    rng.shuffle(order)
    return [prompts[i] for i in order], [conts[i] for i in order]


def flops(model: es.Model, seq_lens: list[int], logit_positions: int) -> float:
    cfg = model.config
    d, L, V = cfg.hidden_size, model.n_layers, cfg.vocab_size
    attn = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads)
    non_embed = sum(p.numel() for n, p in model.hf.named_parameters() if "embed" not in n and "lm_head" not in n)
    total = 0.0
    for s in seq_lens:
        total += 2 * non_embed * s + 4 * L * attn * s * (s + 1) / 2  # causal: token t attends to t+1 keys
    return total + 2 * V * d * logit_positions


def naive_forward(model: es.Model, prompts, conts) -> list[float]:
    out = []
    with torch.inference_mode():
        for p, c in zip(prompts, conts):
            pair = encode_pairs(model, [p], [c])[0]
            ids = torch.tensor([pair.prompt_ids + pair.cont_ids])
            logp = torch.log_softmax(model.hf(ids).logits.float(), -1)[0]
            n = len(pair.prompt_ids)
            out.append(sum(float(logp[n - 1 + j, t]) for j, t in enumerate(pair.cont_ids)))
    return out


def naive_generate(model: es.Model, prompts, new_tokens: int) -> list[list[int]]:
    out = []
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([encode_prompts(model, [p])[0]])
            g = model.hf.generate(ids, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                                  pad_token_id=model.tokenizer.pad_token_id)
            out.append(g[0, ids.shape[1]:].tolist())
    return out


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    r = fn(*args, **kwargs)
    return r, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="prompt/continuation pairs")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256], help="max rows per batch")
    ap.add_argument("--max-tokens", type=int, default=2048, help="max padded tokens per batch")
    ap.add_argument("--gen-n", type=int, default=200, help="prompts for the greedy-generation comparison")
    ap.add_argument("--new-tokens", type=int, default=4)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--model", default="smollm2-135m", help="built-in name, .gguf path, folder or hub id")
    args = ap.parse_args()

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    ceil = {torch.float32: matmul_ceiling(torch.float32)}
    if not args.no_bf16:
        ceil[torch.bfloat16] = matmul_ceiling(torch.bfloat16)
    for dt, g in ceil.items():
        print(f"matmul ceiling {str(dt):15s} {g:7.1f} GFLOP/s (2048^3, best of 5)")

    model = es.load_model(args.model)
    prompts, conts = make_pairs(args.n)
    pairs = encode_pairs(model, prompts, conts)
    lens = [len(p.prompt_ids) + len(p.cont_ids) for p in pairs]
    n_tok, n_cont = sum(lens), sum(len(p.cont_ids) for p in pairs)
    print(f"{args.n} pairs, {n_tok} tokens ({statistics.mean(lens):.1f}/pair), {n_cont} continuation tokens")

    es.score_continuations(model, prompts[:64], conts[:64])  # warm-up
    ref, t_naive = timed(naive_forward, model, prompts, conts)
    naive_tps = n_tok / t_naive
    f_naive = flops(model, lens, n_tok)
    rows = [("naive: 1 forward/pair, fp32", t_naive, naive_tps, f_naive / t_naive / 1e9, ceil[torch.float32], 1.0)]

    bf16 = None if args.no_bf16 else es.load_model(args.model, dtype="bfloat16")
    agreement = {}
    f_es = flops(model, lens, n_cont)
    for dtype_name, m in (("fp32", model), ("bf16", bf16)):
        if m is None:
            continue
        for bs in args.batch_sizes:
            scores, t = timed(es.score_continuations, m, prompts, conts, batch_size=bs, max_tokens=args.max_tokens)
            n_batches = len(plan_batches(lens, bs, args.max_tokens))
            rows.append((f"editscope <={bs} rows ({args.n / n_batches:.0f} avg), {dtype_name}", t, n_tok / t, f_es / t / 1e9,
                         ceil[m.dtype], n_tok / t / naive_tps))
            if dtype_name == "fp32":
                err = max(abs(s.logprob - r) for s, r in zip(scores, ref))
                assert err < 1e-3, f"editscope disagrees with the naive forward by {err}"
            else:
                base = es.score_continuations(model, prompts, conts, batch_size=bs, max_tokens=args.max_tokens)
                agreement[bs] = statistics.mean(
                    float(a.argmax_ids == b.argmax_ids) for a, b in zip(scores, base))

    print(f"\n{'scoring (logprob + top-1 of every pair)':42s} {'time s':>7s} {'tok/s':>8s} {'GFLOP/s':>8s} "
          f"{'% ceil':>7s} {'speedup':>8s}")
    for name, t, tps, gf, c, sp in rows:
        print(f"{name:42s} {t:7.2f} {tps:8.0f} {gf:8.1f} {100 * gf / c:6.1f}% {sp:7.1f}x")
    for bs, a in agreement.items():
        print(f"bf16 vs fp32 teacher-forced top-1 agreement (batch {bs}): {100 * a:.1f}% of pairs")

    gp = prompts[: args.gen_n]
    ng, t_ng = timed(naive_generate, model, gp, args.new_tokens)
    eg, t_eg = timed(es.greedy_continuations, model, gp, args.new_tokens, stop_at_eos=False)
    same = statistics.mean(float(list(e.token_ids) == n) for e, n in zip(eg, ng))
    print(f"\ngreedy {args.new_tokens} tokens for {len(gp)} prompts: naive generate() {t_ng:.2f} s, "
          f"editscope batched {t_eg:.2f} s -> {t_ng / t_eg:.1f}x; identical outputs {100 * same:.1f}%")


if __name__ == "__main__":
    main()
