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
  picks up what a killed one committed. Leases are rows with an expiry, taken atomically.

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

from stroma.checkpoint._codec import JsonStoreMixin
from stroma.errors import ConfigurationError, StoreUnavailableError

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

_PROGRESS_NODE = "__stroma_progress__"  # == stroma.checkpoint.PROGRESS_NODE (no import cycle)
_PROGRESS_REF = "stroma.checkpoint:RunProgress"

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
    expires_at  REAL NOT NULL
) WITHOUT ROWID;
"""

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
        stamp = time.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT, (run_id, node_id, payload, ref, stamp))

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

    async def commit_raw(self, run_id: str, node_id: str, payload: str, ref: str, progress: str) -> None:
        """Write a node's checkpoint and the run's progress record in one transaction."""
        stamp = time.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if node_id != _PROGRESS_NODE:
                    conn.execute(_UPSERT, (run_id, node_id, payload, ref, stamp))
                conn.execute(_UPSERT, (run_id, _PROGRESS_NODE, progress, _PROGRESS_REF, stamp))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(op)

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> bool:
        """Take the run's lease for ``ttl_s`` seconds unless another owner holds a live one."""

        def op(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cur = conn.execute(
                "INSERT INTO stroma_leases (run_id, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE stroma_leases.expires_at < ? OR stroma_leases.owner = excluded.owner",
                (run_id, owner, now + ttl_s, now),
            )
            return cur.rowcount == 1

        return await self._run(op)

    async def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease back (only its owner can)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM stroma_leases WHERE run_id = ? AND owner = ?", (run_id, owner))

        await self._run(op)

    # -- the published structural API --------------------------------------------------------

    async def delete(self, run_id: str) -> None:
        """Delete every checkpoint of ``run_id`` (exact match; other runs are untouched)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM stroma_checkpoints WHERE run_id = ?", (run_id,))

        await self._run(op)
