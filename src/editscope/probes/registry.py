"""The suite registry: names -> probe-suite factories, with did-you-mean errors.

Built-in suites (``arithmetic``, ``facts``) are registered below. Dataset loaders (CounterFact,
zsRE, MQuAKE, ... in :mod:`editscope.probes.datasets`) register themselves with
:func:`register_suite`; this module does not import them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..requests import ProbeSet
from .arithmetic import arithmetic
from .facts import facts
from ..errors import InputError
from ..registry import Registry, UnknownNameError


@dataclass(frozen=True)
class SuiteInfo:
    """A registered suite.

    Attributes:
        name: the registry key (``editscope eval --suite NAME``).
        description: one line for ``editscope suites``.
        factory: ``factory(**kwargs) -> ProbeSet``.
        needs_edit: the suite's categories are built relative to an edit: the factory takes the
            current edit request as ``edit=`` and the runner should pass it.
    """

    name: str
    description: str
    factory: Callable[..., ProbeSet]
    needs_edit: bool = False


class UnknownSuiteError(InputError, KeyError, ValueError):
    """An unknown suite name (a KeyError and a ValueError; the message suggests the nearest)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


SUITES: Registry[SuiteInfo] = Registry("suite")


def register_suite(
    name: str,
    description: str,
    factory: Callable[..., ProbeSet],
    needs_edit: bool = False,
    *,
    overwrite: bool = False,
) -> SuiteInfo:
    """Register ``factory`` under ``name``; re-registering a name needs ``overwrite=True``."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"suite name must be a non-blank string without surrounding spaces, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for suite {name!r} must be callable, got {type(factory).__name__}")
    info = SuiteInfo(name=name, description=str(description), factory=factory, needs_edit=bool(needs_edit))
    return SUITES.register(name, info, overwrite=overwrite)


def lookup_suite(name: str) -> SuiteInfo:
    try:
        return SUITES[name]
    except UnknownNameError as e:
        raise UnknownSuiteError(str(e)) from None


def get_suite(name: str, **kwargs: Any) -> ProbeSet:
    """Build the suite ``name`` with ``kwargs`` passed to its factory
    (``get_suite("arithmetic", edit=req, n=20)``)."""
    return lookup_suite(name).factory(**kwargs)


def suite_info(name: str) -> SuiteInfo:
    """The :class:`SuiteInfo` of ``name`` (same errors as :func:`get_suite`)."""
    return lookup_suite(name)


def list_suites() -> list[dict[str, Any]]:
    """``[{"name", "description", "needs_edit"}, ...]`` in registration order."""
    return [{"name": s.name, "description": s.description, "needs_edit": s.needs_edit} for s in SUITES.values()]


# --- built-in suites ----------------------------------------------------------------------------
register_suite(
    "arithmetic",
    "a op b= grid (a, b in 0..n; +, -, *) with target/paraphrase/near/far relative to an "
    "arithmetic edit (general without one)",
    arithmetic,
    needs_edit=True,
)
register_suite(
    "facts",
    "written general-knowledge completions (capitals, languages, authors, elements, ...)",
    facts,
    needs_edit=False,
)

# --- dataset loaders ----------------------------------------------------------------------------
# CounterFact (ROME / MEND formats), zsRE, MQuAKE, KnowEdit-style JSON, plain JSONL live in
# editscope/probes/datasets/ and register here through datasets.records.register_dataset,
#     register_suite("counterfact", "...", load_counterfact, needs_edit=False)
# (this module must not import them; editscope.probes imports them after the registry).
