"""What a :class:`~editscope.models.Model` computes besides its weights, typed and owned.

* content digests of tensors and weights (:func:`tensor_digests`, :func:`fingerprint_of`) and
  :func:`state_key`: the weights fingerprint combined with the identities of installed
  interventions, the key every cache of model outputs uses;
* :class:`StateWatch`: a cheap check that a model still computes what it did;
* :class:`ModelState`: the per-subsystem state a model carries between calls (edit stack,
  memos, caches, lifelong statistics), one typed field per subsystem, each written only by the
  module its comment names.

This module sits below :mod:`editscope.models.model` and :mod:`editscope.interventions`; both
import it, neither is imported by it (see docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:  # annotations only: these modules sit above this one
    from ..methods.handle import EditHandle
    from .model import Model


def tensor_digest(t: torch.Tensor) -> str:
    """Content hash of one tensor (shape, dtype and bytes); 32 hex chars."""
    h = hashlib.blake2b(digest_size=16)
    t = t.detach()
    h.update(f"{tuple(t.shape)}|{t.dtype}".encode())
    flat = t.contiguous().view(-1)
    if flat.numel():
        h.update(flat.view(torch.uint8).cpu().numpy())  # buffer protocol: no copy; hashlib drops the GIL
    return h.hexdigest()


def tensor_digests(module: nn.Module) -> dict[str, str]:
    """Per-tensor content hashes (name -> :func:`tensor_digest`) of every parameter and buffer.

    Cost: one pass over the weights, hashed on all cores (about 0.4 s for 135M fp32 parameters on 2).
    """
    items = list(module.state_dict(keep_vars=False).items())
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(lambda kv: tensor_digest(kv[1]), items))
    return {name: d for (name, _), d in zip(items, digests)}


def fingerprint_of(digests: dict[str, str]) -> str:
    """One hash of a :func:`tensor_digests` mapping (names included)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(digests):
        h.update(f"{name}={digests[name]};".encode())
    return h.hexdigest()


def weights_fingerprint(module: nn.Module) -> str:
    """Content hash of every parameter and buffer (names, shapes, dtypes, bytes); 32 hex chars.

    Two models get the same fingerprint iff their weights are bit-identical (up to hash collisions).
    """
    return fingerprint_of(tensor_digests(module))


@dataclass
class StateWatch:
    """What a model computed at one moment, checked again cheaply: per-tensor version counters
    (bumped by every in-place write) and content digests, plus the installed interventions.

    :meth:`holds` re-hashes only the tensors written since (an edit and its undo touch a few), so
    results computed on some weights can be reused exactly while the weights are bit-identical.
    """

    versions: dict[str, int]
    digests: dict[str, str]
    interventions: dict[str, str]

    @classmethod
    def take(cls, model: Model) -> StateWatch:
        live = model.hf.state_dict(keep_vars=True)
        return cls({n: t._version for n, t in live.items()}, tensor_digests(model.hf), model.intervention_identities())

    def holds(self, model: Model) -> bool:
        """True iff every tensor is bit-identical to when the watch was taken and the same
        interventions are installed."""
        live = model.hf.state_dict(keep_vars=True)
        if live.keys() != self.versions.keys() or model.intervention_identities() != self.interventions:
            return False
        return all(t._version == self.versions[n] or tensor_digest(t) == self.digests[n] for n, t in live.items())


class InstalledIntervention(Protocol):
    """What the model needs of an installed intervention (:mod:`editscope.interventions`)."""

    def identity(self) -> str: ...

    def first_layer(self, model: Model) -> int: ...


def state_key(weights: str, interventions: dict[str, str]) -> str:
    """What a model computes, as one key: ``weights`` (a weights fingerprint) when nothing is
    installed, else a hash of it and the sorted ``site -> identity`` of the installed interventions."""
    if not interventions:
        return weights
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([weights, sorted(interventions.items())]).encode())
    return h.hexdigest()


@dataclass
class ModelState:
    """State a model carries between calls, one field per subsystem; each is written only by its
    owner (named per field) and read elsewhere only through that owner's functions.

    Everything here describes the loaded model and the edits on it; none of it is saved with
    weights. Caches key on :meth:`Model.state_key` or hold a :class:`StateWatch`, so a stale entry
    is never served.
    """

    #: how the model was loaded (``source``, ``revision``); owner: :mod:`editscope.models.model`
    provenance: dict[str, Any] = field(default_factory=dict)
    #: tensor name -> digest of the weights as loaded, taken on first use; owner: ``Model.base_fingerprint``
    base_digests: dict[str, str] | None = None
    #: applied, not undone edits, oldest first; owner: :mod:`editscope.methods.handle`
    edit_stack: list[EditHandle] = field(default_factory=list)
    #: values derived from the base model and settings (context templates, null-space
    #: projectors), keyed by a tuple naming them; owner: :mod:`editscope.methods.locate`
    memo: dict[tuple, Any] = field(default_factory=dict)
    #: MLP key second moments by statistics key; owner: :mod:`editscope.covariance`
    key_stats: dict[str, Any] = field(default_factory=dict)
    #: target residuals optimised ahead for the single protocol; owner: :mod:`editscope.methods.locate`
    prepared_residuals: dict[tuple, Any] = field(default_factory=dict)
    #: layer -> (handle id, keys) of AlphaEdit edits in place; owner: :class:`editscope.methods.locate.AlphaEdit`
    alphaedit_keys: dict[int, list[tuple[int, torch.Tensor]]] = field(default_factory=dict)
    #: placebo-matched deltas of recent units; owner: :mod:`editscope.methods.controls`
    matched_deltas: dict[tuple, Any] = field(default_factory=dict)
    #: (sequences key, layer) -> hidden states kept for incremental evaluation; owner: :mod:`editscope.scoring`
    layer_caches: dict[tuple[str, int], Any] = field(default_factory=dict)
    #: module shape -> UltraEdit's lifelong normalisation statistics; owner: :mod:`editscope.methods.ultraedit`
    lifelong_stats: dict[tuple[int, int], Any] = field(default_factory=dict)


__all__ = ["InstalledIntervention", "ModelState", "StateWatch", "fingerprint_of", "state_key", "tensor_digest",
           "tensor_digests", "weights_fingerprint"]
