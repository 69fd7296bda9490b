"""Kill -9 fuzz: a pipeline SIGKILLed at random points resumes from each durable store, ends
with the state of an uninterrupted run, and never re-runs a committed node."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stroma import CheckpointManager, PostgresStore, RedisStore, SqliteStore
from stroma.checkpoint import RunRecord
from tests.stroma.stores.conftest import DURABLE_KINDS, redis_admin

PIPELINE = Path(__file__).with_name("crash_pipeline.py")
NODES = 10
NODE_IDS = [f"n{i:02d}" for i in range(NODES)]
KILLS_PER_STORE = int(os.environ.get("STROMA_KILLS", "20"))  # kills before the last commit


@dataclass
class Target:
    """Where one store kind keeps a test's data, and how to reach beneath it."""

    kind: str
    target: str
    key_prefix: str = "stroma"
    table: str = "stroma_checkpoints"

    @property
    def cluster(self) -> bool:
        """Whether the target is a Redis Cluster."""
        return self.kind == "redis_cluster"

    def argv(self, run_id: str, ledger: Path) -> list[str]:
        """The crash pipeline's command line."""
        store = "redis" if self.cluster else self.kind
        return [
            sys.executable, str(PIPELINE), "--store", store, "--target", self.target,
            "--run-id", run_id, "--ledger", str(ledger), "--key-prefix", self.key_prefix,
            "--table", self.table, "--nodes", str(NODES), *(["--cluster"] if self.cluster else []),
        ]

    def store(self) -> Any:
        """A fresh store object on the same storage."""
        if self.kind == "sqlite":
            return SqliteStore(self.target)
        if self.kind.startswith("redis"):
            return RedisStore(self.target, key_prefix=self.key_prefix, cluster=self.cluster)
        return PostgresStore(self.target, table=self.table)

    def list_runs(self, **filters: Any) -> list[RunRecord]:
        """``list_runs`` on a fresh store object."""

        async def read() -> list[RunRecord]:
            store = self.store()
            try:
                return await CheckpointManager(store).list_runs(**filters)
            finally:
                await store.aclose()

        return asyncio.run(read())

    def last_committed(self, run_id: str) -> str | None:
        """The last committed node of ``run_id`` as the store records it now."""

        async def read() -> str | None:
            store = self.store()
            try:
                progress = await CheckpointManager(store).load_progress(run_id)
            finally:
                await store.aclose()
            return progress.last_node if progress is not None else None

        return asyncio.run(read())

    def expire_lease(self, run_id: str) -> None:
        """Expire the lease a killed worker left (what its TTL would do after LEASE_TTL_S;
        the row, with its fencing token, stays)."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.target, timeout=30)
            with conn:
                conn.execute("UPDATE stroma_leases SET expires_at = 0 WHERE run_id = ?", (run_id,))
            conn.close()
        elif self.kind.startswith("redis"):
            client = redis_admin(self.target, self.cluster)
            store = RedisStore(self.target, key_prefix=self.key_prefix, cluster=self.cluster)
            client.delete(store.lease_key(run_id))
            client.close()
        else:
            import asyncpg

            async def drop() -> None:
                conn = await asyncpg.connect(self.target)
                await conn.execute(
                    f"UPDATE {self.table}_leases SET expires_at = '-infinity' WHERE run_id = $1",
                    run_id,
                )
                await conn.close()

            asyncio.run(drop())


@dataclass
class Outcome:
    """What happened to one fuzzed run."""

    final: dict[str, Any] | None = None
    status: str = ""
    kills: int = 0
    pipeline_s: float = 0.0  # ready -> result of the process that completed
    committed_at_kill: list[tuple[int, str | None]] = field(default_factory=list)


def run_until_done(
    target: Target, run_id: str, ledger: Path, rng: random.Random | None, window_s: float = 0.0
) -> Outcome:
    """Start the pipeline, SIGKILL it at a random point, resume, until it completes.

    The kill comes after a delay drawn from [0, window_s * (remaining + 1) / NODES) once the
    process is ready: spread over the nodes it still has to run (window_s is how long a whole
    uninterrupted pipeline takes). With ``rng`` None, once every node is committed, or after
    three kills in a row that made no progress (kills during the resume's own start-up), the
    process is left to finish, so every run completes.
    """
    outcome = Outcome()
    last: str | None = None
    for _ in range(200):
        remaining = NODES - (NODE_IDS.index(last) + 1 if last is not None else 0)
        proc = subprocess.Popen(
            target.argv(run_id, ledger), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready == b"ready\n", proc.stderr.read() if proc.stderr else ready
        t_ready = time.monotonic()
        recent = [c for _, c in outcome.committed_at_kill[-3:]]
        stuck = len(recent) == 3 and len(set(recent)) == 1
        kill = rng is not None and remaining > 0 and not stuck
        if not kill:
            line = proc.stdout.readline()
            outcome.pipeline_s = time.monotonic() - t_ready
            rest, err = proc.communicate()
            out = line + rest
        try:
            if kill:
                assert rng is not None
                span = window_s * (remaining + 2) / NODES
                out, err = proc.communicate(timeout=rng.uniform(0.0, span))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            outcome.kills += 1
            # how many ledger lines existed at the kill, and what the store says is committed
            lines = len(ledger.read_text().splitlines()) if ledger.exists() else 0
            last = target.last_committed(run_id)
            outcome.committed_at_kill.append((lines, last))
            target.expire_lease(run_id)
            continue
        if proc.returncode != 0 and b"RunLeasedError" in err:
            # A killed worker's last request (its lease) can reach the server after we expired
            # the lease above: expire it again, as its TTL would, and start over.
            target.expire_lease(run_id)
            continue
        assert proc.returncode == 0, err.decode()
        result = json.loads(out.decode().strip().splitlines()[0])
        outcome.final, outcome.status = result["final"], result["status"]
        return outcome
    raise AssertionError(f"run {run_id} never completed")


def check_ledger(ledger: Path, outcome: Outcome) -> None:
    """No node committed before a kill ran again after it; only the node in flight may rerun."""
    entries = [line.split() for line in ledger.read_text().splitlines()]
    # 1. nothing committed at a kill is started again by any later process
    for lines_at_kill, last in outcome.committed_at_kill:
        if last is None:
            continue
        committed = set(NODE_IDS[: NODE_IDS.index(last) + 1])
        rerun = [e for e in entries[lines_at_kill:] if e[1] in committed]
        assert not rerun, f"committed nodes ran again after a kill: {rerun}"
    # 2. each process starts at the node in flight when the previous one died, or the next one
    groups: list[list[str]] = []
    pids: list[str] = []
    for pid, node, _attempt in entries:
        if not pids or pids[-1] != pid:
            pids.append(pid)
            groups.append([])
        groups[-1].append(node)
    assert len(set(pids)) == len(pids), "a process wrote to the ledger after another started"
    for before, after in itertools.pairwise(groups):
        last = NODE_IDS.index(before[-1])
        assert NODE_IDS.index(after[0]) in (last, last + 1), (before, after)
    for group in groups:
        idx = [NODE_IDS.index(n) for n in group]
        assert idx == list(range(idx[0], idx[0] + len(idx))), f"out of order: {group}"
    # 3. every node ran; re-runs are bounded by the kills
    assert {e[1] for e in entries} == set(NODE_IDS)
    assert len(entries) <= NODES + outcome.kills


@pytest.fixture
def target(
    request: pytest.FixtureRequest, kind: str, tmp_path: Path, unique: str
) -> Iterator[Target]:
    """The storage one kill -9 test uses (a fresh file, key prefix or table; dropped after)."""
    if kind == "sqlite":
        yield Target(kind, str(tmp_path / "crash.db"))
    elif kind == "redis":
        yield Target(kind, request.getfixturevalue("redis_url"), key_prefix=f"crash-{unique}")
    elif kind == "redis_cluster":
        url = request.getfixturevalue("redis_cluster_url")
        yield Target(kind, url, key_prefix=f"crash-{unique}")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        yield Target(kind, dsn, table=f"crash_{unique}")

        async def drop() -> None:
            import asyncpg

            conn = await asyncpg.connect(dsn)
            await conn.execute(
                f"DROP TABLE IF EXISTS crash_{unique}, crash_{unique}_leases, crash_{unique}_runs"
            )
            await conn.close()

        asyncio.run(drop())


@pytest.mark.parametrize("kind", [*DURABLE_KINDS, "redis_cluster"])
def test_kill9_resume_never_reruns_committed_nodes(
    kind: str, target: Target, tmp_path: Path, unique: str
) -> None:
    """SIGKILLed at random points and resumed each time, every run finishes with the final state
    of an uninterrupted run, and the fsynced ledger shows no committed node ran again."""
    seed = int(os.environ.get("STROMA_KILL_SEED", str(random.SystemRandom().randrange(2**32))))
    print(f"kill -9 fuzz seed for {kind}: {seed} (set STROMA_KILL_SEED to replay)")
    rng = random.Random(seed)

    clean = run_until_done(target, f"{unique}-clean", tmp_path / "clean.ledger", None)
    assert clean.kills == 0
    assert clean.status == "COMPLETED"
    assert clean.final is not None
    assert clean.final["path"] == NODE_IDS

    # kill points are drawn over the span an uninterrupted pipeline takes once it is ready
    window = clean.pipeline_s
    kills = mid_pipeline = runs = 0
    at_kill: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    while mid_pipeline < KILLS_PER_STORE:
        run_id = f"{unique}-fuzz-{runs}"
        ledger = tmp_path / f"fuzz-{runs}.ledger"
        outcome = run_until_done(target, run_id, ledger, rng, window)
        assert outcome.final == clean.final, f"seed {seed}: run {run_id} ended differently"
        assert outcome.status in ("COMPLETED", "RESUMED")
        check_ledger(ledger, outcome)
        kills += outcome.kills
        mid_pipeline += sum(last != NODE_IDS[-1] for _, last in outcome.committed_at_kill)
        runs += 1
        at_kill.update(str(last) for _, last in outcome.committed_at_kill)
    # every run is listed as finished, none as running (a killed worker's run was resumed)
    finished = {r.run_id: r for r in target.list_runs(limit=10_000)}
    assert {f"{unique}-fuzz-{i}" for i in range(runs)} | {f"{unique}-clean"} == set(finished)
    assert {r.status for r in finished.values()} <= {"COMPLETED", "RESUMED"}
    assert {(r.committed > 0, r.last_node, r.lease_held) for r in finished.values()} == {
        (True, NODE_IDS[-1], False)
    }
    print(
        f"{kind}: {kills} kills ({mid_pipeline} before the last commit) over {runs} runs in "
        f"{time.monotonic() - started:.1f} s; kill window {window * 1000:.0f} ms"
    )
    print(f"last committed node at each kill: {dict(sorted(at_kill.items()))}")
