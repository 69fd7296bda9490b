"""SQLite store: durable checkpoints in one local file, no server.

``SqliteStore(path)`` is the durable default for one machine. Design:

- stdlib :mod:`sqlite3`, WAL journal, ``synchronous=FULL``: every commit is fsynced before
  ``commit_raw`` returns, so a committed node survives not only ``kill -9`` (which ``NORMAL``
  would also survive) but a power loss or kernel crash too (which ``NORMAL`` in WAL mode may roll
  back, and a rolled-back commit would make a committed node run again). Pass
  ``synchronous="NORMAL"`` to trade that guarantee for speed.
- All SQLite work runs on one dedicated worker thread that owns the store's only connection, so
  the event loop never blocks and the connection is never shared between threads. The thread is
  started on first use and stopped by :meth:`SqliteStore.close` (or ``async with``).
- The tables are created on first use; ``commit_raw`` writes the node's checkpoint and the run's
  progress record in one ``BEGIN IMMEDIATE`` transaction.
- Several processes may share one file (WAL + a busy timeout): that is how a resumed process
  picks up what a killed one committed. Leases are rows with an expiry, taken atomically; each
  carries a fencing token (+1 whenever the lease changes owner; a released lease keeps its row,
  so the token never goes back) that ``commit_raw(..., token=)`` checks in its transaction.
- ``stroma_runs`` indexes runs (pipeline, status, last update) for :meth:`SqliteStore.list_runs`;
  every manifest and progress write updates it in the same transaction.

Example::

    from stroma import SqliteStore, StromaRunner
    runner = StromaRunner.quick(store=SqliteStore("runs.db"))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from stroma.checkpoint._codec import (
    JsonStoreMixin,
    RunRecord,
    commit_records,
    holder_is_gone,
    index_fields,
    lease_lost,
    run_record,
)
from stroma.errors import ConfigurationError, StoreDataError, StoreUnavailableError

__all__ = ["SqliteStore", "where_clause"]

_T = TypeVar("_T")

_PROGRESS_NODE = "__stroma_progress__"  # == stroma.checkpoint.PROGRESS_NODE (no import cycle)
_PROGRESS_REF = "stroma.checkpoint:RunProgress"
_RUN_NODE = "__stroma_run__"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stroma_checkpoints (
    run_id      TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    payload     TEXT NOT NULL,
    schema_ref  TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (run_id, node_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stroma_leases (
    run_id      TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    token       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stroma_runs (
    run_id      TEXT PRIMARY KEY,
    pipeline    TEXT,
    status      TEXT NOT NULL,
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stroma_runs_status ON stroma_runs (status, updated_at);
CREATE INDEX IF NOT EXISTS stroma_runs_pipeline ON stroma_runs (pipeline, updated_at);
CREATE INDEX IF NOT EXISTS stroma_runs_updated ON stroma_runs (updated_at);
"""

_INDEX = (
    "INSERT INTO stroma_runs (run_id, pipeline, status, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET pipeline = coalesce(excluded.pipeline, "
    "stroma_runs.pipeline), status = excluded.status, updated_at = excluded.updated_at"
)
_LEASE = (
    "INSERT INTO stroma_leases (run_id, owner, expires_at, token) VALUES (?, ?, ?, 1) "
    "ON CONFLICT (run_id) DO UPDATE SET token = CASE WHEN stroma_leases.owner = excluded.owner "
    "THEN stroma_leases.token ELSE stroma_leases.token + 1 END, owner = excluded.owner, "
    "expires_at = excluded.expires_at "
    "WHERE stroma_leases.expires_at < ? OR stroma_leases.owner = excluded.owner RETURNING token"
)
_HOLDER = "SELECT owner FROM stroma_leases WHERE run_id = ?"
_TAKE_OVER = (
    "UPDATE stroma_leases SET owner = ?, expires_at = ?, token = token + 1 "
    "WHERE run_id = ? AND owner = ? RETURNING token"
)
_LIST = (
    "SELECT r.run_id, p.payload, m.payload, coalesce(l.expires_at >= ?, 0) FROM stroma_runs r "
    "LEFT JOIN stroma_checkpoints p ON p.run_id = r.run_id AND p.node_id = '__stroma_progress__' "
    "LEFT JOIN stroma_checkpoints m ON m.run_id = r.run_id AND m.node_id = '__stroma_run__' "
    "LEFT JOIN stroma_leases l ON l.run_id = r.run_id"
)

_UPSERT = (
    "INSERT INTO stroma_checkpoints (run_id, node_id, payload, schema_ref, updated_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, node_id) DO UPDATE SET "
    "payload = excluded.payload, schema_ref = excluded.schema_ref, "
    "updated_at = excluded.updated_at"
)


class SqliteStore(JsonStoreMixin):
    """A durable embedded checkpoint store in one SQLite file (WAL, fsync on every commit).

    ``path`` is the database file (created with its tables on first use). ``synchronous`` is
    ``"FULL"`` (default: a commit survives power loss) or ``"NORMAL"`` (survives a process crash
    only). ``busy_timeout_s`` is how long a write waits for another process holding the file.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_s: float = 30.0,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise ConfigurationError(
                f"SqliteStore(path) needs a file path (str or PathLike), got "
                f"{type(path).__name__}; e.g. SqliteStore('runs.db')"
            )
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigurationError(
                f"SqliteStore synchronous={synchronous!r} is not supported; use 'FULL' (survives "
                "power loss) or 'NORMAL' (survives a process crash)"
            )
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_s = float(busy_timeout_s)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # owned by the worker thread only
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}, synchronous={self.synchronous!r})"

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the worker thread ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """Open (once) the worker thread's connection and create the tables."""
        if self._conn is None:
            if not self.path.parent.exists():
                raise ConfigurationError(
                    f"SqliteStore cannot open {str(self.path)!r}: its directory "
                    f"{str(self.path.parent)!r} does not exist; create it first"
                )
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=True,
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
                conn.executescript(_SCHEMA)
                columns = {row[1] for row in conn.execute("PRAGMA table_info(stroma_leases)")}
                if "token" not in columns:  # a file written by stroma <= 0.3.2
                    conn.execute("ALTER TABLE stroma_leases ADD COLUMN token INTEGER NOT NULL DEFAULT 0")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _submit(self, fn: Callable[[sqlite3.Connection], _T]) -> concurrent.futures.Future[_T]:
        with self._lock:
            if self._closed:
                raise ConfigurationError(
                    f"{self!r} is closed; create a new SqliteStore to keep using the file"
                )
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="stroma-sqlite"
                )
            executor = self._executor

        def work() -> _T:
            try:
                return fn(self._connect())
            except UnicodeEncodeError as exc:
                raise StoreDataError(
                    f"SqliteStore {str(self.path)!r} cannot store {exc.object[:80]!r}: it holds "
                    f"a lone surrogate at index {exc.start} (not UTF-8 text); use ids that are "
                    "valid unicode text",
                    key=exc.object[:200],
                ) from None
            except sqlite3.OperationalError as exc:
                # locked / disk I/O / cannot open: transient or environmental, retried by policy
                raise StoreUnavailableError(
                    f"SqliteStore {str(self.path)!r} could not complete the operation "
                    f"({exc}); it is retried. If it persists, check the file's disk and "
                    "permissions, or whether another process holds a long write lock"
                ) from None

        return executor.submit(work)

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        # The worker finishes the statement even if the awaiting task is cancelled: a
        # transaction is committed whole or rolled back, never left half-done.
        return await asyncio.wrap_future(self._submit(fn))

    def close(self) -> None:
        """Close the connection and stop the worker thread (waits for queued work)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor = self._executor
        if executor is None:
            return

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        executor.submit(shut)
        executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """Close the store without blocking the event loop."""
        await asyncio.to_thread(self.close)

    # -- raw protocol -----------------------------------------------------------------------

    async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
        """Save a JSON payload and its schema reference (one transaction)."""
        await self._write(run_id, [(node_id, payload, ref)], None)

    async def _write(self, run_id: str, records: list[tuple[str, str, str]], token: int | None) -> None:
        """Write ``records`` (node id, payload, ref) and their run-index entry in one
        transaction, first checking the fencing ``token`` when given."""
        stamp = time.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if token is not None:
                    row = conn.execute(
                        "SELECT token FROM stroma_leases WHERE run_id = ?", (run_id,)
                    ).fetchone()
                    if row is None or row[0] != token:
                        raise lease_lost(run_id, token, None if row is None else row[0])
                for node_id, payload, ref in records:
                    conn.execute(_UPSERT, (run_id, node_id, payload, ref, stamp))
                    entry = index_fields(node_id, payload)
                    if entry is not None:
                        conn.execute(_INDEX, (run_id, *entry))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(op)

    async def load_raw(self, run_id: str, node_id: str) -> tuple[str, str] | None:
        """The stored payload and schema reference of a checkpoint, or None.

        The payload is returned as stored (``str``, or ``bytes`` if something other than
        Stroma wrote a BLOB); :func:`stroma.checkpoint.decode_payload` refuses non-JSON.
        """

        def op(conn: sqlite3.Connection) -> tuple[Any, Any] | None:
            row = conn.execute(
                "SELECT payload, schema_ref FROM stroma_checkpoints WHERE run_id = ? AND node_id = ?",
                (run_id, node_id),
            ).fetchone()
            return None if row is None else (row[0], row[1])

        return await self._run(op)

    async def commit_raw(
        self,
        run_id: str,
        node_id: str,
        payload: str,
        ref: str,
        progress: str,
        token: int | None = None,
    ) -> None:
        """Write a node's checkpoint and the run's progress record in one transaction; with
        ``token``, refused (LeaseLostError) unless it is the run's current fencing token."""
        await self._write(run_id, commit_records(node_id, payload, ref, progress), token)

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> int:
        """Take the run's lease for ``ttl_s`` seconds unless another owner holds a live one;
        returns its fencing token, or 0 when refused."""

        def op(conn: sqlite3.Connection) -> int:
            now = time.time()
            row = conn.execute(_LEASE, (run_id, owner, now + ttl_s, now)).fetchone()
            if row is None:  # held: by a live worker, or by a process on this machine that died
                holder = conn.execute(
                    "SELECT owner FROM stroma_leases WHERE run_id = ?", (run_id,)
                ).fetchone()
                if holder is not None and holder_is_gone(holder[0]):
                    row = conn.execute(_TAKE_OVER, (owner, now + ttl_s, run_id, holder[0])).fetchone()
            return 0 if row is None else int(row[0])

        return await self._run(op)

    async def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease back (only its owner can). The row stays, with its fencing token."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE stroma_leases SET expires_at = 0 WHERE run_id = ? AND owner = ?",
                (run_id, owner),
            )

        await self._run(op)

    async def _list_runs(
        self, status: str | None, pipeline: str | None, updated_before: float | None, limit: int
    ) -> list[RunRecord]:
        where, args = where_clause(status, pipeline, updated_before)
        sql = f"{_LIST}{where} ORDER BY r.updated_at, r.run_id LIMIT ?"

        def op(conn: sqlite3.Connection) -> list[RunRecord]:
            rows = conn.execute(sql, (time.time(), *args, limit)).fetchall()
            records = (run_record(r[0], r[1], r[2], bool(r[3])) for r in rows)
            return [r for r in records if r is not None]

        return await self._run(op)

    # -- the published structural API --------------------------------------------------------

    async def delete(self, run_id: str) -> None:
        """Delete every checkpoint of ``run_id`` (exact match; other runs are untouched)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM stroma_checkpoints WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM stroma_runs WHERE run_id = ?", (run_id,))

        await self._run(op)


def where_clause(
    status: str | None, pipeline: str | None, updated_before: float | None, mark: str = "?"
) -> tuple[str, list[Any]]:
    """The WHERE clause of a run listing on the ``r`` (runs index) table and its arguments;
    ``mark`` is the placeholder (``?``, or ``$`` for PostgreSQL's ``$1``, ``$2`` ...)."""
    terms: list[str] = []
    args: list[Any] = []
    for column, op, value in (
        ("status", "=", status),
        ("pipeline", "=", pipeline),
        ("updated_at", "<", updated_before),
    ):
        if value is not None:
            args.append(value)
            place = "?" if mark == "?" else f"${len(args)}"
            terms.append(f"r.{column} {op} {place}")
    return (" WHERE " + " AND ".join(terms) if terms else ""), args
