"""Resumable training, shared by derived models (:mod:`editscope.models.derive`) and trained editors
(:mod:`editscope.editors`): a batch order that depends only on the step, atomic safetensors
checkpoints of named tensors with Adam's state, and a content hash of a folder's weights.

A checkpoint is a folder: ``weights.safetensors`` (the trained tensors), ``adam.safetensors`` (Adam's
moments) and ``state.json`` (step, losses, Adam's step counts, anything JSON the caller adds). It is
written beside the old one and swapped in, so an interruption at any moment leaves one whole
checkpoint. Never pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def batch_at(step: int, n: int, size: int, seed: int) -> list[int]:
    """The training indices of ``step``: a seeded permutation per epoch, so the order depends only
    on the step (a resumed run sees the same batches)."""
    per_epoch = max(1, n // size)
    epoch, k = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(f"epoch/{seed}/{epoch}").shuffle(order)
    return order[k * size:(k + 1) * size] or order[:size]


def save_checkpoint(path: Path, tensors: Mapping[str, torch.Tensor], opt: torch.optim.Optimizer,
                    names: list[str], step: int, losses: list, extra: dict[str, Any] | None = None) -> None:
    """Write ``tensors`` and ``opt``'s Adam state (its parameters, in order, named by ``names``)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({n: t.detach().contiguous() for n, t in tensors.items()}, str(tmp / "weights.safetensors"))
    params = [p for g in opt.param_groups for p in g["params"]]
    moments, adam_steps = {}, {}
    for name, p in zip(names, params):
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                moments[f"{name}::{key}"] = st[key].contiguous()
        if "step" in st:
            adam_steps[name] = float(st["step"])
    save_file(moments, str(tmp / "adam.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "losses": losses, "adam_steps": adam_steps,
                                                **(extra or {})}))
    # swap without a moment where no whole checkpoint exists: the previous one waits in .old
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def has_checkpoint(path: Path) -> bool:
    """A whole checkpoint is at ``path`` (one killed mid-swap is recovered from its ``.old`` first)."""
    old = path.with_name(path.name + ".old")
    if not (path / "state.json").is_file() and (old / "state.json").is_file():
        os.replace(old, path)
    return (path / "state.json").is_file()


def load_checkpoint(path: Path, tensors: Mapping[str, torch.Tensor], opt: torch.optim.Optimizer,
                    names: list[str]) -> dict[str, Any]:
    """Copy a checkpoint into ``tensors`` (in place) and ``opt``; returns its ``state.json``."""
    state = json.loads((path / "state.json").read_text())
    saved = load_file(str(path / "weights.safetensors"))
    missing = sorted(set(tensors) - set(saved))  # (a caller may keep more in it than it restores here)
    if missing:
        raise ValueError(f"the checkpoint at {path} lacks tensors this run trains ({', '.join(missing[:3])}"
                         f"{', ...' if len(missing) > 3 else ''}): it is another run's; delete that folder to start over")
    with torch.no_grad():
        for n, t in tensors.items():
            t.copy_(saved[n])
    moments = load_file(str(path / "adam.safetensors"))
    params = [p for g in opt.param_groups for p in g["params"]]
    for name, p in zip(names, params):
        if name in state["adam_steps"]:
            opt.state[p] = {"step": torch.tensor(state["adam_steps"][name]),
                            "exp_avg": moments[f"{name}::exp_avg"].to(p.device),
                            "exp_avg_sq": moments[f"{name}::exp_avg_sq"].to(p.device)}
    return state


def clear_checkpoint(path: Path) -> None:
    """Remove a checkpoint and its swap leftovers."""
    for leftover in (path, path.with_name(path.name + ".old"), path.with_name(path.name + ".tmp")):
        shutil.rmtree(leftover, ignore_errors=True)


def weights_sha(folder: Path) -> str:
    """SHA-256 over every ``*.safetensors`` file of ``folder`` (sorted by name)."""
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


__all__ = ["batch_at", "clear_checkpoint", "has_checkpoint", "load_checkpoint", "save_checkpoint", "weights_sha"]
