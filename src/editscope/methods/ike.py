"""IKE (Zheng et al., 2023, "Can We Edit Factual Knowledge by In-Context Learning?").

The edit changes no weight: every prompt the model reads gets a context of ``k`` demonstrations
and the new fact prepended (an input intervention at the tokenization point)::

    <demo 1>...<demo k>New Fact: {edit prompt}{target}\\nPrompt: {the prompt}

Demonstrations come from a pool of edit records (CounterFact's by default), three per record in
the paper's three types, written as the reference writes them:

* copy: ``New Fact: {prompt}{target_new}\\nPrompt: {prompt}{target_new}\\n\\n``
* update: ``New Fact: {prompt}{target_new}\\nPrompt: {paraphrase}{target_new}\\n\\n``
* retain: ``New Fact: {prompt}{target_new}\\nPrompt: {neighbour prompt}{its own answer}\\n\\n``

and retrieved by cosine similarity of sentence embeddings (all-MiniLM-L6-v2) between each
demonstration and ``New Fact: {edit prompt}{target}\\nPrompt: {edit prompt}\\n\\n`` (EasyEdit's
retrieval, over all three types). Records whose prompt is an edited prompt are left out.

Choices and deviations, documented: the most similar demonstration is placed *last*, nearest to
the query (the original code's order; EasyEdit puts it first); the pool is ``pool_limit``
records from ``pool_offset`` on (EasyEdit uses its whole training split); several requests in one edit
are several ``New Fact:`` lines. IKE edits do not stack (no sequential protocol): a second IKE edit
on a model that has one is refused; edit the facts together in one batch instead. Perplexity on
corpus text is not conditioned on the context (it is not a prompt), so it equals the base's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from pydantic import Field

from ..embeddings import DEFAULT_ENCODER, embed
from ..errors import InputError
from ..interventions import InputIntervention, installed, put, register_intervention
from ..models.model import Model
from ..requests import EditRequest
from .base import EditMethod, HparamError, Hparams, register_method
from ..probes.datasets import load_counterfact, load_zsre

POOLS = ("counterfact", "zsre")


@register_intervention
class InContextEdit(InputIntervention):
    """``config["context"]`` (demonstrations and new facts) and ``config["query"]`` (the text
    between the context and the prompt) prepended to every prompt."""

    type_name = "ike"

    def transform(self, prompt: str) -> str:
        return self.config["context"] + self.config.get("query", "Prompt: ") + prompt


def fact(prompt: str, continuation: str) -> str:
    return f"{prompt}{continuation}"


@lru_cache(maxsize=4)
def demonstration_pool(pool: str, limit: int | None, offset: int = 0) -> tuple[tuple[str, str], ...]:
    """``((edited prompt, demonstration text), ...)``: the pool's copy/update/retain demonstrations."""
    loader = {"counterfact": load_counterfact, "zsre": load_zsre}.get(pool)
    try:
        cases = (loader(limit=limit, offset=offset) if loader is not None
                 else load_counterfact(pool, limit=limit, offset=offset))
    except InputError as e:
        raise HparamError(f"pool={pool!r}: the demonstration pool cannot be read: {e}") from None
    except OSError as e:
        raise HparamError(f"pool={pool!r}: the demonstration pool cannot be read ({e}); give 'counterfact', "
                          "'zsre' or a CounterFact-form file") from None
    out: list[tuple[str, str]] = []
    for case in cases:
        r = case.requests[0]
        head = f"New Fact: {fact(r.prompt, r.continuation)}\nPrompt: "
        out.append((r.prompt, head + fact(r.prompt, r.continuation) + "\n\n"))
        for p in case.probes:
            if p.category in ("paraphrase", "near"):
                out.append((r.prompt, head + fact(p.prompt, p.continuation) + "\n\n"))
    if not out:
        raise HparamError(f"pool={pool!r} holds no demonstrations (no records{' in the first ' + str(limit) if limit else ''}); "
                          "give a pool with edit records")
    return tuple(out)


class IKEHparams(Hparams):
    """How many demonstrations, from which pool, retrieved with which sentence encoder."""

    k: int = Field(16, ge=0, le=256, description="demonstrations retrieved per edit")
    pool: str = Field("counterfact", min_length=1,
                      description="'counterfact', 'zsre' (shared data) or a CounterFact-form file")
    pool_limit: int | None = Field(2000, ge=1, description="records of the pool used (None: all)")
    pool_offset: int = Field(0, ge=0, description="records of the pool skipped first (keep evaluated records out)")
    encoder: str = Field(DEFAULT_ENCODER, min_length=1, description="sentence-transformers encoder for retrieval")


@register_method
class IKE(EditMethod):
    name = "ike"
    family = "in-context"
    summary = "IKE: k retrieved copy/update/retain demonstrations and the new fact prepended to every prompt"
    Hparams = IKEHparams
    kind = "input"
    supports_sequential = False

    def check(self, model: Model, requests: Sequence[EditRequest], hp: IKEHparams) -> None:
        if any(isinstance(iv, InContextEdit) for iv in installed(model).values()):
            raise HparamError("ike edits do not stack: this model already has an IKE edit. Undo it, or edit the "
                              "facts together in one batch (one IKE edit with several requests)")
        if hp.k:
            demonstration_pool(hp.pool, hp.pool_limit, hp.pool_offset)  # a missing or empty pool fails here, before anything

    def run(self, model: Model, requests: Sequence[EditRequest], hp: IKEHparams) -> dict[str, Any]:
        facts = [fact(r.prompt, r.continuation) for r in requests]
        demos: list[str] = []
        if hp.k:
            pool = demonstration_pool(hp.pool, hp.pool_limit, hp.pool_offset)
            edited = {r.prompt.strip() for r in requests}
            usable = [text for prompt, text in pool if prompt.strip() not in edited]
            vecs = embed(usable, hp.encoder)
            queries = embed([f"New Fact: {f}\nPrompt: {r.prompt}\n\n" for f, r in zip(facts, requests)], hp.encoder)
            sims = (queries @ vecs.T).max(0).values
            top = sims.topk(min(hp.k, len(usable))).indices.tolist()
            demos = [usable[i] for i in reversed(top)]  # most similar last, nearest the query
        context = "".join(demos) + "".join(f"New Fact: {f}\n" for f in facts)
        put(model, f"{InContextEdit.type_name}@input", InContextEdit({"context": context, "query": "Prompt: ",
                                                                     "k": len(demos), "pool": hp.pool}))
        return {"demonstrations": len(demos), "context_chars": len(context)}


__all__ = ["IKE", "IKEHparams", "InContextEdit", "demonstration_pool"]
