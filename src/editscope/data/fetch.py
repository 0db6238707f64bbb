"""Finding, fetching and verifying evaluation data (:mod:`editscope.data.registry`).

A layout path (``wikitext2/wiki.test.raw``) resolves in one order everywhere:

1. ``$EDITSCOPE_DATA`` (a folder of the same layout);
2. the development folder ``<shared>/data`` (``$EDITSCOPE_SHARED``, else ``../shared`` beside the
   repository; an empty ``EDITSCOPE_SHARED=`` turns it off);
3. the user cache (``<cache>/data``), each file checked against its registry hash once per process;
4. a download from the registry's pinned source (pooch: streamed to a temporary file in the cache,
   hash-checked, then moved into place, so an interrupted or corrupt download leaves nothing), and
   the registry's converter where editscope reads another form. Not when offline
   (``EDITSCOPE_OFFLINE=1``, or ``HF_HUB_OFFLINE=1`` without a mirror in ``$EDITSCOPE_DATA_URL``).

A file given by path is the caller's (an explicit path comes first of all) and is recorded with its
hash (:func:`record_user_file`); every file resolved here is recorded too (:func:`used_files`), and
the runner writes both into the run's manifest. Failures are :class:`DataError` (exit code 3), one
line naming the dataset, the location and the fix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import EXIT_DATA, CacheDirError, EditscopeError
from ..paths import cache_root, sha256_file as sha256_of, shared_dir
from .convert import CONVERTERS
from .registry import DATASETS, ENV_URL, DataFile, Dataset, file_for

ENV_DATA = "EDITSCOPE_DATA"
ENV_OFFLINE = "EDITSCOPE_OFFLINE"

#: verified cache files: (path, size, mtime_ns) -> sha256
_VERIFIED: dict[tuple[str, int, int], str] = {}
#: files read this process: layout path or user path -> {"path", "sha256", "origin"}
_USED: dict[str, dict[str, str]] = {}


class DataError(EditscopeError, FileNotFoundError):
    """Evaluation data that cannot be found, fetched or trusted (exit code 3)."""

    exit_code = EXIT_DATA


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def data_folders() -> list[tuple[str, Path]]:
    """The folders searched before the cache, in order: (label, folder)."""
    out = []
    env = os.environ.get(ENV_DATA, "").strip()
    if env:
        out.append((f"${ENV_DATA}", Path(env).expanduser()))
    shared = shared_dir()
    if shared is not None:
        out.append(("the shared folder", shared / "data"))
    return out


def cache_dir() -> Path:
    """Where fetched data lives: ``<cache>/data`` (same layout)."""
    return cache_root() / "data"


def offline() -> bool:
    """No downloads: ``EDITSCOPE_OFFLINE=1``, or ``HF_HUB_OFFLINE=1`` unless a mirror is set."""
    if os.environ.get(ENV_OFFLINE, "") not in ("", "0"):
        return True
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") and not os.environ.get(ENV_URL, "").strip()


def _record(key: str, path: Path, origin: str, digest: str | None = None) -> None:
    if key not in _USED:
        _USED[key] = {"path": str(path), "sha256": digest or sha256_of(path), "origin": origin}


def record_user_file(path: str | os.PathLike) -> None:
    """Note a file the user named by path (recorded with its hash in the run's manifest)."""
    p = Path(path).expanduser()
    if p.is_file():
        _record(str(p.resolve()), p, "user file")


def used_files() -> dict[str, dict[str, str]]:
    """Every data file this process read through editscope: key -> path, sha256, origin."""
    return {k: dict(v) for k, v in _USED.items()}


def _verified(path: Path, entry: DataFile, ds: Dataset) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        found = sha256_of(path)
        if found != entry.final_sha256:
            raise DataError(f"{ds.name}: the cached {path} has SHA-256 {found[:16]}..., expected "
                            f"{entry.final_sha256[:16]}... (damaged or replaced); fetch it again: editscope data "
                            f"fetch {ds.name} --force")
        _VERIFIED[key] = found
    return _VERIFIED[key]


def _missing(rel: str, entry: tuple[Dataset, DataFile] | None, why: str) -> DataError:
    where = " or ".join(f"{label} {folder}" for label, folder in data_folders()) or f"any data folder (${ENV_DATA})"
    if entry is None:
        return DataError(f"{rel}: not found ({where}, cache {cache_dir()}) and not a registry file; pass its path "
                         f"explicitly, or set {ENV_DATA}=/folder/holding/{rel}")
    ds, f = entry
    return DataError(f"{ds.name} ({rel}, {_mb(f.size)}) is not in {where} or the cache {cache_dir()}, and {why}; source "
                     f"{f.url}. Fetch it: editscope data fetch {ds.name} (online), or editscope data fetch "
                     f"{ds.name} --from DIR (a folder with the files)")


def locate(rel: str, *, download: bool = True, progress: bool = True) -> Path:
    """The file at layout path ``rel``, found or fetched (see the module docstring)."""
    for label, folder in data_folders():
        p = folder / rel
        if p.is_file():
            _record(rel, p, label)
            return p
    entry = file_for(rel)
    cached = cache_dir() / rel
    if cached.is_file():
        if entry is None:
            _record(rel, cached, "cache")
            return cached
        _record(rel, cached, "cache", _verified(cached, entry[1], entry[0]))
        return cached
    if entry is None:
        raise _missing(rel, None, "")
    if not download:
        raise _missing(rel, entry, "downloads are off here")
    if offline():
        raise _missing(rel, entry, f"this machine is offline ({ENV_OFFLINE} or HF_HUB_OFFLINE is set)")
    ds = entry[0]
    for f in ds.files:  # a dataset's files are read together (PIQA's labels beside its questions)
        if f is not entry[1] and not (cache_dir() / f.path).is_file():
            fetch_file(ds, f, progress=progress)
    path = fetch_file(ds, entry[1], progress=progress)
    _record(rel, path, "download")
    return path


def data_path(*parts: str) -> Path:
    """An evaluation data file by its layout path (``data_path("wikitext2", "wiki.test.raw")``):
    found in ``$EDITSCOPE_DATA``, the shared folder or the cache, or fetched from its public source
    (:func:`locate`); a :class:`DataError` that names the dataset, its source and the fetch
    command otherwise."""
    return locate("/".join(parts))


def _install(ds: Dataset, f: DataFile, raw: Path, target: Path) -> Path:
    """Convert (when the registry says so), check the result's hash and move it into place
    atomically; ``raw`` is a verified download or copy, removed afterwards."""
    try:
        if f.convert is None:
            os.replace(raw, target)
            return target
        out = CONVERTERS[f.convert](raw.read_bytes())
        found = hashlib.sha256(out).hexdigest()
        if found != f.final_sha256:
            raise DataError(f"{ds.name}: converting {f.source_path} with {f.convert} gave SHA-256 {found[:16]}..., "
                            f"expected {f.final_sha256[:16]}...; report this (editscope's converter changed)")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(out)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return target
    finally:
        if raw.exists():
            raw.unlink()


def _target(ds: Dataset, f: DataFile) -> Path:
    try:
        target = cache_dir() / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
    except (CacheDirError, OSError) as e:
        raise DataError(f"{ds.name}: cannot write the data cache ({e.strerror if isinstance(e, OSError) and e.strerror else e}); "
                        "point EDITSCOPE_CACHE at a writable folder") from None
    if not os.access(target.parent, os.W_OK):
        raise DataError(f"{ds.name}: the data cache {target.parent} is read-only; point EDITSCOPE_CACHE at a writable "
                        "folder, or use a data folder: EDITSCOPE_DATA=/path")
    return target


def fetch_file(ds: Dataset, f: DataFile, *, progress: bool = True) -> Path:
    """Download ``f`` from its source (or ``$EDITSCOPE_DATA_URL``'s mirror) into the cache."""
    import pooch
    import requests

    target = _target(ds, f)
    url = f.url
    pooch.get_logger().setLevel("WARNING")  # the progress bar and this line say it
    if progress:
        print(f"fetching {ds.name}: {f.path} ({_mb(f.size)}) from {url}", file=sys.stderr)
    partial = target.parent / f".{target.name}.download"
    try:
        if url.startswith("file://"):
            src = Path(url.removeprefix("file://"))
            if not src.is_file():
                raise DataError(f"{ds.name}: the mirror has no {src}; check {ENV_URL}")
            shutil.copyfile(src, partial)
            _check_hash(ds, f, partial, url)
        else:
            pooch.retrieve(url, known_hash=f"sha256:{f.sha256}", fname=partial.name, path=partial.parent,
                           progressbar=progress, downloader=pooch.HTTPDownloader(progressbar=progress, timeout=60))
    except ValueError as e:  # pooch: the hash of the downloaded file differs (the temporary file is gone)
        if isinstance(e, DataError):
            raise
        raise DataError(f"{ds.name}: the download from {url} does not have the registry's SHA-256 "
                        f"{f.sha256[:16]}... (truncated or changed at the source; nothing was kept): {_first(e)}. "
                        f"Try again, or fetch it from a folder: editscope data fetch {ds.name} --from DIR") from None
    except requests.exceptions.HTTPError as e:
        raise DataError(f"{ds.name}: the server answered {e.response.status_code if e.response is not None else '?'} "
                        f"for {url}; try again later, or fetch it from a folder: editscope data fetch {ds.name} "
                        "--from DIR") from None
    except requests.exceptions.RequestException as e:
        raise DataError(f"{ds.name}: cannot reach {url} ({type(e).__name__}: offline?); fetch it from a folder: "
                        f"editscope data fetch {ds.name} --from DIR") from None
    except OSError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{ds.name}: writing {partial} failed ({e.strerror or e}); point EDITSCOPE_CACHE at a "
                        "writable folder with space") from None
    return _install(ds, f, partial, target)


def _first(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _check_hash(ds: Dataset, f: DataFile, path: Path, where: str) -> None:
    found = sha256_of(path)
    if found != f.sha256:
        path.unlink()
        raise DataError(f"{ds.name}: {where} has SHA-256 {found[:16]}..., the registry expects {f.sha256[:16]}... "
                        f"({f.repo}@{f.commit[:10]}:{f.source_path}); nothing was kept")


def install_from(ds: Dataset, folder: Path) -> list[Path]:
    """Install ``ds`` from a folder holding its files (each found under its layout path, its
    source path or its file name; published or already converted form), hash-checked."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"--from {folder}: not a folder")
    out = []
    for f in ds.files:
        names = (f.path, f.source_path, Path(f.source_path).name, Path(f.path).name)
        found = next((folder / n for n in names if (folder / n).is_file()), None)
        if found is None:
            raise DataError(f"{ds.name}: {folder} has none of {', '.join(dict.fromkeys(names))}")
        target = _target(ds, f)
        partial = target.parent / f".{target.name}.copy"
        shutil.copyfile(found, partial)
        digest = sha256_of(partial)
        if f.convert is not None and digest == f.final_sha256:  # already in the form editscope reads
            os.replace(partial, target)
        else:
            _check_hash(ds, f, partial, str(found))
            _install(ds, f, partial, target)
        out.append(target)
    return out


def status(ds: Dataset) -> str:
    """Where ``ds`` would be read from now: a folder's label, ``cached``, or ``missing``."""
    for label, folder in data_folders():
        if all((folder / f.path).is_file() for f in ds.files):
            return label.removeprefix("the ")
    if all((cache_dir() / f.path).is_file() for f in ds.files):
        return "cached"
    return "missing"


def verify(ds: Dataset) -> list[tuple[str, str, str]]:
    """Each file of ``ds`` found (folder or cache): (path, "ok" / "differs" / "missing", detail).
    A folder file that differs is the folder owner's (a subset, a newer copy): reported, not refused."""
    out = []
    for f in ds.files:
        hit = next(((label, folder / f.path) for label, folder in data_folders() if (folder / f.path).is_file()),
                   ("cache", cache_dir() / f.path) if (cache_dir() / f.path).is_file() else None)
        if hit is None:
            out.append((f.path, "missing", ""))
            continue
        label, p = hit
        found = sha256_of(p)
        ok = found == f.final_sha256
        out.append((f.path, "ok" if ok else "differs",
                    f"{label}: {p}" + ("" if ok else f" (SHA-256 {found[:16]}..., registry {f.final_sha256[:16]}...)")))
    return out


def write_mirror(out: str | os.PathLike, names: list[str] | None = None) -> list[tuple[str, str]]:
    """Copy the published files found here (data folders, cache) into ``out`` in the sources'
    layout (``<owner>/<repo>/<commit>/<path>``), for ``$EDITSCOPE_DATA_URL`` on machines without
    internet (serve ``out`` over HTTP). Only files whose hash is the published one are copied (a
    folder's subset, or a converted file, cannot stand in for the source). Returns (layout path,
    "copied" / why not) per file."""
    root = Path(out).expanduser()
    report = []
    for ds in (DATASETS[n] for n in names) if names else DATASETS.values():
        for f in ds.files:
            cands = [folder / f.path for _, folder in data_folders()] + [cache_dir() / f.path]
            src = next((p for p in cands if p.is_file() and sha256_of(p) == f.sha256), None)
            if src is None:
                why = "converted here; its published form is not" if f.convert else "no copy with the published hash"
                report.append((f.path, why))
                continue
            dst = root / f.repo / f.commit / f.source_path
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            report.append((f.path, "copied"))
    return report


def fetch(ds: Dataset, *, force: bool = False, progress: bool = True) -> list[tuple[str, str]]:
    """Make every file of ``ds`` available: (path, where from) per file; ``force`` re-downloads
    cached files."""
    out = []
    for f in ds.files:
        if force:
            (cache_dir() / f.path).unlink(missing_ok=True)
            _VERIFIED.clear()
        p = locate(f.path, progress=progress)
        out.append((f.path, str(p)))
    return out


__all__ = ["DATASETS", "ENV_DATA", "ENV_OFFLINE", "DataError", "cache_dir", "data_folders", "data_path", "fetch", "fetch_file",
           "install_from", "locate", "offline", "record_user_file", "sha256_of", "status", "used_files", "verify",
           "write_mirror"]
