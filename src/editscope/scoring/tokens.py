"""Tokenising: the only place that tokenizes prompt + continuation pairs (docs/architecture.md
"Tokenization rule"). ``prompt + continuation`` is tokenized as one string; the continuation's tokens
are those that start at or after the end of the prompt with its trailing whitespace removed (so that
whitespace moves into the continuation). If a token straddles that boundary, the pair falls back to
tokenizing the stripped prompt and the rest separately (``EncodedPair.exact`` is then False). Prompts
for generation and next-token distributions are right-stripped the same way, so every function sees
the same prompt tokens. An installed input intervention (IKE's context) rewrites prompts here, at the
single tokenising point (docs/architecture.md "The path of an edit")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


from ..interventions import transform_prompt
from ..models.model import Model


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one prompt/continuation pair; ``exact`` is False for the straddle fallback."""

    prompt_ids: tuple[int, ...]
    cont_ids: tuple[int, ...]
    exact: bool = True


def check_text(value, field: str, i: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field}[{i}] must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{field}[{i}] is empty; every {field} needs non-blank text")
    return value


def check_length(model: Model, n: int, field: str, i: int) -> None:
    limit = model.max_length
    if limit is not None and n > limit:
        raise ValueError(
            f"{field}[{i}] is {n} tokens long; the model's context is {limit} tokens. "
            f"Shorten the {field} (or use a model with a longer context)."
        )


def _strip_trailing_specials(ids: list[int], special: list[int]) -> list[int]:
    end = len(ids)
    while end > 1 and special[end - 1]:
        end -= 1
    return ids[:end]


def encode_prompts(model: Model, prompts: Sequence[str], field: str = "prompt") -> list[list[int]]:
    """Token ids of each right-stripped prompt (with the tokenizer's usual leading specials), as
    the model reads it (installed input interventions applied)."""
    texts = [transform_prompt(model, check_text(p, field, i)) for i, p in enumerate(prompts)]
    return tokenize_prompts(model, texts, field)


def tokenize_prompts(model: Model, texts: Sequence[str], field: str = "prompt") -> list[list[int]]:
    """:func:`encode_prompts` of texts that are already transformed (no intervention applied again)."""
    texts = [t.rstrip() for t in texts]
    enc = model.tokenizer(texts, add_special_tokens=True, return_special_tokens_mask=True)
    out = []
    for i, (ids, sp) in enumerate(zip(enc["input_ids"], enc["special_tokens_mask"])):
        ids = _strip_trailing_specials(list(ids), list(sp))
        check_length(model, len(ids), field, i)
        out.append(ids)
    return out


def encode_pairs(model: Model, prompts: Sequence[str], continuations: Sequence[str]) -> list[EncodedPair]:
    """Tokenize prompt/continuation pairs by the module's rule (one string, split by offsets)."""
    if len(prompts) != len(continuations):
        raise ValueError(f"got {len(prompts)} prompts but {len(continuations)} continuations")
    for i, c in enumerate(continuations):
        if not isinstance(c, str) or not c:
            raise ValueError(f"continuation[{i}] is empty; every continuation needs text")
    # The one tokenization point: installed input interventions (e.g. IKE's demonstrations) apply here.
    prompts = [transform_prompt(model, check_text(p, "prompt", i)) for i, p in enumerate(prompts)]
    stripped = [p.rstrip() for p in prompts]
    fulls = [p + c for p, c in zip(prompts, continuations)]
    tok = model.tokenizer
    enc = tok(fulls, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    out: list[EncodedPair] = []
    fallback: list[int] = []
    for i, (ids, offs, sp) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"])):
        p_end = len(stripped[i])
        k = next((j for j in range(len(ids)) if not sp[j] and offs[j][0] >= p_end), len(ids))
        straddles = any(not sp[j] and offs[j][1] > p_end for j in range(k))
        cont = [t for t, s in zip(ids[k:], sp[k:]) if not s]
        if straddles or not cont or k == 0:
            fallback.append(i)
            out.append(EncodedPair((), ()))
            continue
        out.append(EncodedPair(tuple(ids[:k]), tuple(cont)))
    if fallback:
        p_ids = tokenize_prompts(model, [prompts[i] for i in fallback])  # prompts: transformed above
        rests = [fulls[i][len(stripped[i]):] for i in fallback]
        c_ids = tok(rests, add_special_tokens=False)["input_ids"]
        for i, pi, ci in zip(fallback, p_ids, c_ids):
            if not ci:
                raise ValueError(f"continuation[{i}] {continuations[i]!r} produced no tokens")
            out[i] = EncodedPair(tuple(pi), tuple(ci), exact=False)
    for i, pair in enumerate(out):
        check_length(model, len(pair.prompt_ids) + len(pair.cont_ids), "prompt", i)
    return out


def token_index_at(model: Model, texts: Sequence[str], char_pos: Sequence[int]) -> list[int]:
    """Index of the token covering character ``char_pos[i]`` of ``texts[i]``, in the ids
    :func:`encode_prompts` gives (tokenizer specials included). Raises ValueError naming the text
    when no token covers it (e.g. the position is whitespace merged away)."""
    enc = model.tokenizer([t.rstrip() for t in texts], add_special_tokens=True, return_offsets_mapping=True,
                          return_special_tokens_mask=True)
    out = []
    for i, (offs, sp) in enumerate(zip(enc["offset_mapping"], enc["special_tokens_mask"])):
        hit = [j for j, (a, b) in enumerate(offs) if not sp[j] and a <= char_pos[i] < b]
        if not hit:
            raise ValueError(f"no token of {texts[i]!r} covers character {char_pos[i]}; "
                             "the subject cannot be located in the tokenized prompt")
        out.append(hit[-1])
    return out
