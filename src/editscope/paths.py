"""Where editscope finds the shared evaluation data (never copied into the repo) and keeps its cache."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CacheDirError

ENV_SHARED = "EDITSCOPE_SHARED"


def shared_dir() -> Path:
    """The shared folder: ``$EDITSCOPE_SHARED``, else ``../shared`` beside the repository root."""
    env = os.environ.get(ENV_SHARED)
    if env:
        return Path(env).expanduser()
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


def data_path(*parts: str) -> Path:
    """A path under ``<shared>/data``; a clear error when it does not exist."""
    p = shared_dir() / "data" / Path(*parts)
    if not p.exists():
        raise FileNotFoundError(
            f"{p} does not exist. editscope reads evaluation data from the shared folder "
            f"({shared_dir()}); set {ENV_SHARED}=/path/to/shared or pass the file path explicitly."
        )
    return p


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
