"""Store-specific promises the conformance suite cannot see from outside: one round trip per
save, TTL on every key, no KEYS/SCAN in delete, pooled connections, WAL + fsync and off-loop
work for SQLite, concurrent table creation for PostgreSQL, a clear error without the extra."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from pydantic import BaseModel

from stroma import CheckpointManager, PostgresStore, RedisStore, SqliteStore, SyncRedisStore
from stroma.checkpoint import RunProgress
from tests.stroma.stores._relay import RoundTripRelay


class Doc(BaseModel):
    """A checkpointed state."""

    text: str


def _commandstats(client: object) -> dict[str, int]:
    info = client.info("commandstats")  # type: ignore[attr-defined]
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


async def test_redis_save_and_commit_are_one_round_trip_and_one_transaction(
    redis_url: str, unique: str
) -> None:
    """Each save/commit is one network round trip running one script (HSET + EXPIRE, atomic),
    proven by a counting relay and the server's own commandstats."""
    import redis

    parts = urllib.parse.urlsplit(redis_url)
    relay = RoundTripRelay(parts.hostname or "127.0.0.1", parts.port or 6379)
    port = await relay.start()
    url = redis_url.replace(parts.netloc.rpartition("@")[2], f"127.0.0.1:{port}", 1)
    store = RedisStore(url, key_prefix=unique)
    manager = CheckpointManager(store)
    await store.save("warm", "up", Doc(text="x"))  # connect + handshake
    admin = redis.Redis.from_url(redis_url)
    before, trips = _commandstats(admin), relay.round_trips
    for i in range(20):
        await store.save("r", f"n{i}", Doc(text=str(i)))
    for i in range(20):
        await manager.commit("r", f"c{i}", Doc(text=str(i)), RunProgress(run_id="r"))
    assert relay.round_trips - trips == 40
    delta = _delta(before, _commandstats(admin))
    delta.pop("info", None)
    assert delta == {"evalsha": 40, "hset": 40, "expire": 40}
    assert relay.connections == 1  # the pool reused its one connection
    await store.delete("r")
    await store.delete("warm")
    await store.aclose()
    await relay.close()
    admin.close()


async def test_postgres_save_and_commit_are_one_round_trip(
    postgres_dsn: str, unique: str
) -> None:
    """After its statements are prepared, each save and each commit (checkpoint + progress) is
    one round trip on a pooled connection."""
    parts = urllib.parse.urlsplit(postgres_dsn)
    relay = RoundTripRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await relay.start()
    dsn = postgres_dsn.replace(parts.netloc.rpartition("@")[2], f"127.0.0.1:{port}", 1)
    store = PostgresStore(dsn, table=f"rt_{unique}", max_size=1)
    manager = CheckpointManager(store)
    await store.save("warm", "up", Doc(text="x"))  # connect, create, prepare
    await manager.commit("warm", "c", Doc(text="x"), RunProgress(run_id="warm"))
    trips = relay.round_trips
    for i in range(20):
        await store.save("r", f"n{i}", Doc(text=str(i)))
    for i in range(20):
        await manager.commit("r", f"c{i}", Doc(text=str(i)), RunProgress(run_id="r"))
    assert relay.round_trips - trips == 40
    assert relay.connections == 1
    pool = await store.pool()
    async with pool.acquire() as conn:
        await conn.execute(f"DROP TABLE rt_{unique}, rt_{unique}_leases, rt_{unique}_runs")
    await store.aclose()
    await relay.close()


async def test_redis_every_key_has_the_ttl_and_delete_uses_no_keys_or_scan(
    redis_url: str, unique: str
) -> None:
    """Every key a run writes carries the TTL (the lease its own expiry), and delete is a DEL of
    that run's own hash (its fencing token stays, as a SQL lease row does): no KEYS or SCAN
    command runs, and a glob-named run id touches nothing else."""
    import redis

    store = RedisStore(redis_url, ttl_seconds=120, key_prefix=unique)
    admin = redis.Redis.from_url(redis_url)
    manager = CheckpointManager(store)
    for run in ("r*", "r?", "r[x]", "r", "r:x"):
        await manager.commit(run, "a", Doc(text=run), RunProgress(run_id=run, last_node="a"))
    assert await store.acquire_lease("r*", "me", 30.0)
    keys = sorted(k.decode() for k in admin.scan_iter(match=f"{unique}:*"))
    assert len(keys) == 7  # five run hashes, one lease and its fencing token
    for key in keys:
        ttl = admin.pttl(key)
        limit = 30_000 if key.endswith(":lease") else 120_000
        assert 0 < ttl <= limit, (key, ttl)
    assert store.hash_key("r*") == f"{unique}:{{r%2A}}:ckpt"  # no glob character survives
    before = _commandstats(admin)
    await store.delete("r*")
    delta = _delta(before, _commandstats(admin))
    delta.pop("info", None)
    assert delta == {"del": 1, "evalsha": 1, "zrem": 8}  # the hash, then its index entries
    left = sorted(k.decode() for k in admin.scan_iter(match=f"{unique}:*"))
    assert left == [k for k in keys if k != store.hash_key("r*")]
    for run in ("r?", "r[x]", "r", "r:x"):
        assert await store.load(run, "a") == Doc(text=run)
        await store.delete(run)
    await store.release_lease("r*", "me")
    await store.aclose()
    admin.close()


def test_sync_redis_store_shares_keys_with_the_async_one(redis_url: str, unique: str) -> None:
    """SyncRedisStore writes the same keys as RedisStore, so either can read the other's data."""
    sync = SyncRedisStore(redis_url, key_prefix=unique)
    sync.save("run", "a", Doc(text="from sync"))

    async def read() -> BaseModel | None:
        store = RedisStore(redis_url, key_prefix=unique)
        try:
            return await store.load("run", "a")
        finally:
            await store.aclose()

    assert asyncio.run(read()) == Doc(text="from sync")
    assert sync.ttl_remaining("run") is not None
    sync.delete("run")
    assert sync.load("run", "a") is None
    sync.close()


async def test_sqlite_uses_wal_and_full_sync_and_survives_reopen(tmp_path: Path) -> None:
    """The file is in WAL mode, the store commits with synchronous=FULL, and a new store on the
    same file reads what the first one committed."""
    path = tmp_path / "runs.db"
    store = SqliteStore(path)
    await CheckpointManager(store).commit(
        "run", "a", Doc(text="kept"), RunProgress(run_id="run", last_node="a")
    )
    level = await store._run(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
    assert level == 2  # FULL
    await store.aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    again = SqliteStore(path, synchronous="NORMAL")
    assert await again.load("run", "a") == Doc(text="kept")
    progress = await CheckpointManager(again).load_progress("run")
    assert progress is not None
    assert progress.last_node == "a"
    await again.aclose()


async def test_sqlite_work_runs_off_the_event_loop(tmp_path: Path) -> None:
    """While another connection holds the file's write lock, a save waits in the worker thread
    and the event loop keeps running other tasks; the save lands once the lock is released."""
    path = tmp_path / "runs.db"
    store = SqliteStore(path)
    await store.save("run", "a", Doc(text="first"))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    save = asyncio.ensure_future(store.save("run", "a", Doc(text="second")))
    ticks = 0
    for _ in range(50):  # the loop is free: these iterations run while the save is blocked
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 50
    assert not save.done()
    blocker.execute("COMMIT")
    blocker.close()
    await save
    assert await store.load("run", "a") == Doc(text="second")
    await store.aclose()


async def test_postgres_tables_created_once_under_concurrent_first_use(
    postgres_dsn: str, unique: str
) -> None:
    """Twenty stores hitting a missing table at the same moment all succeed (the DDL is
    serialised by an advisory lock), and they all see each other's data."""
    table = f"ddl_{unique}"
    stores = [PostgresStore(postgres_dsn, table=table) for _ in range(20)]
    await asyncio.gather(*(s.save("run", f"n{i}", Doc(text=str(i))) for i, s in enumerate(stores)))
    got = await asyncio.gather(*(stores[0].load("run", f"n{i}") for i in range(20)))
    assert got == [Doc(text=str(i)) for i in range(20)]
    pool = await stores[0].pool()
    async with pool.acquire() as conn:
        await conn.execute(f"DROP TABLE {table}, {table}_leases, {table}_runs")
    for store in stores:
        await store.aclose()


@pytest.mark.parametrize(
    ("blocked", "expression", "extra"),
    [
        ("redis", "RedisStore('redis://localhost:6379')", "redis"),
        ("redis", "SyncRedisStore('redis://localhost:6379')", "redis"),
        ("asyncpg", "PostgresStore('postgresql://localhost/db')", "postgres"),
    ],
)
def test_missing_driver_is_a_configuration_error_naming_the_extra(
    blocked: str, expression: str, extra: str
) -> None:
    """Without the driver package, creating the store raises ConfigurationError that says
    which extra to install."""
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from stroma import RedisStore, SyncRedisStore, PostgresStore, ConfigurationError\n"
        f"try:\n    {expression}\nexcept ConfigurationError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"pip install 'stroma[{extra}]'" in out
