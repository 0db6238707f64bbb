"""``mend``: edit with a trained MEND editor (Mitchell et al., 2022; :mod:`editscope.editors`).

The editor is trained once per model (``editscope train-editor mend --model NAME``) and cached; the
edit is then one forward and backward pass on the request and the editor's weight update
``W <- W - alpha G~`` on the last blocks' MLP weights. An editor trained for other base weights is
refused (fingerprint), and so is an edit the editor was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from ..models.model import Model
from ..editors.mend import apply_mend
from ..editors.store import load_editor
from ..requests import EditRequest
from .base import EditMethod, Hparams, register_method


class MENDHparams(Hparams):
    editor: str | None = Field(None, description="folder of a trained editor; default: the one trained with the "
                                                 "default settings for this model, else the only one trained for it "
                                                 "(editscope train-editor mend)")


@register_method
class MEND(EditMethod):
    name = "mend"
    family = "trained editor"
    summary = ("a trained hypernetwork maps the edit's rank-one gradient factors of the last blocks' MLP weights to "
               "a weight update (Mitchell et al., 2022)")
    Hparams = MENDHparams

    def _loaded(self, model: Model, hp: Any):
        key = ("mend_editor", str(hp.editor), model.base_fingerprint)
        memo = model.state.memo
        if key not in memo:
            memo[key] = load_editor(model, hp.editor)
        return memo[key]

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        self._loaded(model, hp).check(list(requests))

    def touched(self, model: Model, hp: Any) -> list[str]:
        return list(self._loaded(model, hp).editor.names)

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        loaded = self._loaded(model, hp)
        return {"update_norms": apply_mend(model, loaded.editor, requests), "editor": str(loaded.folder)}


__all__ = ["MEND", "MENDHparams"]
