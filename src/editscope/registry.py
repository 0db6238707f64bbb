"""One registry type for every kind of named thing editscope looks up: edit methods, probe suites and
datasets, metrics, downstream tasks, perplexity corpora, architectures, intervention types.

* Names are normalised once (case, surrounding spaces, ``_`` = ``-``): ``FT_L``, ``ft-l`` and
  ``Ft_L`` are the same method; the registered spelling is what listings show.
* One duplicate rule: registering the same object again under a name is a no-op; another object
  under a taken name is refused unless ``overwrite=True`` (a plugin replacing a built-in says so).
* An unknown name raises :class:`UnknownNameError` (a KeyError and a ValueError, an input error:
  exit code 2) naming the kind, the nearest names ("did you mean") and every known name.
* A registry is a read-only ``Mapping`` (``name in r``, ``r[name]``, ``r.get(name)``, iteration in
  registration order), so code that used a dict keeps working.

Outside code adds entries through plugins: modules listed in a study's ``plugins:`` key, or
installed packages that declare an ``editscope.plugins`` entry point; importing them runs their
``register_*`` calls (:func:`load_plugins`).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from .errors import InputError

T = TypeVar("T")


class UnknownNameError(InputError, KeyError, ValueError):
    """A name no registry entry has (the message suggests the nearest)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(InputError, ValueError):
    """A second, different entry under a registered name."""


class PluginError(InputError, ImportError):
    """A plugin module that does not import, or that registers a duplicate name."""


def normalise(name: str) -> str:
    """The lookup key of a name: stripped, lower case, ``_`` read as ``-``."""
    return name.strip().lower().replace("_", "-")


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind (see the module docstring). ``kind`` names it in messages
    ("edit method", "suite", ...)."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None):
        self.kind = kind
        self._items: dict[str, tuple[str, T]] = {}  # normalised -> (registered name, entry)
        for name, item in (entries or {}).items():
            self.register(name, item)

    def register(self, name: str, item: T, *, overwrite: bool = False) -> T:
        """Add ``item`` under ``name`` (see the module docstring for the duplicate rule)."""
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f"a {self.kind} name must be a non-blank string without surrounding spaces, got {name!r}")
        key = normalise(name)
        if key in self._items and not overwrite:
            old_name, old = self._items[key]
            if old is item or old == item:
                return old
            raise DuplicateNameError(f"a {self.kind} named {old_name!r} is already registered ({_describe(old)}); "
                                     f"pass overwrite=True to replace it with {_describe(item)}")
        self._items[key] = (name, item)
        return item

    def unregister(self, name: str) -> None:
        self._items.pop(normalise(name), None)

    def _entry(self, name: object) -> tuple[str, T]:
        """``(registered spelling, entry)`` of ``name``; :class:`UnknownNameError` when none."""
        hit = self._items.get(normalise(name)) if isinstance(name, str) else None
        if hit is None:
            raise UnknownNameError(self._unknown(name))
        return hit

    def resolve(self, name: str) -> str:
        """The registered spelling of ``name`` (:class:`UnknownNameError` when none)."""
        return self._entry(name)[0]

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """The registered names nearest to ``name``."""
        keys = {normalise(k): k for k, _ in self._items.values()}
        close = difflib.get_close_matches(normalise(str(name)), list(keys), n=n, cutoff=0.5)
        return [keys[c] for c in close]

    def _unknown(self, name: object) -> str:
        close = self.suggest(str(name))
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self) or '(none)'}"

    def __getitem__(self, name: str) -> T:
        return self._entry(name)[1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalise(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._items.values()])

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self)})"


def _describe(item: object) -> str:
    return getattr(item, "__qualname__", None) or getattr(item, "name", None) or type(item).__name__


ENTRY_POINT_GROUP = "editscope.plugins"
_loaded: set[str] = set()


def load_plugins(modules: Sequence[str] = (), entry_points: bool = True) -> list[str]:
    """Import plugin ``modules`` (and, once, every ``editscope.plugins`` entry point) so that their
    ``register_*`` calls run; returns the modules imported now. A module that does not import or
    registers a duplicate name raises :class:`PluginError` naming it."""
    done = []
    targets = [(m, m) for m in modules]
    if entry_points and "<entry points>" not in _loaded:
        from importlib.metadata import entry_points as eps

        targets += [(f"{ep.name} ({ep.value})", ep) for ep in eps(group=ENTRY_POINT_GROUP)]
        _loaded.add("<entry points>")
    for label, target in targets:
        if label in _loaded:
            continue
        try:
            if isinstance(target, str):
                importlib.import_module(target)
            else:
                target.load()
        except DuplicateNameError as e:
            raise PluginError(f"plugin {label!r} registers a name that is taken: {e}") from None
        except Exception as e:  # noqa: BLE001 - any failure of outside code is reported as the plugin's
            raise PluginError(f"plugin {label!r} does not import: {type(e).__name__}: {e} (is it installed and on "
                              "PYTHONPATH? a study's plugins: lists importable module names, e.g. mylab.methods)") from None
        _loaded.add(label)
        done.append(label)
    return done


__all__ = ["DuplicateNameError", "PluginError", "Registry", "UnknownNameError", "load_plugins", "normalise"]
