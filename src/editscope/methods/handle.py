"""`EditHandle`: an applied edit that can be undone bit-exactly, saved and re-loaded.

Bookkeeping lives here and only here, for the three edit kinds (docs/architecture.md "The path of an edit"):

* **weights**: a snapshot of exactly the parameters a method declared it touches, taken before
  the edit, and per-tensor content digests before and after;
* **module** / **input** interventions (:mod:`editscope.interventions`): copies of the installed
  interventions before the edit; after it, the sites whose intervention changed (added, grown or
  replaced) with their identities before and after.

A per-model stack of active edits makes undoing out of order an error instead of silent corruption.

Saved form (a folder): ``manifest.json`` (kind, method, hyperparameters, requests, base-model
fingerprint, per-tensor digests, per-site intervention identities, library version);
``delta.safetensors`` (``after - before`` per touched tensor, stored in the parameter's dtype when
that re-applies bit-exactly, else float64; empty for interventions); ``interventions.safetensors``
(each changed site's tensors after the edit, ``"<site>/<name>"``) for interventions; and
``extras.safetensors`` (state a method re-registers on load, e.g. AlphaEdit's keys) when there is any.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..interventions import Intervention, identities, installed, intervention_from_state, put
from ..models.model import Model
from ..models.state import tensor_digest
from ..paths import file_in_the_way
from ..requests import EditRequest
from ..errors import InputError, WorkError
from ..version import __version__
from .base import METHODS

MANIFEST = "manifest.json"
DELTA = "delta.safetensors"
INTERVENTIONS = "interventions.safetensors"
EXTRAS = "extras.safetensors"
FORMAT_VERSION = 2
KINDS = ("weights", "module", "input")


class EditHandleError(WorkError, RuntimeError):
    """An operation on an edit handle that would corrupt weights (undo twice, out of order, ...)."""


class EditLoadError(InputError, ValueError):
    """A saved edit that does not fit this model (other base weights, other tensors) or is not ours."""


def parameters(model: Model, names: Sequence[str]) -> dict[str, torch.nn.Parameter]:
    """``name -> Parameter`` for ``names`` (as in ``named_parameters()``); unknown names raise."""
    params = dict(model.hf.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"the model has no parameters {missing[:5]}")
    return {n: params[n] for n in names}


def _stack(model: Model) -> list[EditHandle]:
    return model.state.edit_stack


def active_edits(model: Model) -> list[EditHandle]:
    """Edits applied to ``model`` and not undone, oldest first."""
    return list(_stack(model))


def exact_delta(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``after - before`` in the parameter's dtype when ``before + delta`` reproduces ``after``
    bit-exactly, else in float64 (re-applied as ``(before.double() + delta).to(dtype)``)."""
    d = after - before
    if torch.equal(before + d, after):
        return d
    d64 = after.double() - before.double()
    if not torch.equal((before.double() + d64).to(after.dtype), after):
        raise EditHandleError("the edit's delta cannot be stored exactly (float64 re-application differs)")
    return d64


def add_delta(w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`exact_delta`: the edited value of ``w``."""
    if delta.dtype == w.dtype:
        return w + delta
    return (w.double() + delta.double()).to(w.dtype)


@dataclass
class EditHandle:
    """An edit applied to ``model``.

    Attributes:
        method: the registered method name.
        hparams: the resolved hyperparameters (defaults included).
        requests: what was edited.
        names: the touched parameter names (empty for interventions).
        base_fingerprint: the model's base weights fingerprint.
        before_digests / after_digests: per touched tensor, content hashes before and after.
        kind: ``"weights"``, ``"module"`` or ``"input"`` (the method's kind).
        sites: intervention sites this edit changed (filled when it is applied).
        site_before / site_after: per site, the intervention's identity before and after (None: none).
        extras: tensors a method keeps to re-register per-model state on load (AlphaEdit's keys).
        info: what the method reported (losses, steps, ...) and ``seconds`` it took.
    """

    model: Model
    method: str
    hparams: dict[str, Any]
    requests: list[EditRequest]
    names: list[str]
    base_fingerprint: str
    before_digests: dict[str, str]
    after_digests: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "weights"
    site_before: dict[str, str | None] = field(default_factory=dict)
    site_after: dict[str, str | None] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _before: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _iv_before: dict[str, Intervention] | None = field(default=None, repr=False)
    active: bool = False

    @property
    def sites(self) -> list[str]:
        return list(self.site_after)

    @classmethod
    def snapshot(cls, model: Model, method: str, hparams: dict[str, Any], requests: Sequence[EditRequest],
                 names: Sequence[str], kind: str = "weights") -> EditHandle:
        """Record the touched parameters (and, for interventions, the installed interventions)
        before an edit (not yet active)."""
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: use one of {KINDS}")
        base_fp = model.base_fingerprint  # record the base before any weight changes
        params = parameters(model, names)
        before = {n: p.detach().clone() for n, p in params.items()}
        ivs = {site: iv.copy() for site, iv in installed(model).items()} if kind != "weights" else None
        return cls(model=model, method=method, hparams=dict(hparams), requests=list(requests), names=list(names),
                   base_fingerprint=base_fp, before_digests={n: tensor_digest(t) for n, t in before.items()},
                   kind=kind, _before=before, _iv_before=ivs)

    def _changed_sites(self) -> dict[str, tuple[str | None, str | None]]:
        """site -> (identity before, identity now) for the sites whose intervention changed."""
        before = {s: iv.identity() for s, iv in (self._iv_before or {}).items()}
        now = identities(self.model)
        return {s: (before.get(s), now.get(s)) for s in sorted(set(before) | set(now)) if before.get(s) != now.get(s)}

    def restore(self) -> None:
        """Write the snapshot back into the parameters and the intervention sites (bit-exact)."""
        if self._before is None:
            raise EditHandleError("this handle holds no snapshot to restore (it was released or already undone)")
        with torch.no_grad():
            for n, p in parameters(self.model, self.names).items():
                p.copy_(self._before[n])
        if self._iv_before is not None:
            sites = self.site_after if self.active else self._changed_sites()
            for site in sites:
                old = self._iv_before.get(site)
                put(self.model, site, old.copy() if old is not None else None)

    def activate(self, info: dict[str, Any] | None = None) -> None:
        """Mark the edit as applied: record after-digests and changed sites, and push it on the
        model's edit stack."""
        self.after_digests = {n: tensor_digest(p) for n, p in parameters(self.model, self.names).items()}
        if self._iv_before is not None:
            changed = self._changed_sites()
            self.site_before = {s: b for s, (b, _) in changed.items()}
            self.site_after = {s: a for s, (_, a) in changed.items()}
            self._iv_before = {s: iv for s, iv in self._iv_before.items() if s in changed}
        if info:
            self.info.update(info)
        self.active = True
        _stack(self.model).append(self)

    def _later_overlapping(self) -> list[EditHandle]:
        stack = _stack(self.model)
        later = stack[stack.index(self) + 1:] if self in stack else []
        mine = set(self.names) | set(self.site_after)
        return [h for h in later if mine & (set(h.names) | set(h.site_after))]

    def _require_latest(self, what: str) -> None:
        if not self.active:
            raise EditHandleError(f"cannot {what}: this {self.method} edit was already undone")
        later = self._later_overlapping()
        if later:
            raise EditHandleError(
                f"cannot {what} this {self.method} edit: {len(later)} later edit(s) ({', '.join(h.method for h in later)}) "
                "changed the same parameters or intervention sites and are still applied; undo them first "
                "(sequential edits undo in reverse order)")

    def undo(self) -> None:
        """Restore every touched parameter and intervention site to its state before this edit, bit-exactly."""
        self._require_latest("undo")
        self.restore()
        _stack(self.model).remove(self)
        self.active = False
        self._before = None
        self._iv_before = None
        if self.method in METHODS:
            METHODS[self.method]().on_undo(self.model, self)

    def release(self) -> None:
        """Keep the edit for good and free its snapshot (memory: a full copy of the touched
        tensors). The handle stays on the model's edit stack but can no longer be undone; the
        sequential protocol releases each accepted edit and restores the model as a whole."""
        self._require_latest("release")
        self._before = None
        self._iv_before = None

    def delta(self) -> dict[str, torch.Tensor]:
        """``after - before`` per touched parameter (same shapes; float32 for float32 weights).

        Only weight edits have one: an intervention changes no weight (placebos cannot match it)."""
        if self.kind != "weights":
            raise EditHandleError(f"a {self.method} edit is a {self.kind} intervention, not a weight delta: it has no "
                                  "delta (a placebo can only be matched to a weight-delta method)")
        self._require_latest("take the delta of")
        params = parameters(self.model, self.names)
        return {n: (params[n].detach() - self._before[n]) for n in self.names}  # type: ignore[index]

    def weights_before(self) -> dict[str, torch.Tensor]:
        """The touched parameters as they were before this edit (the undo snapshot; do not modify)."""
        if self.kind != "weights":
            raise EditHandleError(f"a {self.method} edit is a {self.kind} intervention: it changed no weight")
        if self._before is None:
            raise EditHandleError("this edit was undone or released: its snapshot of the weights is gone")
        return dict(self._before)

    def manifest(self) -> dict[str, Any]:
        ivs = installed(self.model)
        return {
            "format": "editscope-edit", "format_version": FORMAT_VERSION, "library_version": __version__,
            "kind": self.kind, "method": self.method, "hparams": self.hparams,
            "requests": [{**asdict(r), "sep_explicit": r.sep_explicit} for r in self.requests],
            "model": self.model.name, "model_type": self.model.config.model_type,
            "base_fingerprint": self.base_fingerprint,
            "tensors": {n: {"before": self.before_digests[n], "after": self.after_digests[n],
                            "shape": list(self._before[n].shape) if self._before is not None else None,
                            "dtype": str(self._before[n].dtype).replace("torch.", "") if self._before is not None else None}
                        for n in self.names},
            "interventions": {s: {"before": self.site_before[s], "after": self.site_after[s],
                                  "type": ivs[s].type_name if s in ivs else None,
                                  "config": ivs[s].config if s in ivs else None,
                                  "tensors": sorted(ivs[s].tensors()) if s in ivs else []}
                              for s in self.site_after},
            "extras": sorted(self.extras),
            "info": _jsonable(self.info), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the saved form (see the module docstring) into folder ``path`` (created).

        A folder that already holds something other than a saved edit is refused.
        """
        from safetensors.torch import save_file

        self._require_latest("save")
        out = check_save_folder(path)
        out.mkdir(parents=True, exist_ok=True)
        params = parameters(self.model, self.names)
        deltas = {n: exact_delta(self._before[n], params[n].detach()).contiguous().cpu()  # type: ignore[index]
                  for n in self.names}
        ivs = installed(self.model)
        iv_tensors = {f"{s}/{k}": t.detach().contiguous().cpu() for s in self.site_after if s in ivs
                      for k, t in ivs[s].tensors().items()}
        files: list[tuple[str, Any]] = [(DELTA, lambda p: save_file(deltas, p, metadata={"format": "editscope-edit"}))]
        if self.kind != "weights":
            files.append((INTERVENTIONS, lambda p: save_file(iv_tensors, p, metadata={"format": "editscope-edit"})))
        if self.extras:
            extras = {k: v.detach().contiguous().cpu() for k, v in self.extras.items()}
            files.append((EXTRAS, lambda p: save_file(extras, p, metadata={"format": "editscope-edit"})))
        files.append((MANIFEST, lambda p: Path(p).write_text(json.dumps(self.manifest(), indent=2))))
        for stale in (INTERVENTIONS, EXTRAS):  # a replaced earlier save must not leave its files behind
            if stale not in [f for f, _ in files] and (out / stale).exists():
                (out / stale).unlink()
        for target, write in files:
            fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
            os.close(fd)
            try:
                write(tmp)
                os.replace(tmp, out / target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return out

    def __repr__(self) -> str:
        state = "applied" if self.active else "undone"
        what = f"{len(self.names)} tensor(s)" if self.kind == "weights" else f"{len(self.site_after)} {self.kind} site(s)"
        return f"EditHandle({self.method}, {len(self.requests)} request(s), {what}, {state})"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return x.item()
    return str(x)


class EditSaveError(InputError, FileExistsError):
    """A folder an edit cannot be saved into (a file, under a file, or holding other files)."""


def check_save_folder(path: str | os.PathLike) -> Path:
    """The folder an edit will be saved into, checked before the edit runs: new, empty, or an
    earlier saved edit (replaced); never a file, a path under a file or a folder of other files."""
    out = Path(path).expanduser()
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise EditSaveError(f"--save {out}: {'it' if blocker == out else blocker} is a file, not a folder; give a "
                            "new or empty folder for the saved edit")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise EditSaveError(f"--save {out}: holds other files; save the edit into a new or empty folder")
    return out


def read_saved_edit(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a saved edit folder, checked (manifest JSON, format, and readable
    safetensors files holding exactly the tensors the manifest lists) without loading any model."""
    folder = Path(path).expanduser()
    mpath = folder / MANIFEST
    if not mpath.is_file() or not (folder / DELTA).is_file():
        raise EditLoadError(f"{folder} is not a saved edit (needs {MANIFEST} and {DELTA}); save one with "
                            "`editscope edit --save DIR` or handle.save(dir)")
    try:
        man = json.loads(mpath.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EditLoadError(f"{mpath} is not valid JSON ({e}); the saved edit is damaged") from None
    if not isinstance(man, dict) or man.get("format") != "editscope-edit":
        raise EditLoadError(f"{mpath} is not an editscope edit manifest")
    if man.get("format_version", 0) > FORMAT_VERSION:
        raise EditLoadError(f"{folder} was saved by a newer editscope (format {man['format_version']}); upgrade editscope")
    missing = [k for k in ("method", "hparams", "requests", "tensors", "base_fingerprint") if k not in man]
    if missing:
        raise EditLoadError(f"{mpath} lacks {', '.join(missing)}; the saved edit is damaged")
    man.setdefault("kind", "weights")
    man.setdefault("interventions", {})
    man.setdefault("extras", [])
    if man["kind"] not in KINDS:
        raise EditLoadError(f"{mpath}: kind {man['kind']!r} is not one of {KINDS}; the saved edit is damaged")
    _check_keys(folder / DELTA, sorted(man["tensors"]))
    if man["kind"] != "weights":
        _check_keys(folder / INTERVENTIONS, sorted(f"{s}/{t}" for s, v in man["interventions"].items()
                                                   for t in v.get("tensors", [])))
    if man["extras"]:
        _check_keys(folder / EXTRAS, sorted(man["extras"]))
    return man


def _check_keys(path: Path, expected: list[str]) -> None:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise EditLoadError(f"{path} is missing; the saved edit is damaged")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = sorted(f.keys())
    except (SafetensorError, OSError) as e:
        raise EditLoadError(f"{path} cannot be read ({e}); the saved edit is damaged") from None
    if keys != expected:
        raise EditLoadError(f"{path} holds other tensors than its manifest lists; the saved edit is damaged")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path)) if path.is_file() else {}


def load_edit(model: Model, path: str | os.PathLike) -> EditHandle:
    """Re-apply an edit saved by :meth:`EditHandle.save`; returns its (undoable) handle.

    Refuses a model of another architecture or whose base weights differ from the one the edit
    was made on, and a model whose touched tensors or intervention sites are not in the state the
    edit started from (apply earlier edits first). Nothing is installed when it refuses.
    """
    folder = Path(path).expanduser()
    man = read_saved_edit(folder)
    made_on = man.get("model_type")
    if made_on is not None and made_on != model.config.model_type:
        raise EditLoadError(f"{folder} was made on a {made_on} model ({man.get('model')}); this model is a "
                            f"{model.config.model_type} ({model.name}); load it into the model it was made on")
    if man["base_fingerprint"] != model.base_fingerprint:
        raise EditLoadError(
            f"{folder} was made on a model with base fingerprint {man['base_fingerprint'][:12]}..., but this "
            f"model's is {model.base_fingerprint[:12]}... ({model.name}); load it into the model it was made on")
    names = list(man["tensors"])
    try:
        params = parameters(model, names)
    except KeyError as e:
        raise EditLoadError(f"{folder} touches tensors this model does not have: {e}") from None
    stale = [n for n, p in params.items() if tensor_digest(p) != man["tensors"][n]["before"]]
    now = identities(model)
    stale += [s for s, v in man["interventions"].items() if now.get(s) != v.get("before")]
    if stale:
        raise EditLoadError(
            f"{len(stale)} tensor(s) or intervention site(s) the edit changes (e.g. {stale[0]}) are not in the "
            "state it was made on; apply the edits saved before it first, or undo the ones applied since")
    deltas = _read_tensors(folder / DELTA)
    for n, p in params.items():
        if tuple(deltas[n].shape) != tuple(p.shape):
            raise EditLoadError(f"delta {n} has shape {tuple(deltas[n].shape)}, the model's is {tuple(p.shape)}")
    iv_tensors = _read_tensors(folder / INTERVENTIONS)
    new_ivs: dict[str, Intervention | None] = {}
    for s, v in man["interventions"].items():
        if v.get("after") is None:
            new_ivs[s] = None
            continue
        try:
            new_ivs[s] = intervention_from_state(v["type"], v["config"], {t: iv_tensors[f"{s}/{t}"] for t in v["tensors"]})
        except (KeyError, TypeError, ValueError) as e:
            raise EditLoadError(f"{folder}: intervention {s!r} cannot be rebuilt ({type(e).__name__}: {e})") from None
    requests = []
    for r in man["requests"]:
        explicit = r.pop("sep_explicit", True)
        requests.append(EditRequest(**{**r, "sep": r["sep"] if explicit else None}))
    handle = EditHandle.snapshot(model, man["method"], man["hparams"], requests, names, kind=man["kind"])
    try:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(add_delta(p.detach(), deltas[n].to(p.device)))
        for s, iv in new_ivs.items():
            put(model, s, iv)
    except Exception as e:
        handle.restore()
        raise EditLoadError(f"{folder} cannot be installed on this model ({type(e).__name__}: {e})") from None
    bad = [n for n, p in params.items() if tensor_digest(p) != man["tensors"][n]["after"]]
    now = identities(model)
    bad += [s for s, v in man["interventions"].items() if now.get(s) != v.get("after")]
    if bad:
        handle.restore()
        raise EditLoadError(f"re-applying {folder} did not reproduce the saved edit ({bad[0]}); the file is damaged")
    handle.extras = _read_tensors(folder / EXTRAS)
    handle.activate({**man.get("info", {}), "loaded_from": str(folder)})
    if handle.method in METHODS:
        METHODS[handle.method]().on_applied(model, handle)  # per-model state (AlphaEdit's keys) from extras
    return handle
