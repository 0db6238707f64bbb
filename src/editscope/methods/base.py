"""The edit-method interface, hyperparameter validation and the method registry.

A method is a subclass of :class:`EditMethod` registered with :func:`register_method`. It declares:

* ``name``, ``family`` and a one-line ``summary`` (``editscope methods`` lists them);
* ``Hparams``: a :class:`Hparams` (pydantic) model; unknown keys, wrong types and out-of-range values
  are refused with the field named and, for typos, the nearest valid name;
* :meth:`EditMethod.arch_defaults`: per-architecture defaults (e.g. which layer), filled in for the
  fields the user did not give;
* :meth:`EditMethod.touched`: the parameter names it will change. :func:`editscope.apply_edit`
  snapshots exactly those before the edit, so every method is undoable without its own bookkeeping;
* :meth:`EditMethod.run`: change those parameters in place (``kind = "weights"``), or build or
  grow its intervention and put it on the model with :func:`editscope.interventions.put`
  (``kind = "module"`` / ``"input"``);
* capability flags: ``kind``, ``one_at_a_time`` (no batches), ``supports_sequential``.

Methods never snapshot, restore or guard weights or interventions themselves:
:mod:`editscope.methods.apply` and :class:`~editscope.methods.handle.EditHandle` do it.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..models.arch import ArchSpec
from ..models.model import Model
from ..requests import EditRequest
from ..registry import Registry, UnknownNameError
from ..errors import InputError, WorkError


class EditFailed(WorkError, RuntimeError):
    """An edit was rolled back (non-finite weights, a target loss that got worse, a method error).

    The model's weights are exactly what they were before the edit was attempted.
    """


class NoOpEdit(EditFailed, InputError):
    """An edit whose target already is (or starts) the model's own answer: nothing would be edited,
    and token-level metrics would count it as done. Refused before any weight changes. Its message
    holds :data:`NO_OP_MARK` (a stored unit's error is recognised by it: :func:`is_no_op`)."""

    exit_code = InputError.exit_code


NO_OP_MARK = " is a no-op: "


def is_no_op(error: str | None) -> bool:
    """A stored failure message is a :class:`NoOpEdit`'s (the edit was refused, not attempted)."""
    return bool(error) and NO_OP_MARK in error


class UnknownMethodError(InputError, ValueError):
    """A method name that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0])


class HparamError(InputError, ValueError):
    """A hyperparameter that is unknown, of the wrong type or out of range."""


class Hparams(BaseModel):
    """Base of every method's hyperparameters: strict keys, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _explain(method: str, cls: type[Hparams], err: ValidationError) -> str:
    fields = sorted(cls.model_fields)
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(hparams)"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][0]), fields, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            lines.append(f"{loc}: not a hyperparameter of {method!r}.{hint} Valid: {', '.join(fields)}")
        else:
            lines.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid hyperparameters for method {method!r}:\n  " + "\n  ".join(lines)


class EditMethod(ABC):
    """One knowledge-editing method (stateless; hyperparameters come with each call)."""

    name: ClassVar[str]
    family: ClassVar[str]
    summary: ClassVar[str]
    Hparams: ClassVar[type[Hparams]]
    #: the method takes one request per call (a batch must be applied sequentially by the caller)
    one_at_a_time: ClassVar[bool] = False
    #: the method needs ``EditRequest.subject`` (locate-then-edit methods)
    needs_subject: ClassVar[bool] = False
    #: the target-loss guard applies (controls, which are not meant to reach the target, opt out;
    #: non-finite weights are rolled back for every method)
    guard_target: ClassVar[bool] = True
    #: the method may touch no parameter at all (the identity control)
    touches_nothing: ClassVar[bool] = False
    #: what an edit is: "weights" (a delta), "module" (an installed module intervention) or
    #: "input" (a prompt transform); see docs/architecture.md "The path of an edit"
    kind: ClassVar[str] = "weights"
    #: edits can stack on the model one after another (the sequential protocol)
    supports_sequential: ClassVar[bool] = True

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        """``{"kind", "batch", "sequential", "needs_subject"}``: what the method can be asked to do."""
        return {"kind": cls.kind, "batch": not cls.one_at_a_time, "sequential": cls.supports_sequential,
                "needs_subject": cls.needs_subject}

    @classmethod
    def arch_defaults(cls, arch: ArchSpec, n_layers: int) -> dict[str, Any]:
        """Defaults that depend on the architecture (e.g. which layer); override per method."""
        return {}

    @classmethod
    def resolve_hparams(cls, arch: ArchSpec, n_layers: int, given: dict[str, Any]) -> Hparams:
        """Validated hyperparameters: ``given`` over :meth:`arch_defaults` over the field defaults."""
        values = {**cls.arch_defaults(arch, n_layers), **given}
        try:
            return cls.Hparams(**values)
        except ValidationError as e:
            raise HparamError(_explain(cls.name, cls.Hparams, e)) from None

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Hparams) -> None:
        """Refuse inputs this method cannot edit, before any weight changes (override to add checks)."""

    def statistics_request(self, model: Model, hp: Hparams) -> tuple[Any, list[int]] | None:
        """The key statistics an edit with ``hp`` reads, as ``(settings, layers)`` (settings: a
        hashable of the corpus options), or None. A caller about to run several methods passes them
        all to :func:`editscope.covariance.prefetch_key_statistics`, which computes the layers that
        share settings in one corpus pass instead of one per method."""
        return None

    def touched(self, model: Model, hp: Hparams) -> list[str]:
        """Names (as in ``model.hf.named_parameters()``) of every parameter :meth:`run` may change
        (weight methods must override; interventions change none)."""
        if self.kind == "weights":
            raise NotImplementedError(f"{type(self).__name__} must say which parameters it touches")
        return []

    @abstractmethod
    def run(self, model: Model, requests: Sequence[EditRequest], hp: Hparams) -> dict[str, Any]:
        """Edit the touched parameters in place, or put the method's intervention on the model;
        return what happened (losses, steps, ...)."""

    def prepare(self, model: Model, requests: Sequence[EditRequest], hp: Hparams) -> None:
        """Precompute, in one batch on the current weights, what the next edits of ``requests``
        (applied one at a time with the same ``hp``, each undone before the next) would each
        compute alone; an edit uses its part only while the weights are bit-identical. Default:
        nothing (the locate-then-edit methods batch their target residuals)."""

    def on_applied(self, model: Model, handle: Any) -> None:
        """Called once the edit passed the guard (methods with per-model state, e.g. AlphaEdit's keys)."""

    def on_undo(self, model: Model, handle: Any) -> None:
        """Called when ``handle`` is undone, after its weights were restored."""


METHODS: Registry[type[EditMethod]] = Registry("edit method")


def register_method(cls: type[EditMethod]) -> type[EditMethod]:
    """Class decorator: make ``cls`` available to :func:`editscope.apply_edit` under ``cls.name``."""
    for attr in ("name", "family", "summary", "Hparams"):
        if not hasattr(cls, attr):
            raise TypeError(f"{cls.__name__} must define {attr!r} to be registered as an edit method")
    return METHODS.register(cls.name, cls)


def get_method(name: str) -> EditMethod:
    """The registered method called ``name`` (case-insensitive; ``_`` and ``-`` are the same)."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a method name (str), got {type(name).__name__}")
    try:
        return METHODS[name]()
    except UnknownNameError as e:
        raise UnknownMethodError(str(e)) from None


def check_hparams(name: str, given: dict[str, Any]) -> None:
    """Refuse, before any model is loaded, hyperparameters that method ``name`` does not have or
    values it would not accept (:class:`HparamError` with "did you mean"); fields left out are
    filled later from the architecture's defaults and are not checked here."""
    cls = type(get_method(name))
    try:
        cls.Hparams(**given)
    except ValidationError as e:
        errors = [err for err in e.errors() if err["type"] != "missing" and err["loc"]]
        if errors:
            raise HparamError(_explain(cls.name, cls.Hparams, ValidationError.from_exception_data(
                e.title, [{k: err[k] for k in ("type", "loc", "input", "ctx") if k in err} for err in errors])
                )) from None


def list_methods() -> list[dict[str, Any]]:
    """``[{"name", "family", "summary", "kind", "batch", "sequential", "one_at_a_time",
    "needs_subject", "required", "hparams"}, ...]``; ``hparams`` maps each field to its
    architecture-independent default."""
    out = []
    for name, cls in METHODS.items():
        defaults = {k: f.default for k, f in cls.Hparams.model_fields.items() if not f.is_required()}
        out.append({"name": name, "family": cls.family, "summary": cls.summary, **cls.capabilities(),
                    "one_at_a_time": cls.one_at_a_time,
                    "required": [k for k, f in cls.Hparams.model_fields.items() if f.is_required()],
                    "hparams": defaults})
    return out


def resolved_defaults(name: str, arch: ArchSpec, n_layers: int) -> dict[str, Any]:
    """The full default hyperparameters of method ``name`` for a model of this architecture and depth."""
    cls = type(get_method(name))
    return cls.resolve_hparams(arch, n_layers, {}).model_dump()
