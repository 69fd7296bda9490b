"""PostgreSQL store on asyncpg: ``PostgresStore(dsn)``.

- One table (``stroma_checkpoints`` by default) keyed by ``(run_id, node_id)``, plus a lease
  table ``<table>_leases``; both created on first use under a transaction-scoped advisory lock,
  so many workers starting at once cannot race on ``CREATE TABLE``.
- ``commit_raw`` writes the node's checkpoint and the run's progress record with ONE
  ``INSERT ... VALUES (..), (..) ON CONFLICT DO UPDATE`` statement: atomic (a statement is its
  own transaction) and one round trip.
- Leases are rows with an expiry in server time (no clock skew between workers), taken with one
  conditional upsert: the lease is granted when there is no row, the row expired, or the same
  owner asks again. Advisory locks are not used for leases because they are tied to a pooled
  connection's session. Each row carries a fencing token (+1 whenever the lease changes owner;
  a released lease keeps its row): ``commit_raw(..., token=)`` writes only while the token is
  current, checked under ``FOR SHARE`` in the same statement, so a takeover waits for it.
- ``<table>_runs`` indexes runs (pipeline, status, last update) for :meth:`list_runs`; the same
  statement that writes a manifest or a progress record updates it.
- Ids PostgreSQL cannot store (a NUL byte, a lone surrogate, an id too long for the index)
  raise :class:`~stroma.errors.StoreDataError` (TERMINAL), not a retried driver error.
- One asyncpg pool per store (per event loop), reused by every call. The pool's reset-on-release
  query is skipped: the store keeps no session state, and skipping it saves a round trip.
- The DSN password never appears in repr, log lines or errors (``postgresql://u:****@host/db``).
- Connection failures raise :class:`~stroma.errors.StoreUnavailableError` (RECOVERABLE).

``asyncpg`` is imported when first needed, never by ``import stroma``; install it with
``pip install 'stroma[postgres]'``.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from stroma.checkpoint._codec import (
    JsonStoreMixin,
    RunRecord,
    commit_records,
    index_fields,
    lease_lost,
    run_record,
)
from stroma.checkpoint.redis import redact_url, scrub, url_secrets
from stroma.checkpoint.sqlite import where_clause
from stroma.errors import ConfigurationError, MissingExtraError, StoreDataError, StoreUnavailableError

__all__ = ["PostgresStore"]

_PROGRESS_NODE = "__stroma_progress__"  # == stroma.checkpoint.PROGRESS_NODE (no import cycle)
_PROGRESS_REF = "stroma.checkpoint:RunProgress"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")
_DDL_LOCK = 0x5374726F6D61  # "Stroma": advisory lock key serialising CREATE TABLE


def _import_asyncpg() -> Any:
    try:
        import asyncpg  # noqa: PLC0415 - optional dependency, imported on use
    except ImportError:
        raise MissingExtraError(
            "asyncpg is required for PostgresStore; install it with pip install 'stroma[postgres]'"
        ) from None
    return asyncpg


async def _no_reset(_conn: Any) -> None:
    """Pool reset hook: nothing to reset (the store never changes session state)."""


class _LoopState:
    def __init__(self) -> None:
        self.pool: Any = None
        self.lock = asyncio.Lock()
        self.ready = False


class PostgresStore(JsonStoreMixin):
    """An async checkpoint store on PostgreSQL (asyncpg).

    ``dsn`` e.g. ``postgresql://user:password@host:5432/db``; ``table`` names the checkpoint
    table (lowercase identifier); ``min_size`` / ``max_size`` size the connection pool;
    ``pool_kwargs`` go to ``asyncpg.create_pool`` (``ssl``, ``command_timeout`` ...).
    """

    kind = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "stroma_checkpoints",
        min_size: int = 1,
        max_size: int = 10,
        **pool_kwargs: Any,
    ) -> None:
        if not isinstance(dsn, str) or "://" not in dsn:
            raise ConfigurationError(
                "dsn must be a URL such as 'postgresql://user@localhost:5432/db', got "
                f"{redact_url(str(dsn))!r}"
            )
        if not isinstance(table, str) or not _IDENTIFIER.match(table):
            raise ConfigurationError(
                f"table={table!r} must be a lowercase SQL identifier (letters, digits, "
                "underscores; at most 51 characters), e.g. 'stroma_checkpoints'"
            )
        self._asyncpg = _import_asyncpg()
        self._dsn = dsn
        self.dsn = redact_url(dsn)
        """The DSN with the password redacted (safe to log)."""
        self._secrets = url_secrets(dsn)
        self.table = table
        self.lease_table = f"{table}_leases"
        self.runs_table = f"{table}_runs"
        self._pool_kwargs: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "reset": _no_reset,
            **pool_kwargs,
        }
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        t, lt, rt = self.table, self.lease_table, self.runs_table
        self._sql_load = f"SELECT payload, schema_ref FROM {t} WHERE run_id = $1 AND node_id = $2"
        self._sql_delete = f"WITH r AS (DELETE FROM {rt} WHERE run_id = $1) DELETE FROM {t} WHERE run_id = $1"
        self._sql_lease = (
            f"INSERT INTO {lt} AS l (run_id, owner, expires_at, token) "
            "VALUES ($1, $2, now() + make_interval(secs => $3), 1) "
            "ON CONFLICT (run_id) DO UPDATE SET token = CASE WHEN l.owner = EXCLUDED.owner "
            "THEN l.token ELSE l.token + 1 END, owner = EXCLUDED.owner, "
            "expires_at = EXCLUDED.expires_at "
            "WHERE l.expires_at < now() OR l.owner = EXCLUDED.owner RETURNING token"
        )
        self._sql_release = f"UPDATE {lt} SET expires_at = '-infinity' WHERE run_id = $1 AND owner = $2"
        self._sql_token = f"SELECT token FROM {lt} WHERE run_id = $1"
        self._sql_list = (
            f"SELECT r.run_id, p.payload, m.payload, coalesce(l.expires_at >= now(), false) "
            f"FROM {rt} r "
            f"LEFT JOIN {t} p ON p.run_id = r.run_id AND p.node_id = '__stroma_progress__' "
            f"LEFT JOIN {t} m ON m.run_id = r.run_id AND m.node_id = '__stroma_run__' "
            f"LEFT JOIN {lt} l ON l.run_id = r.run_id"
        )
        self._writes: dict[tuple[int, bool, bool], str] = {}
        self._ddl = (
            f"CREATE TABLE IF NOT EXISTS {t} ("
            "run_id text NOT NULL, node_id text NOT NULL, payload text NOT NULL, "
            "schema_ref text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (run_id, node_id)); "
            f"CREATE TABLE IF NOT EXISTS {lt} ("
            "run_id text PRIMARY KEY, owner text NOT NULL, expires_at timestamptz NOT NULL); "
            f"ALTER TABLE {lt} ADD COLUMN IF NOT EXISTS token bigint NOT NULL DEFAULT 0; "
            f"CREATE TABLE IF NOT EXISTS {rt} (run_id text PRIMARY KEY, pipeline text, "
            "status text NOT NULL, updated_at double precision NOT NULL); "
            f"CREATE INDEX IF NOT EXISTS {rt}_status ON {rt} (status, updated_at); "
            f"CREATE INDEX IF NOT EXISTS {rt}_pipeline ON {rt} (pipeline, updated_at); "
            f"CREATE INDEX IF NOT EXISTS {rt}_updated ON {rt} (updated_at)"
        )

    def _write_sql(self, records: int, fenced: bool, indexed: bool) -> str:
        """One statement writing ``records`` checkpoints (``$1`` run id, then node id, payload,
        ref per record), the run-index row when ``indexed`` (pipeline, status, updated_at next),
        only while the fencing token (last parameter) is current when ``fenced``. Returns the
        number of checkpoints written."""
        key = (records, fenced, indexed)
        sql = self._writes.get(key)
        if sql is None:
            t, lt, rt = self.table, self.lease_table, self.runs_table
            n = 1 + 3 * records
            rows = ", ".join(
                f"($1::text, ${2 + 3 * i}::text, ${3 + 3 * i}::text, ${4 + 3 * i}::text)"
                for i in range(records)
            )
            gate = " WHERE EXISTS (SELECT 1 FROM f)" if fenced else ""
            parts = []
            if fenced:
                token = n + (3 if indexed else 0) + 1
                parts.append(
                    f"f AS (SELECT 1 FROM {lt} WHERE run_id = $1 AND token = ${token}::bigint FOR SHARE)"
                )
            parts.append(
                f"ck AS (INSERT INTO {t} (run_id, node_id, payload, schema_ref) "
                f"SELECT * FROM (VALUES {rows}) v{gate} "
                "ON CONFLICT (run_id, node_id) DO UPDATE SET payload = EXCLUDED.payload, "
                "schema_ref = EXCLUDED.schema_ref, updated_at = now() RETURNING 1)"
            )
            if indexed:
                parts.append(
                    f"ix AS (INSERT INTO {rt} AS r (run_id, pipeline, status, updated_at) "
                    f"SELECT $1::text, ${n + 1}::text, ${n + 2}::text, ${n + 3}::float8{gate} "
                    "ON CONFLICT (run_id) DO UPDATE SET pipeline = coalesce(EXCLUDED.pipeline, "
                    "r.pipeline), status = EXCLUDED.status, updated_at = EXCLUDED.updated_at)"
                )
            sql = self._writes[key] = f"WITH {', '.join(parts)} SELECT count(*) FROM ck"
        return sql

    def __repr__(self) -> str:
        return f"PostgresStore({self.dsn!r}, table={self.table!r})"

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- pool and errors ---------------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        return state

    async def pool(self) -> Any:
        """The asyncpg pool of the running event loop (created, with the tables, on first use)."""
        state = self._state()
        if state.ready:
            return state.pool
        async with state.lock:
            if state.pool is None:
                with self._mapped("connect"):
                    state.pool = await self._asyncpg.create_pool(self._dsn, **self._pool_kwargs)
            if not state.ready:
                pool = state.pool
                with self._mapped("create its tables"):
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK)
                        await conn.execute(self._ddl)
                state.ready = True
        return state.pool

    async def aclose(self) -> None:
        """Close the pool of the running event loop."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None and state.pool is not None:
            await state.pool.close()

    @asynccontextmanager
    async def _conn(self, action: str) -> AsyncIterator[Any]:
        pool = await self.pool()
        with self._mapped(action):
            async with pool.acquire() as conn:
                yield conn

    class _Mapped:
        def __init__(self, store: PostgresStore, action: str) -> None:
            self.store = store
            self.action = action

        def __enter__(self) -> None:
            return None

        def __exit__(self, etype: Any, exc: BaseException | None, tb: Any) -> None:
            if exc is None or not isinstance(exc, Exception):
                return
            store = self.store
            pg = store._asyncpg
            message = scrub(str(exc), store._secrets)
            if isinstance(exc, pg.exceptions.InvalidAuthorizationSpecificationError):
                raise ConfigurationError(
                    f"PostgreSQL at {store.dsn} refused the credentials while trying to "
                    f"{self.action} ({message}); check the user and password in the DSN"
                ) from None
            if isinstance(
                exc, UnicodeEncodeError | pg.exceptions.DataError | pg.exceptions.ProgramLimitExceededError
            ):
                raise StoreDataError(
                    f"PostgreSQL at {store.dsn} cannot store a value while trying to "
                    f"{self.action} ({type(exc).__name__}: {message}); ids must be unicode text "
                    "without NUL bytes or lone surrogates, short enough to index (about 2 KB)",
                ) from None
            if isinstance(exc, pg.exceptions.InvalidCatalogNameError):
                raise ConfigurationError(
                    f"PostgreSQL at {store.dsn}: {message}; create the database or fix the DSN"
                ) from None
            if isinstance(
                exc,
                OSError
                | TimeoutError
                | pg.exceptions.PostgresConnectionError
                | pg.exceptions.OperatorInterventionError
                | pg.exceptions.InsufficientResourcesError
                | pg.exceptions.InterfaceError,
            ):
                raise StoreUnavailableError(
                    f"PostgreSQL at {store.dsn} is unavailable, could not {self.action} "
                    f"({type(exc).__name__}: {message}); the node is retried. Check that the "
                    "server is running and reachable"
                ) from None

    def _mapped(self, action: str) -> PostgresStore._Mapped:
        return PostgresStore._Mapped(self, action)

    # -- raw protocol -----------------------------------------------------------------------

    async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
        """Save a JSON payload and its schema reference (one statement)."""
        await self._write(run_id, [(node_id, payload, ref)], None, "save a checkpoint")

    async def commit_raw(
        self,
        run_id: str,
        node_id: str,
        payload: str,
        ref: str,
        progress: str,
        token: int | None = None,
    ) -> None:
        """Write a node's checkpoint and the run's progress record in one statement; with
        ``token``, refused (LeaseLostError) unless it is the run's current fencing token."""
        records = commit_records(node_id, payload, ref, progress)
        await self._write(run_id, records, token, "commit a checkpoint")

    async def _write(
        self, run_id: str, records: list[tuple[str, str, str]], token: int | None, action: str
    ) -> None:
        _check_ids(run_id, *(r[0] for r in records))
        entry = next((e for e in (index_fields(r[0], r[1]) for r in records) if e), None)
        args: list[Any] = [run_id]
        for record in records:
            args.extend(record)
        if entry is not None:
            args.extend(entry)
        if token is not None:
            args.append(token)
        sql = self._write_sql(len(records), token is not None, entry is not None)
        async with self._conn(action) as conn:
            written = await conn.fetchval(sql, *args)
            if not written and token is not None:
                raise lease_lost(run_id, token, await conn.fetchval(self._sql_token, run_id))

    async def load_raw(self, run_id: str, node_id: str) -> tuple[str, str] | None:
        """The stored payload and schema reference of a checkpoint, or None."""
        async with self._conn("load a checkpoint") as conn:
            row = await conn.fetchrow(self._sql_load, run_id, node_id)
        return None if row is None else (row[0], row[1])

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> int:
        """Take the run's lease for ``ttl_s`` seconds unless another owner holds a live one;
        returns its fencing token, or 0 when refused."""
        _check_ids(run_id)
        async with self._conn("take a lease") as conn:
            got = await conn.fetchval(self._sql_lease, run_id, owner, float(ttl_s))
        return 0 if got is None else int(got)

    async def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease back (only its owner can). The row stays, with its fencing token."""
        async with self._conn("release a lease") as conn:
            await conn.execute(self._sql_release, run_id, owner)

    async def _list_runs(
        self, status: str | None, pipeline: str | None, updated_before: float | None, limit: int
    ) -> list[RunRecord]:
        where, args = where_clause(status, pipeline, updated_before, "$")
        sql = f"{self._sql_list}{where} ORDER BY r.updated_at, r.run_id LIMIT ${len(args) + 1}"
        async with self._conn("list runs") as conn:
            rows = await conn.fetch(sql, *args, limit)
        records = (run_record(r[0], r[1], r[2], bool(r[3])) for r in rows)
        return [r for r in records if r is not None]

    # -- the published structural API --------------------------------------------------------

    async def delete(self, run_id: str) -> None:
        """Delete every checkpoint of ``run_id`` (exact match; other runs are untouched)."""
        async with self._conn("delete a run") as conn:
            await conn.execute(self._sql_delete, run_id)


def _check_ids(*ids: str) -> None:
    """StoreDataError for an id PostgreSQL's text type cannot hold (a NUL byte)."""
    for value in ids:
        if isinstance(value, str) and "\x00" in value:
            raise StoreDataError(
                f"PostgreSQL cannot store the id {value[:80]!r}: it holds a NUL byte (text "
                "columns cannot); use ids without NUL characters",
                key=value[:200],
            )
