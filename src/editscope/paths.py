"""Where editscope finds the development folder (never copied into the repo) and keeps its cache; evaluation
data itself resolves through :mod:`editscope.data`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import CacheDirError

ENV_SHARED = "EDITSCOPE_SHARED"


def shared_dir() -> Path | None:
    """The development folder: ``$EDITSCOPE_SHARED``, else ``../shared`` beside the repository root;
    None when ``EDITSCOPE_SHARED`` is set empty (as on a user's machine: data then comes from
    ``$EDITSCOPE_DATA``, the cache or its public source, :mod:`editscope.data`)."""
    env = os.environ.get(ENV_SHARED)
    if env is not None:
        return Path(env).expanduser() if env.strip() else None
    repo_root = Path(__file__).resolve().parents[2]  # src/editscope/paths.py -> repo root
    return repo_root.parent / "shared"


def file_in_the_way(path: str | Path) -> Path | None:
    """The first of ``path`` and its parents that exists but is not a folder: a file where a
    folder must be (``notes.txt`` for ``notes.txt/run``); None when every existing one is a folder."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            return None if q.is_dir() else q
    return None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
