"""Checkpoint store overhead against each server's own baseline, measured in the same run.

For every store: the latency of one checkpoint save (``CheckpointManager.commit``: the node's
checkpoint and the run's progress record, atomically) and saves/s at concurrency 1 and 50,
next to the cheapest comparable write the same server can do on the same connection(s):

- SqliteStore   vs a plain ``INSERT`` + ``COMMIT`` on its own connection (same pragmas);
- RedisStore    vs a plain ``SET`` through the same redis.asyncio pool (and ``redis-benchmark
                 -t set`` when it is on PATH, for reference);
- PostgresStore vs a plain ``INSERT`` through the same asyncpg pool.

It also proves a save is ONE round trip: every client connection goes through a relay that
counts request/response round trips, and Redis's INFO commandstats shows which commands a save
sent (EVALSHA of one Lua script running HSET and EXPIRE: one atomic write that would also check
a fencing token).

Run::

    /tmp/venv/bin/python benchmarks/stores.py [--n 2000] [--redis URL] [--postgres DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import BaseModel

from stroma import CheckpointManager, PostgresStore, RedisStore, SqliteStore
from stroma.checkpoint import RunProgress


class State(BaseModel):
    """A typical small node output (~200 bytes of JSON)."""

    summary: str
    tokens: int
    tags: list[str]


STATE = State(summary="x" * 160, tokens=123, tags=["a", "b", "c"])


class Relay:
    """Loopback TCP relay counting request/response round trips (see tests/.../_relay.py)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.round_trips = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen on a free port; returns it."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        last = ["s2c"]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, way: str) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if way == "c2s" and last[0] != "c2s":
                        self.round_trips += 1
                    last[0] = way
                    dst.write(data)
                    await dst.drain()
            dst.close()

        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.gather(pump(reader, up_writer, "c2s"), pump(up_reader, writer, "s2c"))


async def measure(op: Callable[[int], Awaitable[None]], n: int, concurrency: int) -> tuple[float, float]:
    """(median latency ms, operations/s) of ``n`` calls of ``op(i)`` at ``concurrency``."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await op(i)
            latencies.append((time.perf_counter() - t0) * 1000.0)

    for i in range(min(50, n)):  # warm up (connections, prepared statements)
        await op(-1 - i)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return statistics.median(latencies), n / elapsed


Row = tuple[str, int, float, float, float, float]


RUNS = 500
"""Saves are spread over this many runs (run i % RUNS, node i // RUNS): like many runs in flight,
each committing its nodes one after another, so concurrent saves rarely share a run."""


def key(i: int) -> str:
    """The baseline's key for save ``i`` (same spread as the store's run/node)."""
    return f"{i % RUNS}:{i // RUNS}"


def commit_op(
    manager: CheckpointManager, run: str, tokens: dict[str, int] | None = None
) -> Callable[[int], Awaitable[None]]:
    """One checkpoint save as the engine does it after a node (with the run's fencing token
    when ``tokens`` has one)."""

    async def op(i: int) -> None:
        run_id = f"{run}-{i % RUNS}"
        progress = RunProgress(run_id=run_id, last_node=f"n{i // RUNS}", committed=1)
        token = tokens.get(run_id) if tokens else None
        await manager.commit(run_id, f"n{i // RUNS}", STATE, progress, token=token)

    return op


async def fenced_rows(
    label: str, manager: CheckpointManager, baseline: Callable[[int], Awaitable[None]], n: int,
    rows: list[Row],
) -> None:
    """The same saves carrying a fencing token (each run's lease taken first), as every commit
    of a leased run does."""
    tokens = {}
    for r in range(RUNS):
        tokens[f"bench-{r}"] = await manager._call("acquire_lease", f"bench-{r}", "bench", 600.0)
    for conc in (1, 50):
        s_lat, s_ops = await measure(commit_op(manager, "bench", tokens), n, conc)
        b_lat, b_ops = await measure(baseline, n, conc)
        rows.append((f"{label} fenced", conc, s_lat, s_ops, b_lat, b_ops))
    for r in range(RUNS):
        await manager._call("release_lease", f"bench-{r}", "bench")


async def bench_sqlite(n: int, rows: list[Row]) -> None:
    """SqliteStore vs INSERT+COMMIT on one connection in a worker thread (same pragmas)."""
    tmp = Path(tempfile.mkdtemp())
    try:
        store = SqliteStore(tmp / "store.db")
        manager = CheckpointManager(store)
        base = sqlite3.connect(tmp / "base.db", isolation_level=None, check_same_thread=False)
        base.execute("PRAGMA journal_mode=WAL")
        base.execute("PRAGMA synchronous=FULL")
        base.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")
        payload = STATE.model_dump_json()
        executor = concurrent.futures.ThreadPoolExecutor(1)  # like the store: one thread

        def insert(i: int) -> None:
            base.execute("BEGIN")
            base.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (key(i), payload))
            base.execute("COMMIT")

        async def baseline(i: int) -> None:
            await asyncio.get_running_loop().run_in_executor(executor, insert, i)

        for conc in (1, 50):
            s_lat, s_ops = await measure(commit_op(manager, "bench"), n, conc)
            b_lat, b_ops = await measure(baseline, n, conc)
            rows.append(("sqlite (FULL)", conc, s_lat, s_ops, b_lat, b_ops))
        await fenced_rows("sqlite (FULL)", manager, baseline, n, rows)
        await store.aclose()
        base.close()
        executor.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def bench_redis(url: str, n: int, rows: list[Row], notes: list[str]) -> None:
    """RedisStore vs SET on the same pool; round trips through a counting relay."""
    import redis

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    parts = urllib.parse.urlsplit(url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 6379)
    port = await relay.start()
    relayed = url.replace(parts.netloc.rpartition("@")[2], f"127.0.0.1:{port}", 1)
    store = RedisStore(relayed, key_prefix=prefix)
    manager = CheckpointManager(store)
    client = store.client()
    payload = STATE.model_dump_json()

    async def baseline(i: int) -> None:
        await client.set(f"{prefix}:plain:{key(i)}", payload, ex=3600)

    admin = redis.Redis.from_url(url)
    await manager.commit("rt", "warm", STATE, RunProgress(run_id="rt"))
    before_stats = admin.info("commandstats")
    before = relay.round_trips
    for i in range(100):
        await manager.commit("rt", f"n{i}", STATE, RunProgress(run_id="rt"))
    trips = relay.round_trips - before
    after_stats = admin.info("commandstats")
    cmds = {
        k.removeprefix("cmdstat_"): after_stats[k]["calls"] - before_stats.get(k, {"calls": 0})["calls"]
        for k in after_stats
        if k != "cmdstat_info" and after_stats[k]["calls"] != before_stats.get(k, {"calls": 0})["calls"]
    }
    notes.append(
        f"redis: 100 commits = {trips} round trips; server commands {dict(sorted(cmds.items()))}"
    )
    for conc in (1, 50):
        s_lat, s_ops = await measure(commit_op(manager, "bench"), n, conc)
        b_lat, b_ops = await measure(baseline, n, conc)
        rows.append(("redis (via relay)", conc, s_lat, s_ops, b_lat, b_ops))
    await relay.close()
    # the same without the relay (what users get)
    direct = RedisStore(url, key_prefix=prefix)
    dmanager = CheckpointManager(direct)
    dclient = direct.client()

    async def dbaseline(i: int) -> None:
        await dclient.set(f"{prefix}:plain:{key(i)}", payload, ex=3600)

    for conc in (1, 50):
        s_lat, s_ops = await measure(commit_op(dmanager, "bench"), n, conc)
        b_lat, b_ops = await measure(dbaseline, n, conc)
        rows.append(("redis", conc, s_lat, s_ops, b_lat, b_ops))
    await fenced_rows("redis", dmanager, dbaseline, n, rows)
    for r in range(RUNS):
        await direct.delete(f"bench-{r}")
    await direct.delete("rt")
    for plain in admin.scan_iter(match=f"{prefix}:plain:*"):
        admin.delete(plain)
    await direct.aclose()
    await store.aclose()
    admin.close()
    tool = shutil.which("redis-benchmark")
    if tool and parts.hostname in ("127.0.0.1", "localhost") and not parts.password:
        done = await asyncio.to_thread(
            subprocess.run,
            [tool, "-h", parts.hostname, "-p", str(parts.port or 6379), "-t", "set", "-n",
             str(n * 5), "-c", "50", "-q"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        out = done.stdout.strip().splitlines()
        notes.append("redis-benchmark -t set -c 50: " + (out[-1].strip() if out else "n/a"))


async def bench_postgres(dsn: str, n: int, rows: list[Row], notes: list[str]) -> None:
    """PostgresStore vs a plain INSERT on the same pool; round trips through a counting relay."""
    table = f"bench_{uuid.uuid4().hex[:8]}"
    parts = urllib.parse.urlsplit(dsn)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await relay.start()
    relayed = dsn.replace(parts.netloc.rpartition("@")[2], f"127.0.0.1:{port}", 1)
    for label, target in (("postgres (via relay)", relayed), ("postgres", dsn)):
        store = PostgresStore(target, table=table, max_size=50)
        manager = CheckpointManager(store)
        pool = await store.pool()
        async with pool.acquire() as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table}_plain (k text PRIMARY KEY, v text)"
            )
        payload = STATE.model_dump_json()

        async def baseline(i: int, pool: object = pool, payload: str = payload) -> None:
            async with pool.acquire() as conn:  # type: ignore[attr-defined]
                await conn.execute(
                    f"INSERT INTO {table}_plain VALUES ($1, $2) "
                    "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                    key(i), payload,
                )

        if target is relayed:
            await manager.commit("rt", "warm", STATE, RunProgress(run_id="rt"))
            before = relay.round_trips
            for i in range(100):
                await manager.commit("rt", f"n{i}", STATE, RunProgress(run_id="rt"))
            notes.append(f"postgres: 100 commits = {relay.round_trips - before} round trips "
                         "(one INSERT of two rows per commit)")
        for conc in (1, 50):
            s_lat, s_ops = await measure(commit_op(manager, "bench"), n, conc)
            b_lat, b_ops = await measure(baseline, n, conc)
            rows.append((label, conc, s_lat, s_ops, b_lat, b_ops))
        if target is dsn:
            await fenced_rows(label, manager, baseline, n, rows)
            async with pool.acquire() as conn:
                await conn.execute(f"DROP TABLE {table}, {table}_leases, {table}_runs, {table}_plain")
        await store.aclose()
    await relay.close()


def table(rows: list[Row]) -> str:
    """The results as a text table."""
    head = (f"{'store':<22}{'conc':>5}{'save p50 ms':>13}{'base p50 ms':>13}{'lat ratio':>11}"
            f"{'saves/s':>10}{'base ops/s':>12}{'thr ratio':>11}")
    lines = [head, "-" * len(head)]
    for name, conc, s_lat, s_ops, b_lat, b_ops in rows:
        lines.append(
            f"{name:<22}{conc:>5}{s_lat:>13.3f}{b_lat:>13.3f}{s_lat / b_lat:>11.2f}"
            f"{s_ops:>10.0f}{b_ops:>12.0f}{b_ops / s_ops:>11.2f}"
        )
    return "\n".join(lines)


async def main() -> None:
    """Run every benchmark the environment allows and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="saves per measurement")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--postgres",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    rows: list[Row] = []
    notes: list[str] = []
    await bench_sqlite(args.n, rows)
    try:
        await bench_redis(args.redis, args.n, rows, notes)
    except Exception as exc:  # no server: say so and go on
        notes.append(f"redis skipped: {type(exc).__name__}: {exc}")
    try:
        await bench_postgres(args.postgres, args.n, rows, notes)
    except Exception as exc:
        notes.append(f"postgres skipped: {type(exc).__name__}: {exc}")
    print(table(rows))
    print("\nlat ratio = store p50 / baseline p50; thr ratio = baseline ops/s / store saves/s "
          "(1.00 = no overhead).\nA store save is CheckpointManager.commit: checkpoint + progress "
          "record, atomically.")
    for note in notes:
        print("-", note)


if __name__ == "__main__":
    asyncio.run(main())
