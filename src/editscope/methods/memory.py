"""What the memory-based editors (GRACE, WISE) share: one block's MLP output as their site, and its
default depth."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..interventions import Intervention, installed

from ..models.arch import ArchSpec
from ..models.model import Model
from ..requests import EditRequest
from .base import EditMethod, HparamError, Hparams

#: the ArchSpec role whose output a memory intervention rewrites
ROLE = "mlp_out"
I = TypeVar("I", bound=Intervention)


def late_layer(n_layers: int) -> int:
    """The reference's block for memory-based editors: 27 of 32 (about 87% depth)."""
    return max(0, min(n_layers - 1, round(0.87 * (n_layers - 1))))


class MemoryMethod(EditMethod):
    """A module intervention at ``hp.layer``'s MLP output (subclasses add the algorithm)."""

    family = "memory"
    kind = "module"

    @classmethod
    def arch_defaults(cls, arch: ArchSpec, n_layers: int) -> dict[str, Any]:
        return {"layer": late_layer(n_layers)}

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Hparams) -> None:
        layer = getattr(hp, "layer")
        if not 0 <= layer < model.n_layers:
            raise HparamError(f"layer={layer} is outside the model; {model.name} has layers 0..{model.n_layers - 1}")

    @staticmethod
    def site(model: Model, type_name: str, layer: int) -> str:
        """The intervention site of ``type_name`` at ``layer``'s MLP output."""
        return f"{type_name}@{model.arch.name(ROLE, layer)}"

    def working_copy(self, model: Model, kind: type[I], layer: int, fresh: Callable[[], I]) -> tuple[str, I]:
        """``(site, memory)``: a copy of the ``kind`` memory installed at ``layer`` (sequential edits
        grow it) or ``fresh()``; the edit changes the copy and puts it on the model."""
        site = self.site(model, kind.type_name, layer)
        live = installed(model).get(site)
        mem = live.copy() if live is not None else fresh()
        if not isinstance(mem, kind):
            raise TypeError(f"{site} holds a {type(mem).__name__}, not a {kind.__name__}")
        return site, mem
