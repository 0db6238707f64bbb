"""The results store: one SQLite file per run folder (``results.sqlite``).

Tables:

* ``meta`` (key, value): store format, config hash and JSON, library/torch/transformers versions,
  base model fingerprint, seed, created/finished times, status (``running``/``complete``).
* ``units`` (one row per unit of work: the base evaluation, one edit (single), one batch, one
  sequential step): method label, unit name, step, edit indices, status (``done``, ``failed``:
  the edit was rolled back, ``skipped``: the collapse guard undid it, ``stopped``: the guard
  ended the run), seconds, model fingerprint after the unit, info JSON.
* ``rows`` (one row per probe evaluation of a unit: the fields of
  :class:`editscope.evaluation.EvalResult` rows), ``scalars`` (perplexity, downstream accuracies
  of a unit), ``events`` (guard actions, rolled-back edits).

Formats: ``editscope-results-1`` keeps ``rows`` as a table (every prompt, target and base output
again per unit). ``editscope-results-2`` (new stores) keeps what does not change from unit to unit
once, in ``probes`` (probe set, index, a digest of the rest: edit index, category, prompt, target, meta, the base
model's log-probability, top-1, greedy text and margin), and per unit only what it measured, in
``measures`` (the greedy text only where it differs from the base's); ``rows`` is then a view
with the columns of format 1, so every reader works on both. Both are read and resumed.

A unit is written in one transaction together with everything it measured, so a killed run
loses at most the unit in flight and a resumed run neither loses nor duplicates rows.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..paths import file_in_the_way
from ..probe_versions import row_digest

STORE_FORMAT = "editscope-results-2"
#: every format this version reads and resumes (new stores are written in STORE_FORMAT)
STORE_FORMATS = ("editscope-results-1", STORE_FORMAT)
FILENAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY, method TEXT NOT NULL, unit TEXT NOT NULL, step INTEGER NOT NULL,
    edits TEXT NOT NULL, status TEXT NOT NULL, seconds_edit REAL, seconds_eval REAL,
    fingerprint TEXT, info TEXT NOT NULL, UNIQUE(method, unit));
CREATE TABLE IF NOT EXISTS scalars (
    unit_id INTEGER NOT NULL REFERENCES units(id), name TEXT NOT NULL, value REAL, detail TEXT NOT NULL,
    PRIMARY KEY(unit_id, name));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, unit_id INTEGER REFERENCES units(id), kind TEXT NOT NULL, detail TEXT NOT NULL);
"""

_ROWS_TABLE_V1 = """
CREATE TABLE IF NOT EXISTS rows (
    unit_id INTEGER NOT NULL REFERENCES units(id), probe_set TEXT NOT NULL, probe_index INTEGER NOT NULL,
    edit_index INTEGER, category TEXT NOT NULL, prompt TEXT NOT NULL, target TEXT NOT NULL, meta TEXT NOT NULL,
    logprob REAL, n_tokens INTEGER, top1 INTEGER, alt_kind TEXT, alt_logprob REAL, base_logprob REAL,
    base_top1 INTEGER, unchanged INTEGER, kl REAL, says_target INTEGER, greedy TEXT, base_greedy TEXT,
    is_base INTEGER, base_margin REAL, token_acc REAL, token_agree REAL, probe_digest TEXT,
    PRIMARY KEY(unit_id, probe_set, probe_index));
"""

#: format 2: the fields of a row that depend only on the probe (and the base model), and the rest
PROBE_FIELDS = ("edit_index", "category", "prompt", "target", "meta", "base_logprob", "base_top1", "base_greedy",
                "base_margin", "probe_digest")
MEASURE_FIELDS = ("logprob", "n_tokens", "top1", "alt_kind", "alt_logprob", "unchanged", "kl", "says_target",
                  "greedy", "is_base", "token_acc", "token_agree")

_ROWS_TABLES_V2 = """
CREATE TABLE IF NOT EXISTS probes (
    id INTEGER PRIMARY KEY, probe_set TEXT NOT NULL, probe_index INTEGER NOT NULL, digest TEXT NOT NULL,
    edit_index INTEGER, category TEXT NOT NULL, prompt TEXT NOT NULL, target TEXT NOT NULL, meta TEXT NOT NULL,
    base_logprob REAL, base_top1 INTEGER, base_greedy TEXT, base_margin REAL, probe_digest TEXT,
    UNIQUE(probe_set, probe_index, digest));
CREATE TABLE IF NOT EXISTS measures (
    unit_id INTEGER NOT NULL REFERENCES units(id), probe_set TEXT NOT NULL, probe_index INTEGER NOT NULL,
    probe_id INTEGER NOT NULL REFERENCES probes(id), logprob REAL, n_tokens INTEGER, top1 INTEGER, alt_kind TEXT, alt_logprob REAL, unchanged INTEGER, kl REAL,
    says_target INTEGER, greedy TEXT, is_base INTEGER, token_acc REAL, token_agree REAL,
    PRIMARY KEY(unit_id, probe_set, probe_index));
"""

#: format 2's ``rows`` view (recreated when a store written before a measured column existed is opened)
_ROWS_VIEW_V2 = """
CREATE VIEW rows AS
    SELECT m.unit_id, m.probe_set, m.probe_index, p.edit_index, p.category, p.prompt, p.target, p.meta,
           m.logprob, m.n_tokens, m.top1, m.alt_kind, m.alt_logprob, p.base_logprob, p.base_top1, m.unchanged,
           m.kl, m.says_target, COALESCE(m.greedy, p.base_greedy) AS greedy, p.base_greedy, m.is_base,
           p.base_margin, m.token_acc, m.token_agree, p.probe_digest
    FROM measures m JOIN probes p ON p.id = m.probe_id;
"""

#: the keys of a stored row before its :data:`ROW_FIELDS`
ROW_KEYS = ("method", "unit", "step", "probe_set", "index", "edit_index")
ROW_FIELDS = ("category", "prompt", "target", "meta", "logprob", "n_tokens", "top1", "alt_kind", "alt_logprob",
              "base_logprob", "base_top1", "unchanged", "kl", "says_target", "greedy", "base_greedy", "is_base",
              "base_margin", "token_acc", "token_agree", "probe_digest")
#: columns added after a table was first written, with their SQL type: added in place to older
#: stores (whose rows then read None there), per table
_ADDED_COLUMNS = {"rows": {"base_margin": "REAL", "token_acc": "REAL", "token_agree": "REAL", "probe_digest": "TEXT"},
                  "measures": {"token_acc": "REAL", "token_agree": "REAL"}, "probes": {"probe_digest": "TEXT"}}
BOOL_FIELDS = {"top1", "base_top1", "unchanged", "says_target", "is_base"}


class StoreError(InputError, RuntimeError):
    """A results file that is not ours, or belongs to another study."""


@dataclass(frozen=True)
class Unit:
    id: int
    method: str
    unit: str
    step: int
    edits: list[int]
    status: str
    seconds_edit: float | None
    seconds_eval: float | None
    fingerprint: str | None
    info: dict[str, Any]


class ResultsStore:
    """Open (or create) ``<run_dir>/results.sqlite``; see the module docstring for the tables."""

    def __init__(self, path: str | Path, *, create: bool = False, read_only: bool = False):
        """``read_only``: open for reading only (SQLite refuses every write; no schema upgrade):
        what a viewer of someone's runs needs. A store written before a column existed must then
        be opened once read-write (``editscope report RUN``) to be upgraded."""
        if create and read_only:
            raise ValueError("a results store cannot be created read-only")
        self.path = Path(path)
        blocker = file_in_the_way(self.path.parent)
        if blocker is not None:
            raise StoreError(f"{blocker}: is a file, not a run folder; give the folder `editscope run --out` wrote")
        if not self.path.is_file():
            if self.path.exists():
                raise StoreError(f"{self.path}: is not a file, not an editscope results store; move it away or pick "
                                 "another --out folder")
            if not create:
                raise StoreError(f"{self.path}: no results store here (run `editscope run` first)")
            _create_store_file(self.path)
        _check_ours(self.path, read_only=read_only)  # every store opened below carries its format row
        self._probe_ids: dict[tuple[str, int, str], int] = {}
        if read_only:
            self.db = _connect_read_only(self.path, isolation_level=None)
            self.format = self.get_meta("format")
            self._require_current_columns()
            return
        self.db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions only
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.format = self.get_meta("format")
        if self.format == STORE_FORMAT:
            self.db.executescript(_ROWS_TABLES_V2)
            added = self._add_columns("measures") | self._add_columns("probes")
            view = {r[1] for r in self.db.execute("PRAGMA table_info(rows)")}
            if added or not set(ROW_FIELDS) <= view:
                self.db.executescript("DROP VIEW IF EXISTS rows;" + _ROWS_VIEW_V2)
        else:
            self.db.executescript(_ROWS_TABLE_V1)
            self._add_columns("rows")

    def _add_columns(self, table: str) -> bool:
        """Add :data:`_ADDED_COLUMNS` ``table`` lacks (a store written before they existed); True if any."""
        have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
        missing = [(c, k) for c, k in _ADDED_COLUMNS[table].items() if c not in have]
        for col, kind in missing:
            self.db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {kind}")
        return bool(missing)

    def _require_current_columns(self) -> None:
        # the rows table (format 1) or view (format 2, rebuilt whenever a column is added) has every
        # field once the store is current
        have = {r[1] for r in self.db.execute("PRAGMA table_info(rows)")}
        missing = [c for c in ROW_FIELDS if c not in have]
        if missing:
            raise StoreError(f"{self.path}: written by an older editscope (its rows lack {', '.join(missing)}); "
                             f"open it read-write once to upgrade it in place: `editscope report {self.path.parent}`")

    def close(self) -> None:
        self.db.close()

    # ---- transactions and metadata
    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the store, even while a study writes it (a read transaction)."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            self._probe_ids.clear()  # ids of probes written in this transaction are gone
            raise
        self.db.execute("COMMIT")

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def set_meta(self, **items: Any) -> None:
        with self.transaction():
            for k, v in items.items():
                self._set_meta(k, v)

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    # ---- writing
    def add_unit(self, method: str, unit: str, step: int, edits: Sequence[int], status: str, *,
                 seconds_edit: float | None = None, seconds_eval: float | None = None,
                 fingerprint: str | None = None, info: Mapping[str, Any] | None = None,
                 rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 scalars: Mapping[str, tuple[float | None, Mapping[str, Any]]] | None = None,
                 events: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> int:
        """Write a unit and all it measured atomically. ``rows``: probe-set name -> evaluation rows
        (dicts as :class:`editscope.evaluation.EvalResult` rows, plus optional ``edit_index``);
        ``scalars``: name -> (value, detail); ``events``: (kind, detail)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO units(method, unit, step, edits, status, seconds_edit, seconds_eval, fingerprint, info) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (method, unit, step, json.dumps(list(edits)), status, seconds_edit, seconds_eval, fingerprint,
                 json.dumps(dict(info or {}), default=str)))
            uid = int(cur.lastrowid)
            for pset, rs in (rows or {}).items():
                self._add_rows(db, uid, pset, rs)
            for name, (value, detail) in (scalars or {}).items():
                db.execute("INSERT INTO scalars(unit_id, name, value, detail) VALUES (?, ?, ?, ?)",
                           (uid, name, value, json.dumps(dict(detail), default=str)))
            for kind, detail in events:
                db.execute("INSERT INTO events(unit_id, kind, detail) VALUES (?, ?, ?)",
                           (uid, kind, json.dumps(dict(detail), default=str)))
        return uid

    def _add_rows(self, db: sqlite3.Connection, uid: int, pset: str, rs: Sequence[Mapping[str, Any]]) -> None:
        if self.format != STORE_FORMAT:
            db.executemany(
                f"INSERT INTO rows(unit_id, probe_set, probe_index, edit_index, {', '.join(ROW_FIELDS)}) "
                f"VALUES ({', '.join('?' * (4 + len(ROW_FIELDS)))})",
                [(uid, pset, r["index"], r.get("edit_index"), *(_db_value(f, r.get(f)) for f in ROW_FIELDS))
                 for r in rs])
            return
        measures = []
        for r in rs:
            fields = tuple(_db_value(f, r.get(f)) for f in PROBE_FIELDS)
            digest = hashlib.sha1(json.dumps(fields).encode()).hexdigest()[:16]
            key = (pset, r["index"], digest)
            pid = self._probe_ids.get(key)
            if pid is None:
                found = db.execute("SELECT id FROM probes WHERE probe_set = ? AND probe_index = ? AND digest = ?",
                                   key).fetchone()
                pid = found[0] if found else int(db.execute(
                    f"INSERT INTO probes(probe_set, probe_index, digest, {', '.join(PROBE_FIELDS)}) "
                    f"VALUES ({', '.join('?' * (3 + len(PROBE_FIELDS)))})", (*key, *fields)).lastrowid)
                self._probe_ids[key] = pid
            measures.append((uid, pset, r["index"], pid, *(
                None if f == "greedy" and r.get(f) == r.get("base_greedy") else _db_value(f, r.get(f))
                for f in MEASURE_FIELDS)))
        db.executemany(f"INSERT INTO measures(unit_id, probe_set, probe_index, probe_id, {', '.join(MEASURE_FIELDS)}) "
                       f"VALUES ({', '.join('?' * (4 + len(MEASURE_FIELDS)))})", measures)

    def replace_rows(self, unit_id: int, drop: Mapping[str, Sequence[int]],
                     rows: Mapping[str, Sequence[Mapping[str, Any]]], event: tuple[str, Mapping[str, Any]]) -> None:
        """Re-measured probes of a stored unit, in one transaction: delete its rows of ``drop``
        (probe set -> indices), write ``rows`` (probe set -> rows, as :meth:`add_unit` takes them)
        and record ``event`` (kind, detail)."""
        table = "measures" if self.format == STORE_FORMAT else "rows"
        with self.transaction() as db:
            for pset, idx in drop.items():
                db.executemany(f"DELETE FROM {table} WHERE unit_id = ? AND probe_set = ? AND probe_index = ?",
                               [(unit_id, pset, int(i)) for i in idx])
            for pset, rs in rows.items():
                self._add_rows(db, unit_id, pset, rs)
            db.execute("INSERT INTO events(unit_id, kind, detail) VALUES (?, ?, ?)",
                       (unit_id, event[0], json.dumps(dict(event[1]), default=str)))

    def delete_unit(self, unit_id: int) -> None:
        """Remove a unit and everything it measured (so that a resumed run computes it again)."""
        table = "measures" if self.format == STORE_FORMAT else "rows"
        with self.transaction() as db:
            for t in (table, "scalars", "events"):
                db.execute(f"DELETE FROM {t} WHERE unit_id = ?", (unit_id,))
            db.execute("DELETE FROM units WHERE id = ?", (unit_id,))

    def probe_digests(self, unit_id: int) -> dict[str, dict[int, str]]:
        """A unit's stored probes: probe set -> {index: content digest} (computed from the stored
        fields for rows written before digests were kept)."""
        out: dict[str, dict[int, str]] = {}
        q = "SELECT probe_set, probe_index, prompt, target, category, meta, probe_digest FROM rows WHERE unit_id = ?"
        for pset, idx, prompt, target, cat, meta, digest in self.db.execute(q, (unit_id,)):
            out.setdefault(pset, {})[idx] = digest or row_digest(prompt, target, cat, meta)
        return out

    # ---- reading
    def units(self, method: str | None = None) -> list[Unit]:
        q = "SELECT id, method, unit, step, edits, status, seconds_edit, seconds_eval, fingerprint, info FROM units"
        args: tuple = ()
        if method is not None:
            q, args = q + " WHERE method = ?", (method,)
        return [Unit(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], json.loads(r[9]))
                for r in self.db.execute(q + " ORDER BY id", args)]

    def done(self) -> set[tuple[str, str]]:
        """(method, unit) pairs already stored."""
        return {(m, u) for m, u in self.db.execute("SELECT method, unit FROM units")}

    def rows_query(self, unit_id: int | None = None, method: str | None = None) -> tuple[str, list[Any]]:
        """The SQL (and its arguments) selecting the rows :meth:`rows` returns, with the columns
        :data:`ROW_KEYS` + :data:`ROW_FIELDS` in that order (meta as JSON text, booleans as 0/1)."""
        q = (f"SELECT u.method, u.unit, u.step, r.probe_set, r.probe_index AS \"index\", r.edit_index, "
             f"{', '.join('r.' + f for f in ROW_FIELDS)} FROM rows r JOIN units u ON u.id = r.unit_id")
        cond, args = [], []
        if unit_id is not None:
            cond.append("r.unit_id = ?")
            args.append(unit_id)
        if method is not None:
            cond.append("u.method = ?")
            args.append(method)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        return q + " ORDER BY r.unit_id, r.probe_set, r.probe_index", args

    def rows(self, unit_id: int | None = None, method: str | None = None) -> list[dict[str, Any]]:
        """Evaluation rows as dicts (the fields of EvalResult rows plus method, unit, step,
        probe_set, edit_index), in storage order; a row written before probe digests were kept gets
        its digest computed from its fields (:func:`editscope.probe_versions.row_digest`)."""
        q, args = self.rows_query(unit_id, method)
        out = []
        metas: dict[str, Any] = {}  # one parsed dict per distinct meta text (read-only; shared by its rows)

        digests: dict[tuple, str] = {}
        for rec in self.db.execute(q, args):
            d = dict(zip(ROW_KEYS, rec[:6]))
            for f, v in zip(ROW_FIELDS, rec[6:]):
                if f == "meta":
                    d[f] = metas[v] if v in metas else metas.setdefault(v, json.loads(v))
                    text = v
                else:
                    d[f] = bool(v) if f in BOOL_FIELDS and v is not None else v
            if d["probe_digest"] is None:  # written before digests were kept: computed from the row
                key = (d["prompt"], d["target"], d["category"], text)
                d["probe_digest"] = digests[key] if key in digests else digests.setdefault(key, row_digest(*key))
            out.append(d)
        return out

    def scalars(self) -> list[dict[str, Any]]:
        q = ("SELECT u.method, u.unit, u.step, s.name, s.value, s.detail FROM scalars s "
             "JOIN units u ON u.id = s.unit_id ORDER BY u.id, s.name")
        return [{"method": m, "unit": u, "step": st, "name": n, "value": v, "detail": json.loads(d)}
                for m, u, st, n, v, d in self.db.execute(q)]

    def events(self) -> list[dict[str, Any]]:
        q = ("SELECT u.method, u.unit, e.kind, e.detail FROM events e LEFT JOIN units u ON u.id = e.unit_id "
             "ORDER BY e.id")
        return [{"method": m, "unit": u, "kind": k, "detail": json.loads(d)} for m, u, k, d in self.db.execute(q)]

    def counts(self) -> dict[str, int]:
        return {t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("units", "rows", "scalars", "events")}


def _db_value(field: str, v: Any) -> Any:
    if field == "meta":
        return json.dumps(v or {}, sort_keys=True, default=str)
    if field in BOOL_FIELDS and v is not None:
        return int(bool(v))
    return v


def _create_store_file(path: Path) -> None:
    """Create an empty store at ``path`` atomically: built under a private name, then linked into
    place, so a reader never sees a half-made file (SQLite writes a new file's header only at its
    first commit; a status call or test polling a starting run would find an empty file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA + _ROWS_TABLES_V2 + _ROWS_VIEW_V2)  # whole, so openers change nothing
        db.execute("INSERT INTO meta(key, value) VALUES ('format', ?)", (json.dumps(STORE_FORMAT),))
    finally:
        db.close()
    try:
        os.link(tmp, path)  # no-clobber: a store another process created first is kept
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: a plain rename, still atomic
        if not path.exists():
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _connect_read_only(path: Path, **kwargs: Any) -> sqlite3.Connection:
    """A connection that SQLite refuses every write on (``mode=ro``)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, **kwargs)


def _check_ours(path: Path, read_only: bool = False) -> None:
    # Only through sqlite3: opening and closing the file with open() would drop SQLite's POSIX
    # locks held by other connections of this process. Read-only: a read-write connection's close
    # may checkpoint the write-ahead log or roll back a hot journal, both writes to the store.
    if path.stat().st_size == 0:
        raise StoreError(f"{path}: an empty file, not an editscope results store; move it away or pick another "
                         "--out folder")
    db = _connect_read_only(path) if read_only else sqlite3.connect(path)
    why = ""
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    except sqlite3.DatabaseError as e:
        row, why = None, str(e)
    finally:
        db.close()
    if "not a database" in why:
        raise StoreError(f"{path}: not an editscope results store (not an SQLite file); move it away or pick "
                         "another --out folder")
    if row is None or json.loads(row[0]) not in STORE_FORMATS:
        raise StoreError(f"{path}: an SQLite file that is not an editscope results store ({STORE_FORMAT})"
                         f"{f' ({why})' if why else ''}; move it away or pick another --out folder")


def convert_store(src: str | Path, dst: str | Path) -> Path:
    """Write the store ``src`` (a ``results.sqlite`` of any readable format) again as a new store
    ``dst`` in the current format, unit by unit, with the same meta, rows, scalars and events
    (e.g. a format-1 store into the leaner format 2). ``dst`` must not exist."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise StoreError(f"{dst}: exists; give a new file")
    old = ResultsStore(src)
    new = ResultsStore(dst, create=True)
    try:
        meta = {k: v for k, v in old.meta().items() if k != "format"}
        new.set_meta(**meta)
        rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for r in old.rows():
            rows.setdefault(f"{r['method']}/{r['unit']}", {}).setdefault(r["probe_set"], []).append(r)
        scalars: dict[str, dict[str, tuple[float | None, dict[str, Any]]]] = {}
        for x in old.scalars():
            scalars.setdefault(f"{x['method']}/{x['unit']}", {})[x["name"]] = (x["value"], x["detail"])
        events: dict[str | None, list[tuple[str, dict[str, Any]]]] = {}
        for e in old.events():
            key = None if e["method"] is None else f"{e['method']}/{e['unit']}"
            events.setdefault(key, []).append((e["kind"], e["detail"]))
        for u in old.units():
            key = f"{u.method}/{u.unit}"
            new.add_unit(u.method, u.unit, u.step, u.edits, u.status, seconds_edit=u.seconds_edit,
                         seconds_eval=u.seconds_eval, fingerprint=u.fingerprint, info=u.info, rows=rows.get(key),
                         scalars=scalars.get(key), events=events.get(key, ()))
        with new.transaction() as db:
            for kind, detail in events.get(None, []):
                db.execute("INSERT INTO events(unit_id, kind, detail) VALUES (NULL, ?, ?)",
                           (kind, json.dumps(detail, default=str)))
    finally:
        old.close()
        new.close()
    return dst


ARCHIVE_SUFFIX = ".sqlite.xz"


def export_archive(run_dir: str | Path, out: str | Path) -> Path:
    """Write a compact copy of a run's results store (SQLite backup, vacuumed, xz-compressed) to
    ``out`` (must end in ``.sqlite.xz``): what a write-up commits next to its text so that its
    numbers can be re-derived. The live store is read through SQLite, never copied as bytes."""
    out = Path(out)
    if not out.name.endswith(ARCHIVE_SUFFIX):
        raise ValueError(f"archive name {out.name!r} must end in {ARCHIVE_SUFFIX}")
    store = ResultsStore(Path(run_dir) / FILENAME)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        plain = Path(d) / FILENAME
        copy = sqlite3.connect(plain)
        try:
            store.db.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            copy.execute("VACUUM")
        finally:
            copy.close()
            store.close()
        tmp = out.with_name(out.name + ".tmp")
        with open(plain, "rb") as src, lzma.open(tmp, "wb", preset=9) as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, out)
    return out


def unpack_archive(archive: str | Path, run_dir: str | Path) -> Path:
    """Restore an :func:`export_archive` file as ``run_dir/results.sqlite``; ``run_dir`` must be
    new or empty. The archive is decompressed and checked in a temporary folder first, so a damaged
    archive leaves nothing behind. Returns ``run_dir``, ready for ``editscope report``."""
    archive, run_dir = Path(archive), Path(run_dir)
    blocker = file_in_the_way(run_dir)
    if blocker is not None:
        raise StoreError(f"{blocker}: is a file; give a new or empty folder to unpack the run into")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise StoreError(f"{run_dir}: holds other files; unpack into a new or empty folder")
    if not archive.is_file():
        raise StoreError(f"{archive}: no such archive (write one with `editscope export RUN {archive.name}`)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / FILENAME
        try:
            with lzma.open(archive, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except lzma.LZMAError as e:
            raise StoreError(f"{archive}: not an xz archive of a results store ({e})") from None
        except EOFError:
            raise StoreError(f"{archive}: the xz archive is truncated (damaged or still being copied)") from None
        _check_ours(tmp)
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp, run_dir / FILENAME)
    return run_dir


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


__all__ = ["ARCHIVE_SUFFIX", "BOOL_FIELDS", "FILENAME", "ROW_FIELDS", "ROW_KEYS", "ResultsStore", "STORE_FORMAT", "STORE_FORMATS", "StoreError", "Unit",
           "convert_store", "export_archive", "now_iso", "unpack_archive"]
