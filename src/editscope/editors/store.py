"""Trained editors: a specification (:class:`MendSpec`), training that resumes after an interruption,
and a cache keyed by the specification's digest (``<cache>/editors/<kind>-<model>-<digest>/``).

A finished editor folder holds ``editor.safetensors`` (every tensor of the editor, never pickle),
``trained_on.json`` (a hash of each training edit, so an edit the editor was trained on is refused at
evaluation) and ``manifest.json``: the specification and its digest, the base model's weights
fingerprint (an editor is refused on any other model), the training data's digest and record count,
the loss curve, the training time and threads, and the editor's size. It is written to a temporary
folder and moved into place: the cache never holds a half-written editor. Training data and
held-out (evaluation) records are disjoint by a stated split, checked before training starts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat
from safetensors.torch import load_file, save_file

from ..checkpoints import batch_at, clear_checkpoint, has_checkpoint, load_checkpoint, save_checkpoint, weights_sha
from ..models.model import Model, load_model
from ..paths import cache_root
from ..probes.datasets import load_edit_dataset
from .mend import MendTrainer, build_editor
from .serac import SeracTrainer
from ..requests import EditRequest
from .errors import EditorError, EditorTrainingError
from .mend_net import MendEditor
from .records import TrainingRecord

MANIFEST = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordRange(_Strict):
    """Records ``offset .. offset + limit - 1`` of an edit dataset (``editscope.probes.datasets``)."""

    dataset: Literal["counterfact", "zsre"]
    offset: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=1)
    source: str | None = None

    def label(self) -> str:
        end = "end" if self.limit is None else str(self.offset + self.limit - 1)
        return f"{self.dataset}[{self.offset}..{end}]"


#: the leaderboard's evaluation records: never trained on by default
HELD_OUT = (RecordRange(dataset="counterfact", limit=200), RecordRange(dataset="zsre", limit=200))
TRAIN = (RecordRange(dataset="counterfact", offset=200), RecordRange(dataset="zsre", offset=200))


class EditorSpec(_Strict):
    """What every trained editor names: the model, the stated training and held-out records, the
    optimisation length and the seed. Subclasses add their own settings (and a ``kind``)."""

    kind: str
    #: training reads the model (its gradients, its weights' fingerprint)
    needs_model: ClassVar[bool] = True
    model: str = Field(description="the model the editor is trained for (built-in or derived name, or a path)")
    train: tuple[RecordRange, ...] = TRAIN
    held_out: tuple[RecordRange, ...] = HELD_OUT
    batch_size: int = Field(10, ge=1, description="records per optimiser step")
    steps: int = Field(1000, ge=1)
    seed: int = 0
    checkpoint_every: int = Field(25, ge=1)

    def digest(self) -> str:
        """The settings that decide the trained editor (bookkeeping such as ``checkpoint_every`` left out)."""
        body = self.model_dump(mode="json", exclude={"checkpoint_every"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


class SeracSpec(EditorSpec):
    """SERAC's scope classifier: EasyEdit's ``hparams/TRAINING/SERAC/gpt2-xl.yaml`` lr and batch size,
    all-MiniLM-L6-v2 in place of distilbert (offline). The classifier reads text only: it serves any
    model (``model`` names the one it was trained beside; no fingerprint check)."""

    kind: Literal["serac"] = "serac"
    needs_model: ClassVar[bool] = False
    encoder: str = "all-MiniLM-L6-v2"
    lr: PositiveFloat = 1e-5
    steps: int = Field(500, ge=1)
    threshold: float = Field(0.5, gt=0, lt=1, description="in scope when the classifier's probability reaches this")
    grad_clip: PositiveFloat = 100.0


class MendSpec(EditorSpec):
    """MEND's training settings; defaults are EasyEdit's ``hparams/TRAINING/MEND/gpt2-xl.yaml`` except
    the number of steps (its 100,000 iterations do not fit a CPU; see the README for what was run)."""

    kind: Literal["mend"] = "mend"
    layers: tuple[int, ...] | None = Field(None, description="blocks whose MLP weights are edited; default the last 3")
    rank: int = Field(1920, ge=1)
    n_hidden: int = Field(1, ge=0, le=4)
    edit_lr: PositiveFloat = 1e-4
    lr: PositiveFloat = 1e-6
    lr_lr: PositiveFloat = 1e-4
    cedit: float = Field(0.1, ge=0)
    cloc: float = Field(1.0, ge=0)
    grad_clip: PositiveFloat = 100.0


def folder_of(spec: EditorSpec) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.model)[-60:]
    return cache_root() / "editors" / f"{spec.kind}-{slug}-{spec.digest()}"


def edit_key(req: EditRequest) -> str:
    """What identifies an edit for the training/evaluation overlap check."""
    return hashlib.sha256(f"{req.prompt}\x00{req.target_new}".encode()).hexdigest()[:20]


def _cases(r: RecordRange):
    return load_edit_dataset(r.dataset, r.source, offset=r.offset, limit=r.limit).cases


def training_records(ranges: tuple[RecordRange, ...]) -> list[TrainingRecord]:
    """One record per dataset case: its first edit, first paraphrase and first neighbourhood probe."""
    out = []
    for r in ranges:
        for case in _cases(r):
            para = next((p for p in case.probes if p.category == "paraphrase"), None)
            loc = next((p for p in case.probes if p.category in ("near", "far")), None)
            out.append(TrainingRecord(case.requests[0], para, loc))
    return out


def check_disjoint(spec: EditorSpec, records: list[TrainingRecord]) -> None:
    """Refuse training records that are also held-out records (by prompt and target)."""
    held = {edit_key(c.requests[0]): (r.label(), c.case_id) for r in spec.held_out for c in _cases(r)}
    both = [(rec.request, held[edit_key(rec.request)]) for rec in records if edit_key(rec.request) in held]
    if both:
        shown = "; ".join(f"{req.prompt!r} -> {req.target_new!r} (held out as {lab} case {cid})"
                          for req, (lab, cid) in both[:3])
        raise EditorError(f"the training records overlap the held-out (evaluation) records in {len(both)} edits: "
                          f"{shown}. Move train's offset past the held-out range (train: "
                          f"{', '.join(r.label() for r in spec.train)}; held_out: "
                          f"{', '.join(r.label() for r in spec.held_out)})")


def _records_digest(records: list[TrainingRecord]) -> str:
    h = hashlib.sha256()
    for rec in records:
        for x in (rec.request.prompt, rec.request.target_new, rec.paraphrase.prompt if rec.paraphrase else "",
                  f"{rec.locality.prompt}\x00{rec.locality.target}" if rec.locality else ""):
            h.update(x.encode() + b"\x00")
    return h.hexdigest()


def is_trained(spec: EditorSpec) -> bool:
    folder = folder_of(spec)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("spec_digest") == spec.digest() and manifest.get("weights_sha256") == weights_sha(folder)


class Trainer(Protocol):
    """One editor kind's training: its module, optimiser groups, and the loss of a batch of records
    (forward and backward done by :meth:`accumulate`, which returns the batch's loss parts)."""

    module: nn.Module
    parts: tuple[str, ...]
    grad_clip: float | None

    def param_groups(self) -> list[dict[str, Any]]: ...
    def accumulate(self, records: list[TrainingRecord]) -> dict[str, float]: ...
    def tensors(self) -> dict[str, torch.Tensor]: ...
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...
    def manifest(self) -> dict[str, Any]: ...


def _trainer(spec: EditorSpec, model: Model) -> Trainer:
    if isinstance(spec, MendSpec):
        return MendTrainer(spec, model)
    if isinstance(spec, SeracSpec):
        return SeracTrainer(spec, model)
    raise EditorError(f"no trainer for editor kind {spec.kind!r}")


def train_editor(spec: EditorSpec, *, model: Model | None = None, progress: bool = True, force: bool = False) -> Path:
    """Train (or find) the editor of ``spec``; returns its folder. Resumes from its checkpoint:
    batches depend only on the step and the checkpoint holds every tensor and Adam's state, so a
    resumed training ends where an uninterrupted one does."""
    folder = folder_of(spec)
    if not force and is_trained(spec):
        return folder
    if folder.exists():
        if not force:
            print(f"note: the cached editor at {folder} does not match its manifest; training again", file=sys.stderr)
        shutil.rmtree(folder)
    if model is None and spec.needs_model:
        model = load_model(spec.model)
    records = training_records(spec.train)
    if not records:
        raise EditorError(f"train: {', '.join(r.label() for r in spec.train)} holds no records")
    check_disjoint(spec, records)
    torch.manual_seed(spec.seed)
    trainer = _trainer(spec, model)
    groups = trainer.param_groups()
    opt = torch.optim.Adam(groups)
    by_id = {id(p): n for n, p in trainer.module.named_parameters()}
    names = [by_id[id(p)] for g in groups for p in g["params"]]
    ckpt = folder.with_name(folder.name + ".partial")
    start, losses, seconds = 0, [], 0.0
    identity = {"data_sha256": _records_digest(records),
                "model_fingerprint": model.base_fingerprint if spec.needs_model else None}
    if has_checkpoint(ckpt):
        state = json.loads((ckpt / "state.json").read_text())
        if any(state.get(k) != v for k, v in identity.items()):
            print(f"note: the checkpoint at {ckpt} was trained on other data or another model; starting again",
                  file=sys.stderr)
            clear_checkpoint(ckpt)
        else:
            trainer.load_tensors(load_file(str(ckpt / "weights.safetensors")))
            state = load_checkpoint(ckpt, {}, opt, names)
            start, losses, seconds = int(state["step"]), list(state["losses"]), float(state.get("seconds", 0.0))
            if progress:
                print(f"note: resuming the {spec.kind} editor at step {start} of {spec.steps}", file=sys.stderr)
    t0 = time.perf_counter() - seconds
    for step in range(start, spec.steps):
        torch.manual_seed(spec.seed * 1_000_003 + step)  # dropout and the like: a resumed step draws what it drew
        opt.zero_grad(set_to_none=True)
        parts = trainer.accumulate([records[i] for i in batch_at(step, len(records), spec.batch_size, spec.seed)])
        if not all(map(math.isfinite, parts.values())):
            raise EditorTrainingError(f"the {spec.kind} training loss is {parts} at step {step}; lower the learning "
                                      f"rate (lr={spec.lr}{', lr_lr=' + str(spec.lr_lr) if hasattr(spec, 'lr_lr') else ''}: "
                                      "editscope train-editor ... --lr, --set lr_lr=...)")
        if trainer.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(trainer.module.parameters(), trainer.grad_clip)
        opt.step()
        losses.append([step, *(round(parts[k], 5) for k in trainer.parts)])
        if (step + 1) % spec.checkpoint_every == 0 or step + 1 == spec.steps:
            save_checkpoint(ckpt, trainer.tensors(), opt, names, step + 1, losses,
                            extra={"seconds": time.perf_counter() - t0, **identity})
            if progress:
                shown = ", ".join(f"{k} {parts[k]:.4f}" for k in trainer.parts)
                print(f"{spec.kind} editor for {spec.model}: step {step + 1}/{spec.steps}: {shown}", file=sys.stderr)
    seconds = time.perf_counter() - t0
    tmp = folder.with_name(folder.name + ".writing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {k: v.contiguous() for k, v in trainer.tensors().items()}
    save_file(tensors, str(tmp / "editor.safetensors"))
    (tmp / "trained_on.json").write_text(json.dumps(sorted({edit_key(r.request) for r in records})))
    manifest = {
        "kind": spec.kind, "spec": spec.model_dump(mode="json"), "spec_digest": spec.digest(),
        "model": spec.model, "model_fingerprint": model.base_fingerprint if spec.needs_model else None,
        **trainer.manifest(),
        "train_records": len(records), "data_sha256": _records_digest(records),
        "loss_columns": ["step", *trainer.parts], "losses": losses, "train_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "editor_parameters": sum(p.numel() for p in trainer.module.parameters()),
        "editor_bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
        "weights_sha256": weights_sha(tmp),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder)
    clear_checkpoint(ckpt)
    return folder


def read_editor(folder: str | os.PathLike, kind: str) -> tuple[Path, dict[str, Any]]:
    """``(folder, manifest)`` of a finished editor of ``kind``, refused (naming the fix) when the
    folder holds no readable manifest or another kind of editor."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise EditorError(f"{folder} is not a trained editor (no readable {MANIFEST}); train one with "
                          f"`editscope train-editor {kind}`") from None
    if manifest.get("kind") != kind:
        raise EditorError(f"{folder} holds a {manifest.get('kind')} editor, not a {kind} one; give a {kind} editor "
                          f"folder (editscope train-editor {kind})")
    return folder, manifest


def refuse_trained_on(folder: Path, manifest: dict[str, Any], requests: list[EditRequest]) -> None:
    """Refuse requests the editor in ``folder`` was trained on (its ``trained_on.json``)."""
    trained = set(json.loads((folder / "trained_on.json").read_text()))
    seen = [r for r in requests if edit_key(r) in trained]
    if seen:
        raise EditorError(f"the {manifest['kind']} editor at {folder} was trained on the edit {seen[0].prompt!r} -> "
                          f"{seen[0].target_new!r}; evaluate it on records outside its training split "
                          f"({', '.join(RecordRange(**r).label() for r in manifest['spec']['train'])})")


class LoadedEditor:
    """A trained MEND editor ready to edit one model: the network, its manifest and its folder."""

    def __init__(self, editor: MendEditor, manifest: dict[str, Any], folder: Path):
        self.editor, self.manifest, self.folder = editor, manifest, folder

    def check(self, requests: list[EditRequest]) -> None:
        refuse_trained_on(self.folder, self.manifest, requests)


SPECS: dict[str, type[EditorSpec]] = {"mend": MendSpec, "serac": SeracSpec}


def trained_for(model: Model, kind: str = "mend") -> list[Path]:
    """Finished editors of ``kind`` in the cache that serve this model (trained for its base weights,
    or, for editors that read text only, any)."""
    root = cache_root() / "editors"
    out = []
    for folder in sorted(root.glob(f"{kind}-*")) if root.is_dir() else []:
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        if not SPECS[kind].needs_model or manifest.get("model_fingerprint") == model.base_fingerprint:
            out.append(folder)
    return out


def default_editor(model: Model, kind: str = "mend") -> Path:
    """The editor trained with the default settings for this model, else the only one that serves it."""
    spec = SPECS[kind](model=model.name)
    if is_trained(spec):
        return folder_of(spec)
    found = trained_for(model, kind)
    if len(found) == 1:
        return found[0]
    if not found:
        raise EditorError(f"no trained {kind} editor for {model.name}; train one with `editscope train-editor {kind} "
                          f"--model {model.name}` (or give hparams editor=FOLDER)")
    raise EditorError(f"{len(found)} trained {kind} editors for {model.name}: "
                      f"{', '.join(str(f) for f in found)}; choose one with hparams editor=FOLDER")


def load_editor(model: Model, where: str | os.PathLike | MendSpec | None = None) -> LoadedEditor:
    """The editor in folder ``where`` (trained for ``spec``; None: :func:`default_editor`), refused
    unless it was trained for this model's base weights."""
    if where is None:
        where = default_editor(model)
    if isinstance(where, MendSpec):
        if not is_trained(where):
            raise EditorError(f"no trained {where.kind} editor for {where.model} with these settings; train it with "
                              f"`editscope train-editor {where.kind} --model {where.model}`")
        where = folder_of(where)
    folder, manifest = read_editor(where, "mend")
    if manifest.get("model_fingerprint") != model.base_fingerprint:
        raise EditorError(f"the editor at {folder} was trained for {manifest.get('model')} (weights fingerprint "
                          f"{str(manifest.get('model_fingerprint'))[:12]}), not for {model.name} "
                          f"({model.base_fingerprint[:12]}); train one for this model")
    spec = MendSpec(**manifest["spec"])
    editor = build_editor(model, manifest["layers"], spec.rank, spec.n_hidden, spec.edit_lr)
    editor.load_tensors(load_file(str(folder / "editor.safetensors")))
    editor.to(model.device)
    return LoadedEditor(editor.eval(), manifest, folder)


__all__ = ["EditorError", "EditorSpec", "EditorTrainingError", "HELD_OUT", "LoadedEditor", "MendSpec", "SeracSpec", "RecordRange", "TRAIN",
           "SPECS", "default_editor", "edit_key", "read_editor", "refuse_trained_on", "folder_of", "is_trained", "load_editor", "trained_for", "train_editor", "training_records"]
