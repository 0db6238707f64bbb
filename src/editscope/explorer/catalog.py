"""The runs an explorer serves, by id: each a run folder (or an exported archive, unpacked into a
temporary folder), opened read-only, loaded once and reloaded in the background when its store
changes (a study still being written).

Nothing in a request names a file: the app looks runs up by the ids given here, so a path in a
URL (``..`` or otherwise) can only miss.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..report.data.results import StudyResults, load_results
from ..runner.store import FILENAME, ResultsStore, StoreError, unpack_archive
from .views import warm

#: how often (seconds) a request may look at a store's size and time to see whether it changed
CHECK_EVERY = 2.0
ARCHIVE_SUFFIX = ".sqlite.xz"


class NotARunError(InputError):
    """A folder or file given to the explorer that holds no editscope run."""


def run_id(name: str, taken: set[str]) -> str:
    """A URL-safe id for a run named ``name``, unique among ``taken``."""
    base = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "run"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}-{k}", k + 1
    return out


@dataclass
class ServedRun:
    """One run: :meth:`results` is the latest complete load of its store."""

    id: str
    source: Path  # what the user gave: a run folder or an archive
    folder: Path  # the run folder read (an archive's temporary one)
    _results: StudyResults | None = None
    _error: str | None = None
    _stamp: tuple[int, ...] | None = None
    _checked: float = 0.0
    _loading: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stamp(self) -> tuple[int, ...]:
        """Size and modification time of the store and its write-ahead log: they change with every write."""
        out: list[int] = []
        for p in (self.folder / FILENAME, self.folder / f"{FILENAME}-wal"):
            try:
                st = p.stat()
                out += [st.st_size, st.st_mtime_ns]
            except FileNotFoundError:  # no log (or it was just checkpointed away)
                out += [0, 0]
        return tuple(out)

    def load(self) -> None:
        """Read the store now (blocking). A run that has no finished unit yet is kept with its
        reason (shown as waiting) rather than refused: its study may be starting. A reload that
        fails keeps the last good load (and says why); the next change of the store retries."""
        res, err, stamp = None, None, None
        try:
            stamp = self.stamp()
            res = load_results(self.folder, read_only=True)
            warm(res)
        except StoreError as e:
            err = str(e)
        except Exception as e:  # noqa: BLE001 - a half-written store must not end the reloads
            err = f"could not read the store ({type(e).__name__}: {e})"
        finally:
            with self._lock:
                if res is not None or self._results is None:
                    self._results = res
                self._error, self._stamp, self._loading = err, stamp, False
                self._checked = time.monotonic()

    def refresh(self) -> None:
        """Reload in a background thread when the store changed since the last load (checked at
        most every :data:`CHECK_EVERY` seconds); requests meanwhile see the previous load."""
        with self._lock:
            now = time.monotonic()
            if self._loading or now - self._checked < CHECK_EVERY:
                return
            self._checked = now
            if self.stamp() == self._stamp:
                return
            self._loading = True
        threading.Thread(target=self.load, name=f"reload-{self.id}", daemon=True).start()

    def results(self) -> StudyResults | None:
        """The last load (None: the store has no finished unit yet; see :attr:`error`)."""
        self.refresh()
        return self._results

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def reloading(self) -> bool:
        return self._loading

    def status(self) -> str:
        """``complete``, ``in progress`` (its study is still writing it, or stopped before the end)
        or ``waiting`` (no finished unit yet)."""
        res = self._results
        if res is None:
            return "waiting"
        return "in progress" if res.partial else "complete"


class RunCatalog:
    """The served runs by id, in the order given."""

    def __init__(self, sources: list[str | Path]):
        self._tmp: Path | None = None
        self.runs: dict[str, ServedRun] = {}
        for src in sources:
            path = Path(src)
            folder = self._folder_of(path)
            name = path.name.removesuffix(ARCHIVE_SUFFIX) if path.is_file() else path.resolve().name
            rid = run_id(name, set(self.runs))
            self.runs[rid] = ServedRun(rid, path, folder)

    def _folder_of(self, path: Path) -> Path:
        if path.is_dir():
            if not (path / FILENAME).is_file():
                raise NotARunError(f"{path}: not a run folder (no {FILENAME}); give folders written by `editscope run` "
                                   f"or archives written by `editscope export` (*{ARCHIVE_SUFFIX})")
            try:
                ResultsStore(path / FILENAME, read_only=True).close()
            except StoreError as e:
                raise NotARunError(str(e)) from None
            return path
        if path.is_file() and path.name.endswith(ARCHIVE_SUFFIX):
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="editscope-serve-"))
            return unpack_archive(path, self._tmp / f"{len(self.runs):03d}-{path.name.removesuffix(ARCHIVE_SUFFIX)}")
        if path.exists():
            raise NotARunError(f"{path}: not a run folder or a run archive (*{ARCHIVE_SUFFIX}); give folders written by "
                               "`editscope run` or archives written by `editscope export`")
        raise NotARunError(f"{path}: no such folder or file; give run folders (e.g. runs/two-plus-two) or archives "
                           f"(*{ARCHIVE_SUFFIX})")

    def load_all(self) -> None:
        for run in self.runs.values():
            run.load()

    def get(self, rid: str) -> ServedRun | None:
        return self.runs.get(rid)

    def close(self) -> None:
        """Remove the folders archives were unpacked into."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


__all__ = ["CHECK_EVERY", "NotARunError", "RunCatalog", "ServedRun", "run_id"]
