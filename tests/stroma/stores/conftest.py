"""Store fixtures for the store tests: every store kind, plus a raw writer that plants data
straight into each store's storage (bypassing the store) for the hostile-payload checks, and a
3-master Redis Cluster started on free loopback ports (``redis_cluster_url``)."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stroma import AsyncInMemoryStore, InMemoryStore, PostgresStore, RedisStore, SqliteStore, SyncRedisStore
from stroma.checkpoint.sqlite import _SCHEMA as SQLITE_SCHEMA
from tests.conftest import _free_port, redis_server_binary

ALL_KINDS = ["async_memory", "memory", "sqlite", "redis", "sync_redis", "postgres"]
CLUSTER_KINDS = ["redis_cluster", "sync_redis_cluster"]
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


def redis_admin(url: str, cluster: bool = False) -> Any:
    """A plain redis-py client (a RedisCluster one for a cluster URL)."""
    import redis

    return redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)


def _redis_writer(url: str, store: Any) -> Callable[[str, str, str | bytes, str], None]:
    def write(run_id: str, node_id: str, payload: str | bytes, ref: str) -> None:
        client = redis_admin(url, store.cluster)
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
        elif kind in ("redis", "sync_redis", "redis_cluster", "sync_redis_cluster"):
            cluster = kind.endswith("cluster")
            url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
            cls = SyncRedisStore if kind.startswith("sync") else RedisStore
            store = cls(url, key_prefix=f"stroma-test-{unique}", cluster=cluster, **kwargs)
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


def _cluster_ok(port: int) -> bool:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True,
        timeout=10, check=False,
    )
    return "cluster_state:ok" in out.stdout


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master Redis Cluster of this session's own on free loopback ports; skips only when
    redis-server (or redis-cli, to create the cluster) is absent."""
    binary = redis_server_binary()
    if binary is None or shutil.which("redis-cli") is None:
        pytest.skip("no redis-server and redis-cli on PATH: cannot start a Redis Cluster")
    base = tmp_path_factory.mktemp("redis-cluster")
    ports = [_cluster_port() for _ in range(3)]
    procs = []
    try:
        for port in ports:
            home = base / str(port)
            home.mkdir()
            procs.append(subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(home),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--appendonly", "no", "--save", "", "--protected-mode", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        deadline = time.monotonic() + 20.0
        while not all(_ping(port) for port in ports):
            exited = [p.args for p in procs if p.poll() is not None]
            assert not exited, f"cluster nodes exited: {exited}"
            assert time.monotonic() < deadline, "cluster nodes did not start"
            time.sleep(0.05)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        while not all(_cluster_ok(port) for port in ports):
            assert time.monotonic() < deadline + 40, "the cluster did not reach state ok"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is a valid, free port too."""
    for _ in range(100):
        port = _free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _ping(port: int) -> bool:
    out = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True,
                         timeout=10, check=False)
    return out.stdout.strip() == "PONG"
