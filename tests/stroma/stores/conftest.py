"""Store fixtures for the store tests: every store kind, plus a raw writer that plants data
straight into each store's storage (bypassing the store) for the hostile-payload checks."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stroma import AsyncInMemoryStore, InMemoryStore, PostgresStore, RedisStore, SqliteStore, SyncRedisStore
from stroma.checkpoint.sqlite import _SCHEMA as SQLITE_SCHEMA

ALL_KINDS = ["async_memory", "memory", "sqlite", "redis", "sync_redis", "postgres"]
DURABLE_KINDS = ["sqlite", "redis", "postgres"]
PG_TABLE = "stroma_test_checkpoints"


@dataclass
class StoreKit:
    """A store under test and how to reach beneath it."""

    kind: str
    store: Any
    write_raw: Callable[[str, str, str | bytes, str], Any] | None = None
    ttl_of: Callable[[str], Any] | None = None
    url: str = ""


def _sqlite_writer(path: Path) -> Callable[[str, str, str | bytes, str], None]:
    def write(run_id: str, node_id: str, payload: str | bytes, ref: str) -> None:
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.executescript(SQLITE_SCHEMA)  # the store may not have created it yet
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO stroma_checkpoints "
                    "(run_id, node_id, payload, schema_ref, updated_at) VALUES (?, ?, ?, ?, 0)",
                    (run_id, node_id, payload, ref),
                )
        finally:
            conn.close()

    return write


def _redis_writer(url: str, store: Any) -> Callable[[str, str, str | bytes, str], None]:
    import redis

    def write(run_id: str, node_id: str, payload: str | bytes, ref: str) -> None:
        client = redis.Redis.from_url(url)
        try:
            client.hset(store.hash_key(run_id), mapping={f"p:{node_id}": payload, f"r:{node_id}": ref})
        finally:
            client.close()

    return write


def _postgres_writer(
    dsn: str, store: PostgresStore
) -> Callable[[str, str, str | bytes, str], Awaitable[None]]:
    import asyncpg

    async def write(run_id: str, node_id: str, payload: str | bytes, ref: str) -> None:
        if isinstance(payload, bytes):
            raise NotImplementedError("the payload column is text: it cannot hold raw bytes")
        await store.pool()  # the store creates its table on first use
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                f"INSERT INTO {PG_TABLE} (run_id, node_id, payload, schema_ref) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, node_id) DO UPDATE SET "
                "payload = EXCLUDED.payload, schema_ref = EXCLUDED.schema_ref",
                run_id, node_id, payload, ref,
            )
        finally:
            await conn.close()

    return write


def _memory_writer(store: InMemoryStore) -> Callable[[str, str, str | bytes, str], None]:
    def write(run_id: str, node_id: str, payload: str | bytes, ref: str) -> None:
        store._data.setdefault(run_id, {})[node_id] = (payload, ref)  # type: ignore[assignment]

    return write


@pytest.fixture
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[Callable[..., Awaitable[StoreKit]]]:
    """Build a store of a given kind (skipping when its server is unavailable); closes them all."""
    made: list[StoreKit] = []

    async def make(kind: str, **kwargs: Any) -> StoreKit:
        if kind == "async_memory":
            kit = StoreKit(kind, AsyncInMemoryStore())
        elif kind == "memory":
            store = InMemoryStore()
            kit = StoreKit(kind, store, write_raw=_memory_writer(store))
        elif kind == "sqlite":
            path = tmp_path / f"{unique}-{len(made)}.db"
            kit = StoreKit(kind, SqliteStore(path, **kwargs), _sqlite_writer(path), url=str(path))
        elif kind in ("redis", "sync_redis"):
            url = request.getfixturevalue("redis_url")
            cls = RedisStore if kind == "redis" else SyncRedisStore
            store = cls(url, key_prefix=f"stroma-test-{unique}", **kwargs)
            kit = StoreKit(kind, store, _redis_writer(url, store), url=url)
        elif kind == "postgres":
            dsn = request.getfixturevalue("postgres_dsn")
            store = PostgresStore(dsn, table=PG_TABLE, **kwargs)
            kit = StoreKit(kind, store, _postgres_writer(dsn, store), url=dsn)
        else:
            raise ValueError(kind)
        made.append(kit)
        return kit

    yield make
    for kit in made:
        if hasattr(kit.store, "aclose"):
            await kit.store.aclose()
        elif hasattr(kit.store, "close"):
            kit.store.close()
