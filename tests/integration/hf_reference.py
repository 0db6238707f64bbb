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
