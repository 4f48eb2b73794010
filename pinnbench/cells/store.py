"""The result store: one SQLite database (WAL journal) holding many runs.

Tables:

- ``meta(key, value)``: ``format = pinnbench-store``, ``version = 1`` (how a store is recognised);
- ``runs(run_id, command, started_at, finished_at, status, plan, provenance, planner,
  heartbeat)``: one row per ``pinnbench run``; ``plan`` is the JSON list of the run's cell specs
  (``--resume`` reuses it); ``planner`` and ``heartbeat`` say which process runs it and when it
  last said so (:mod:`pinnbench.cells.run_lease`);
- ``results``: the columns of :mod:`pinnbench.cells.schema` (JSON columns as JSON text), primary key
  ``(run_id, cell_id)``.

Only the process that plans a sweep writes, one transaction per finished cell (so killing it loses
at most the cells in flight). ``load_results(path)`` returns the rows as a pandas DataFrame with
exactly the schema's columns, JSON decoded.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from pinnbench.cells.schema import COLUMNS

FORMAT = "pinnbench-store"
VERSION = "1"
DEFAULT_PATH = Path("results") / "pinnbench.sqlite"
#: statuses that count as done for --resume (``error`` is re-run)
DONE_STATUSES = ("ok", "oom", "timeout", "diverged", "skipped")

#: columns of ``runs`` added after version 1 (an older store gets them, empty)
_LEASE_COLUMNS = ("planner", "heartbeat")

_SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "REAL", "json": "TEXT"}


class StoreError(ValueError):
    """The path is not a usable pinnbench store (message says why and what to do)."""


class RunBusyError(StoreError):
    """The run is being run by another live planner (``Store.claim_run``)."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_store(path: str | os.PathLike, must_exist: bool = False, writable: bool = True,
                mkdir: bool = False) -> None:
    """Raise StoreError unless ``path`` is an existing pinnbench store that we may write (or
    only read, ``writable=False``), or a path where one can be created: in an existing folder,
    or (``mkdir``) under folders that may be created. Writes nothing (opens an existing file
    read-only)."""
    p = Path(path)
    if p.exists():
        if p.is_dir():
            raise StoreError(f"store {str(p)!r} is a directory; give a file path such as "
                             f"{DEFAULT_PATH}")
        if not p.is_file():
            raise StoreError(f"store {str(p)!r} is not a regular file (a device, pipe or "
                             f"socket); give a file path such as {DEFAULT_PATH}")
        if not writable:
            if not os.access(p, os.R_OK):
                raise StoreError(f"store {str(p)!r} is not readable by you")
            _check_format(p)
            return
        if not os.access(p, os.R_OK | os.W_OK):
            raise StoreError(f"store {str(p)!r} is not readable and writable by you")
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise StoreError(f"store directory {str(p.parent)!r} is not writable (SQLite needs "
                             "it for its journal)")
        _check_format(p)
        return
    if must_exist:
        raise StoreError(f"no store at {str(p)!r}; run `pinnbench run --store {p}` first")
    if not mkdir and not p.parent.exists():
        raise StoreError(f"cannot create store {str(p)!r}: the folder {str(p.parent)!r} does not "
                         "exist; create it, or add --mkdir to create it")
    parent = p.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise StoreError(f"cannot create store {str(p)!r}: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"cannot create store {str(p)!r}: directory {str(parent)!r} is not "
                         "writable")


def _check_format(p: Path) -> None:
    if p.stat().st_size == 0:
        return  # an empty file is an empty SQLite database: we may initialise it
    with open(p, "rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise StoreError(f"{str(p)!r} is not a SQLite database (corrupt or another kind of "
                             "file); give another --store path")
    try:
        con = _connect_read_only(p)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                return
            if "meta" not in tables:
                raise StoreError(f"{str(p)!r} is a SQLite database but not a pinnbench store; "
                                 "give another --store path")
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != FORMAT:
                raise StoreError(f"{str(p)!r} is not a pinnbench store; give another --store path")
            if meta.get("version") != VERSION:
                raise StoreError(f"store {str(p)!r} has format version {meta.get('version')}, "
                                 f"this pinnbench reads version {VERSION}")
            con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{str(p)!r} is not a valid SQLite store ({exc}); give another "
                         "--store path") from None


def _table_columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({_quote(table)})")}


def _encode(name: str, value: Any) -> Any:
    kind = COLUMNS[name][0]
    if value is None:
        return None
    if kind == "json":
        return json.dumps(value, sort_keys=True, default=str)
    if kind == "float":
        v = float(value)
        return v if math.isfinite(v) else None
    if kind == "int":
        return int(value)
    return str(value)


class Store:
    """A writable store (created on first use; its folders too when ``mkdir``), in WAL mode.
    SQLite removes the ``-wal`` and ``-shm`` files when the last connection closes, so a store
    at rest is one file, which readers open without creating them (:func:`_connect_read_only`)."""

    def __init__(self, path: str | os.PathLike, mkdir: bool = False) -> None:
        check_store(path, mkdir=mkdir)
        self.path = Path(path)
        if mkdir:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self._create()

    def _create(self) -> None:
        cols = ", ".join(f"{_quote(k)} {_SQL_TYPES[t]}" for k, (t, _) in COLUMNS.items())
        with self.transaction():
            self.con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self.con.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?), ('version', ?)",
                             (FORMAT, VERSION))
            self.con.execute("CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, "
                             "command TEXT, started_at TEXT, finished_at TEXT, status TEXT, "
                             "plan TEXT, provenance TEXT, planner TEXT, heartbeat TEXT)")
            have_runs = _table_columns(self.con, "runs")
            for k in _LEASE_COLUMNS:
                if k not in have_runs:
                    self.con.execute(f"ALTER TABLE runs ADD COLUMN {k} TEXT")
            self.con.execute(f"CREATE TABLE IF NOT EXISTS results ({cols}, "
                             "PRIMARY KEY (run_id, cell_id))")
            # a store written by an older pinnbench lacks the newer columns: add them (empty)
            have = _table_columns(self.con, "results")
            for k, (t, _) in COLUMNS.items():
                if k not in have:
                    self.con.execute(f"ALTER TABLE results ADD COLUMN {_quote(k)} {_SQL_TYPES[t]}")

    def transaction(self):
        store = self

        class _Tx:
            def __enter__(self):
                store.con.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, exc, tb):
                store.con.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()

    def close(self) -> None:
        self.con.close()

    # -- runs -----------------------------------------------------------------------------------
    def begin_run(self, run_id: str, command: str, started_at: str, plan: list[dict],
                  provenance: dict, planner: str | None = None) -> None:
        with self.transaction():
            self.con.execute("INSERT INTO runs (run_id, command, started_at, finished_at, status, "
                             "plan, provenance, planner, heartbeat) "
                             "VALUES (?, ?, ?, NULL, 'running', ?, ?, ?, ?)",
                             (run_id, command, started_at, json.dumps(plan),
                              json.dumps(provenance, default=str), planner, started_at))

    def claim_run(self, run_id: str, planner: str, now: str) -> None:
        """Make ``planner`` the run's planner (status ``running``) in one write transaction;
        RunBusyError when another planner of the run is alive (:mod:`pinnbench.cells.run_lease`)."""
        from pinnbench.cells.run_lease import describe, planner_alive

        with self.transaction():
            row = self.con.execute("SELECT status, planner, heartbeat FROM runs WHERE run_id=?",
                                   (run_id,)).fetchone()
            if row and row[0] == "running" and row[1] != planner and planner_alive(row[1], row[2]):
                raise RunBusyError(f"run {run_id} is being run by {describe(row[1])} (heartbeat "
                                   f"{row[2]}); wait for it to finish, or stop it, then resume")
            self.con.execute("UPDATE runs SET status='running', finished_at=NULL, planner=?, "
                             "heartbeat=? WHERE run_id=?", (planner, now, run_id))

    def reopen_run(self, run_id: str) -> None:
        with self.transaction():
            self.con.execute("UPDATE runs SET status='running', finished_at=NULL WHERE run_id=?",
                             (run_id,))

    def heartbeat(self, run_id: str, now: str) -> None:
        with self.transaction():
            self.con.execute("UPDATE runs SET heartbeat=? WHERE run_id=?", (now, run_id))

    def finish_run(self, run_id: str, finished_at: str, status: str) -> None:
        with self.transaction():
            self.con.execute("UPDATE runs SET finished_at=?, status=? WHERE run_id=?",
                             (finished_at, status, run_id))

    def done_cells(self, run_id: str) -> set[str]:
        marks = ",".join("?" * len(DONE_STATUSES))
        rows = self.con.execute(f"SELECT cell_id FROM results WHERE run_id=? AND status IN "
                                f"({marks})", (run_id, *DONE_STATUSES))
        return {r[0] for r in rows}

    # -- results --------------------------------------------------------------------------------
    def write_row(self, row: dict[str, Any]) -> None:
        """Insert (or replace: a re-run of an errored cell) one result, in its own transaction."""
        missing = [k for k in ("run_id", "cell_id", "status") if not row.get(k)]
        if missing:
            raise ValueError(f"result row lacks {missing}")
        names = list(COLUMNS)
        values = [_encode(k, row.get(k)) for k in names]
        sql = (f"INSERT OR REPLACE INTO results ({', '.join(map(_quote, names))}) "
               f"VALUES ({', '.join('?' * len(names))})")
        with self.transaction():
            self.con.execute(sql, values)


def _connect_read_only(path: str | os.PathLike) -> sqlite3.Connection:
    """A read-only connection that leaves nothing beside the store.

    A WAL store needs a ``-shm`` file to be read normally, and a read-only connection creates
    it and the ``-wal`` and cannot remove them (``show`` left both beside a store). When no
    ``-wal`` file exists (the store at rest: its writer closed, every committed row is in the
    main file) it is opened as immutable, which creates nothing; when one exists (a writer is
    at work, or died) it is read normally, through the writer's files, so rows committed to the
    WAL and not yet checkpointed are seen. (A writer that opens the store and checkpoints while
    an immutable read is under way could be read half-written: a write transaction goes to the
    WAL, and a checkpoint comes only at 1000 pages of it or when that writer closes; the
    reads here last well under a second.) A rollback-journal store opens with ``mode=ro`` and
    creates nothing either. A WAL store
    in a folder we cannot write (a read-only file system, another user's results) cannot create
    its shared-memory file either: it is then opened as immutable, which reads the main
    database file as it is."""
    p = Path(path)
    if _in_wal_mode(p) and not Path(f"{p}-wal").exists():
        return sqlite3.connect(f"file:{p}?mode=ro&immutable=1", uri=True)
    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        con.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        return con
    except sqlite3.OperationalError:
        con.close()
    return sqlite3.connect(f"file:{Path(path)}?mode=ro&immutable=1", uri=True)


def _in_wal_mode(path: Path) -> bool:
    """Whether the database file's header says WAL (bytes 18 and 19 are 2; sqlite.org/fileformat)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return False
    return len(head) == 20 and head[18] == 2 and head[19] == 2


def run_plan(path: str | os.PathLike, run_id: str) -> list[dict]:
    """The cell specs a run planned (read-only; ``--resume`` reads them before it writes)."""
    check_store(path, must_exist=True, writable=False)
    con = _connect_read_only(path)
    try:
        row = con.execute("SELECT plan FROM runs WHERE run_id=?", (run_id,)).fetchone()
    finally:
        con.close()
    return json.loads(row[0]) if row and row[0] else []


def list_runs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The runs of a store, oldest first: run_id, command, started_at, finished_at, status,
    n_cells (rows stored), planner, heartbeat (None in a store older than those columns)."""
    check_store(path, must_exist=True, writable=False)
    con = _connect_read_only(path)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "runs" not in tables:
            return []
        have = _table_columns(con, "runs")
        lease = ", ".join(f"r.{k}" if k in have else "NULL" for k in _LEASE_COLUMNS)
        rows = con.execute(
            "SELECT r.run_id, r.command, r.started_at, r.finished_at, r.status, "
            f"(SELECT COUNT(*) FROM results s WHERE s.run_id = r.run_id), {lease} "
            "FROM runs r ORDER BY r.started_at, r.rowid").fetchall()
    finally:
        con.close()
    keys = ("run_id", "command", "started_at", "finished_at", "status", "n_cells", "planner",
            "heartbeat")
    return [dict(zip(keys, r)) for r in rows]


def load_results(path: str | os.PathLike = DEFAULT_PATH, run_id: str | None = None):
    """All result rows of the store at ``path`` (or of one run) as a pandas DataFrame with
    exactly the columns of :data:`pinnbench.cells.schema.COLUMNS`, JSON columns decoded to Python
    objects, ints as nullable ``Int64``, missing floats as NaN. Raises StoreError when ``path``
    is not a store."""
    import pandas as pd

    check_store(path, must_exist=True, writable=False)
    names = list(COLUMNS)
    con = _connect_read_only(path)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        rows: Iterable = []
        if "results" in tables:
            have = _table_columns(con, "results")
            # columns that an older store lacks read as NULL
            select = [_quote(k) if k in have else f"NULL AS {_quote(k)}" for k in names]
            sql = f"SELECT {', '.join(select)} FROM results"
            args: tuple = ()
            if run_id is not None:
                sql += " WHERE run_id = ?"
                args = (run_id,)
            rows = con.execute(sql + " ORDER BY rowid", args).fetchall()
    finally:
        con.close()
    df = pd.DataFrame.from_records(list(rows), columns=names)
    for name, (kind, _) in COLUMNS.items():
        if kind == "json":
            df[name] = [json.loads(v) if isinstance(v, str) else None for v in df[name]]
        elif kind == "int":
            df[name] = pd.array([None if v is None or pd.isna(v) else int(v) for v in df[name]],
                                dtype="Int64")
        elif kind == "float":
            df[name] = pd.to_numeric(df[name], errors="coerce").astype("float64")
        else:
            df[name] = df[name].astype(object)
    return df
