"""``serac``: memory-based editing with a trained scope classifier (Mitchell et al., 2022;
:mod:`editscope.editors.serac`).

An edit adds its facts to the memory of an input intervention. Every prompt the model reads is
scored against the memory by the classifier; a prompt in scope of an edit (probability at least
``threshold``) is answered with that edit in context (``New Fact: {edit}\\nPrompt: {prompt}``), any
other prompt is read as it is, so the model outside the edits' scope is exactly the base model.
Edits stack (the memory grows; undo removes the last edit's facts). Train the classifier once with
``editscope train-editor serac``; an edit it was trained on is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from ..editors.serac import fact_text, load_classifier
from ..editors.store import EditorError, default_editor, read_editor, refuse_trained_on
from ..interventions import InputIntervention, installed, put, register_intervention
from ..models.model import Model
from ..requests import EditRequest
from .base import EditMethod, Hparams, register_method

QUERY = "Prompt: "


@lru_cache(maxsize=4096)
def _query_embedding(folder: str, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return load_classifier(folder).embed([prompt])[0]


@register_intervention
class SeracMemory(InputIntervention):
    """``config``: ``facts`` (edit texts), ``classifier`` (its folder), ``threshold``; tensors:
    ``keys`` ``[n_facts, d]``, the classifier's embeddings of the facts."""

    type_name = "serac"

    def scope(self, prompt: str) -> tuple[int | None, float]:
        """The fact whose scope ``prompt`` is in (None: none) and the classifier's probability."""
        keys = self.tensors()["keys"]
        if keys.shape[0] == 0:
            return None, 0.0
        folder = str(self.config["classifier"])
        with torch.no_grad():
            probs = torch.sigmoid(load_classifier(folder).logits(keys, _query_embedding(folder, prompt)[None]))[0]
        best = int(probs.argmax())
        p = float(probs[best])
        return (best if p >= float(self.config["threshold"]) else None), p

    def transform(self, prompt: str) -> str:
        which, _ = self.scope(prompt)
        if which is None:
            return prompt
        return f"New Fact: {self.config['facts'][which]}\n{QUERY}{prompt}"


class SERACHparams(Hparams):
    editor: str | None = Field(None, description="folder of a trained scope classifier; default: the one trained "
                                                 "with the default settings, else the only one trained")
    threshold: float | None = Field(None, gt=0, lt=1, description="in scope at this probability (default: the "
                                                                  "classifier's training setting, 0.5)")


@register_method
class SERAC(EditMethod):
    name = "serac"
    family = "memory (input intervention)"
    summary = ("edit memory + trained scope classifier: prompts in an edit's scope read the edit in context, all others "
               "are the base model's exactly (Mitchell et al., 2022)")
    Hparams = SERACHparams
    kind = "input"

    def _editor(self, model: Model, hp: Any) -> tuple[Path, dict[str, Any]]:
        return read_editor(hp.editor if hp.editor is not None else default_editor(model, "serac"), "serac")

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        refuse_trained_on(*self._editor(model, hp), list(requests))

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        folder, manifest = self._editor(model, hp)
        spec = manifest["spec"]
        threshold = hp.threshold if hp.threshold is not None else float(spec["threshold"])
        before = next((iv for iv in installed(model).values() if isinstance(iv, SeracMemory)), None)
        if before is not None and before.config["classifier"] != str(folder):
            raise EditorError(f"this model's SERAC memory uses the classifier at {before.config['classifier']}; "
                              f"edit with the same one (editor={before.config['classifier']!r}) or undo it first")
        facts = list(before.config["facts"]) if before is not None else []
        new = [fact_text(r.prompt, r.continuation) for r in requests]
        with torch.no_grad():
            keys = load_classifier(str(folder)).embed(new)
        if before is not None:
            keys = torch.cat([before.tensors()["keys"], keys])
        put(model, f"{SeracMemory.type_name}@input",
            SeracMemory({"facts": facts + new, "classifier": str(folder), "threshold": threshold}, {"keys": keys}))
        return {"memory": len(facts) + len(new), "classifier": str(folder)}


__all__ = ["SERAC", "SERACHparams", "SeracMemory"]
