"""Edits that are not weight deltas: interventions installed on a model.

Two kinds (see docs/architecture.md "The path of an edit"):

* **module intervention** (:class:`ModuleIntervention`): an object that owns its own tensors (a
  GRACE codebook, a WISE side memory) and rewrites the output of the module playing an
  :class:`~editscope.models.arch.ArchSpec` role at one layer. It is attached with a forward hook,
  so the module tree and every weight stay exactly as they were; removing the hook restores the
  model bit for bit.
* **input intervention** (:class:`InputIntervention`): a transform of every prompt, applied at the
  single tokenization point (:func:`editscope.scoring.encode_prompts` / ``encode_pairs``), e.g.
  in-context demonstrations prepended (IKE). No weight and no module changes.

Interventions are installed on a model under a *site* (a string naming where they act; one
intervention per site). An intervention's state is a JSON config plus named tensors; its
:meth:`Intervention.identity` hashes both, and :meth:`editscope.Model.state_key` combines the
identities of the installed interventions with the weights fingerprint, so caches never mistake an
intervened model for its base. Edit methods never install or remove interventions themselves:
:func:`editscope.apply_edit` snapshots the installed ones before a method runs and the
:class:`~editscope.methods.handle.EditHandle` puts them back on undo.
"""

from __future__ import annotations

from .registry import Registry

import copy
import hashlib
import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .errors import InputError
from .hooks import hidden_from
from .models.state import tensor_digest

if TYPE_CHECKING:
    from .models.model import Model



class InterventionError(InputError, ValueError):
    """An intervention that cannot be installed here (site taken, unknown type, wrong model)."""


class Intervention(ABC):
    """Common state of both kinds: a type name, a JSON-able config and named tensors.

    Subclasses define ``type_name`` and ``kind``, keep everything they need in ``config`` (JSON
    values) and :meth:`tensors`, and rebuild themselves in :meth:`from_state`.
    """

    type_name: ClassVar[str]
    kind: ClassVar[str]

    def __init__(self, config: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None):
        self.config = dict(config)
        self._tensors: dict[str, torch.Tensor] = dict(tensors or {})

    @property
    @abstractmethod
    def site(self) -> str:
        """Where it acts (unique per model), e.g. ``"grace@model.layers.5.mlp.down_proj"``."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """Named tensors it owns (saved as safetensors)."""
        return self._tensors

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Intervention:
        """Rebuild from :attr:`config` and :meth:`tensors` (as saved)."""
        return cls(config, tensors)

    def copy(self) -> Intervention:
        """An independent copy (tensors cloned): what an edit handle snapshots."""
        return type(self).from_state(copy.deepcopy(self.config), {k: v.detach().clone() for k, v in self.tensors().items()})

    def identity(self) -> str:
        """Content hash of type, config and tensors (32 hex chars)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([self.type_name, self.config], sort_keys=True, default=str).encode())
        for name in sorted(self.tensors()):
            h.update(f"{name}={tensor_digest(self.tensors()[name])};".encode())
        return h.hexdigest()

    def first_layer(self, model: Model) -> int:
        """Lowest block whose output it can change (0: anything from the embeddings on)."""
        return 0

    def bind(self, model: Model) -> None:
        """Check it fits ``model`` before installation (override: shapes, layers)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.site})"


class ModuleIntervention(Intervention):
    """Rewrites the output of ``model.module(config["role"], config["layer"])``."""

    kind = "module"

    @property
    def role(self) -> str:
        return str(self.config["role"])

    @property
    def layer(self) -> int:
        return int(self.config["layer"])

    @property
    def site(self) -> str:
        return f"{self.type_name}@{self.config['module']}"

    def first_layer(self, model: Model) -> int:
        return self.layer

    def bind(self, model: Model) -> None:
        if not 0 <= self.layer < model.n_layers:
            raise InterventionError(f"layer={self.layer} is outside the model (0..{model.n_layers - 1})")
        name = model.arch.name(self.role, self.layer)
        if self.config.get("module") != name:
            raise InterventionError(f"{self.type_name}: made for module {self.config.get('module')!r}, but this "
                                    f"{model.config.model_type} model's {self.role} at layer {self.layer} is {name!r}")

    @abstractmethod
    def output(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The module's new output ``[B, T, d_out]`` given its input ``[B, T, d_in]`` and its own
        output; must act on each position independently of later ones (causal), so that a full
        pass and decoding with a KV cache agree."""

    def hooked(self) -> list[tuple[str, int]]:
        """``(role, layer)`` of every module whose output it sees, in forward order; the first is its
        site. An intervention acting on several modules (MELO: a router, then adapters in later
        blocks) lists them all and gets :meth:`output_at` for each."""
        return [(self.role, self.layer)]

    def output_at(self, k: int, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The new output of hooked module ``k`` (default: :meth:`output` for the only one)."""
        return self.output(inputs, output)


class InputIntervention(Intervention):
    """Transforms every prompt before it is tokenized."""

    kind = "input"

    @property
    def site(self) -> str:
        return f"{self.type_name}@input"

    @abstractmethod
    def transform(self, prompt: str) -> str:
        """The prompt the model actually reads."""


INTERVENTION_TYPES: Registry[type[Intervention]] = Registry("intervention type")


def register_intervention(cls: type[Intervention]) -> type[Intervention]:
    """Class decorator: make ``cls`` loadable from a saved edit by its ``type_name``."""
    return INTERVENTION_TYPES.register(cls.type_name, cls)


def intervention_from_state(type_name: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Intervention:
    """Rebuild a saved intervention by its registered type name."""
    if type_name not in INTERVENTION_TYPES:
        raise InterventionError(f"unknown intervention type {type_name!r}; known: {sorted(INTERVENTION_TYPES)}")
    return INTERVENTION_TYPES[type_name].from_state(config, tensors)


def installed(model: Model) -> dict[str, Intervention]:
    """The interventions installed on ``model``: site -> intervention, in installation order."""
    return model.interventions  # type: ignore[return-value]


def _hook_for(iv: ModuleIntervention, k: int = 0):
    def hook(module, args, kwargs, output):
        x = hidden_from(args, kwargs)
        if isinstance(output, tuple):
            return (iv.output_at(k, x, output[0]), *output[1:])
        return iv.output_at(k, x, output)
    return hook


def install(model: Model, iv: Intervention) -> None:
    """Install ``iv`` at its site (which must be free)."""
    if not isinstance(iv, Intervention):
        raise TypeError(f"expected an Intervention, got {type(iv).__name__}")
    live = installed(model)
    if iv.site in live:
        raise InterventionError(f"site {iv.site!r} already has an intervention; remove it first")
    iv.bind(model)
    if isinstance(iv, ModuleIntervention):
        model.intervention_hooks[iv.site] = [
            model.module(role, layer).register_forward_hook(_hook_for(iv, k), with_kwargs=True)
            for k, (role, layer) in enumerate(iv.hooked())]
    live[iv.site] = iv


def remove(model: Model, site: str) -> Intervention:
    """Uninstall the intervention at ``site`` and return it."""
    live = installed(model)
    if site not in live:
        raise InterventionError(f"no intervention is installed at {site!r}")
    for hook in model.intervention_hooks.pop(site, []):
        hook.remove()
    return live.pop(site)


def put(model: Model, site: str, iv: Intervention | None) -> None:
    """Make ``site`` hold exactly ``iv`` (None: nothing), whatever it holds now."""
    if site in installed(model):
        remove(model, site)
    if iv is not None:
        if iv.site != site:
            raise InterventionError(f"intervention for {iv.site!r} cannot be put at {site!r}")
        install(model, iv)


def remove_all(model: Model) -> None:
    """Uninstall every intervention (the model is then its weights alone)."""
    for site in reversed(list(installed(model))):
        remove(model, site)


def identities(model: Model) -> dict[str, str]:
    """site -> :meth:`Intervention.identity` of each installed intervention."""
    return model.intervention_identities()


def transform_prompt(model: Model, prompt: str) -> str:
    """``prompt`` as the model reads it: every installed input intervention applied in order."""
    for iv in installed(model).values():
        if isinstance(iv, InputIntervention):
            prompt = iv.transform(prompt)
    return prompt


def has_input_interventions(model: Model) -> bool:
    return any(isinstance(iv, InputIntervention) for iv in installed(model).values())


def first_intervened_layer(model: Model) -> int | None:
    """Lowest block an installed intervention can change (0 for input interventions), or None."""
    return model.first_intervened_layer()


__all__ = ["INTERVENTION_TYPES", "InputIntervention", "Intervention", "InterventionError", "ModuleIntervention",
           "first_intervened_layer", "has_input_interventions", "identities", "install", "installed",
           "intervention_from_state", "put", "register_intervention", "remove", "remove_all", "transform_prompt"]
