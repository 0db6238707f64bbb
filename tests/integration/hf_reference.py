"""What HF's own model gives, one unpadded prompt at a time: the reference that editscope's batched
scoring and greedy decoding are checked against on the real models."""

import torch

import editscope as es
from editscope.scoring import encode_pairs, encode_prompts


def hf_token_logprobs(model: es.Model, prompt: str, continuation: str) -> tuple[list[float], bool]:
    """Per continuation token log P (nats) from one full HF forward, and whether every continuation
    token is the argmax at its position (teacher-forced greedy match)."""
    pair = encode_pairs(model, [prompt], [continuation])[0]
    with torch.no_grad():
        logits = model.hf(torch.tensor([pair.prompt_ids + pair.cont_ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    n = len(pair.prompt_ids)
    cols = [n - 1 + j for j in range(len(pair.cont_ids))]
    return ([float(logp[c, t]) for c, t in zip(cols, pair.cont_ids)],
            all(int(logits[c].argmax()) == t for c, t in zip(cols, pair.cont_ids)))


def hf_greedy(model: es.Model, prompt: str, new_tokens: int) -> list[int]:
    """``new_tokens`` greedy token ids from HF ``generate`` (no early stop at EOS)."""
    ids = encode_prompts(model, [prompt])[0]
    with torch.no_grad():
        out = model.hf.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                                pad_token_id=model.tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()


def assert_scoring_matches_hf(model: es.Model, pairs: list[tuple[str, str]], *, batch_size: int, side: str,
                              abs_tol: float) -> None:
    """editscope's batched scores of ``pairs`` equal HF's one-at-a-time forward: per-token log-probs
    within ``abs_tol`` nats and the same teacher-forced greedy match."""
    import pytest

    prompts, conts = zip(*pairs)
    batched = es.score_continuations(model, prompts, conts, batch_size=batch_size, padding_side=side)
    for (p, c), b in zip(pairs, batched):
        ref, greedy = hf_token_logprobs(model, p, c)
        assert b.token_logprobs == pytest.approx(ref, abs=abs_tol) and b.greedy_match == greedy


def assert_greedy_matches_generate(model: es.Model, prompts: list[str], new_tokens: int, *, batch_size: int) -> None:
    """editscope's batched greedy decoding gives the tokens HF ``generate`` gives one prompt at a time."""
    gens = es.greedy_continuations(model, prompts, new_tokens, batch_size=batch_size, stop_at_eos=False)
    for p, g in zip(prompts, gens):
        assert list(g.token_ids) == hf_greedy(model, p, new_tokens)
