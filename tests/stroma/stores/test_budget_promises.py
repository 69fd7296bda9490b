"""Promises kept under faults, on the real stores: budgets hold across resumes, retries and
parallel groups; one worker per run, run() included."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from stroma import (
    CheckpointManager,
    ContractViolation,
    ExecutionBudget,
    FailureClass,
    FailurePolicy,
    NodeContext,
    RunConfig,
    RunStatus,
    StromaRunner,
    default_policy_map,
    parallel,
)
from stroma.checkpoint import Lease
from stroma.errors import RunLeasedError
from stroma.events import AttemptFailed, BudgetChecked, NodeFinished
from stroma.testing import FakeClock, use_clock
from tests.stroma.stores.conftest import StoreKit

MakeStore = Callable[..., Awaitable[StoreKit]]

STORES = ["sqlite", "redis", "postgres"]


class Doc(BaseModel):
    """A document."""

    text: str


class Answer(BaseModel):
    """What a model answered."""

    answer: str


def dollars(amount: float) -> int:
    """Output tokens of gpt-4o that cost ``amount`` USD ($10 per 1M)."""
    return round(amount * 100_000)


def runner_for(manager: CheckpointManager, run_id: str, **config: Any) -> StromaRunner:
    """A runner on ``manager`` with the default policies and the given config."""
    config.setdefault("policy_map", default_policy_map())
    return StromaRunner(StromaRunner.quick().registry, manager, RunConfig(run_id=run_id, **config))


@pytest.mark.parametrize("kind", STORES)
async def test_resumes_of_a_run_with_nothing_committed_keep_its_spend(
    make_store: MakeStore, unique: str, kind: str
) -> None:
    """A $1 budget, a first node that spends $1.20 and ends PARTIAL, then three resume() calls: the
    node never runs again and the persisted spend stays $1.20 (not $4.80)."""
    kit = await make_store(kind)
    manager = CheckpointManager(kit.store)
    calls = {"n": 0}
    run_id = f"{unique}-spend"

    def build() -> tuple[StromaRunner, Any]:
        runner = runner_for(manager, run_id, budget=ExecutionBudget(max_cost_usd=1.0))

        @runner.node("pricey", input=Doc, output=Answer)
        async def pricey(state: Doc) -> tuple[dict[str, str], int, int, str]:
            calls["n"] += 1
            return {"answer": "x"}, 0, dollars(1.20), "gpt-4o"

        return runner, pricey

    with use_clock(FakeClock()):
        runner, node = build()
        first = await runner.run([node], Doc(text="t"))
        assert first.status is RunStatus.PARTIAL
        for _ in range(3):
            runner, node = build()
            again = await runner.resume([node], Doc(text="t"))
            assert again.status is RunStatus.PARTIAL
            assert again.total_cost_usd == pytest.approx(1.20)
    assert calls["n"] == 1
    progress = await manager.load_progress(run_id)
    assert progress is not None
    assert progress.cost_usd == pytest.approx(1.20)


@pytest.mark.parametrize("kind", STORES)
async def test_failed_attempts_spend_is_checked_before_the_next_retry(
    make_store: MakeStore, unique: str, kind: str
) -> None:
    """Malformed output made RECOVERABLE, 5 retries allowed, $0.60 an attempt, $1 budget: the second
    attempt's spend crosses the budget, the run stops PARTIAL with a deny, and the spend persists."""
    kit = await make_store(kind)
    manager = CheckpointManager(kit.store)
    run_id = f"{unique}-retries"

    def malformed_is_recoverable(exc: Exception, ctx: NodeContext) -> FailureClass | None:
        return FailureClass.RECOVERABLE if isinstance(exc, ContractViolation) else None

    runner = runner_for(
        manager,
        run_id,
        budget=ExecutionBudget(max_cost_usd=1.0),
        classifiers=[malformed_is_recoverable],
        policy_map={FailureClass.RECOVERABLE: FailurePolicy(max_retries=6, backoff_seconds=0.1)},
    )
    calls = {"n": 0}

    @runner.node("llm", input=Doc, output=Answer)
    async def llm(state: Doc) -> tuple[dict[str, str], int, int, str]:
        calls["n"] += 1
        return {"not_the_answer": "..."}, 0, dollars(0.60), "gpt-4o"

    with use_clock(FakeClock()):
        result = await runner.run([llm], Doc(text="t"))
    assert result.status is RunStatus.PARTIAL
    assert calls["n"] == 2
    assert result.total_cost_usd == pytest.approx(1.20)
    denials = [e for e in result.trace.log if isinstance(e, BudgetChecked) and e.decision == "deny"]
    assert len(denials) == 1
    progress = await manager.load_progress(run_id)
    assert progress is not None
    assert progress.cost_usd == pytest.approx(1.20)


@pytest.mark.parametrize("kind", STORES)
async def test_group_children_that_succeeded_are_kept_and_not_run_again(
    make_store: MakeStore, unique: str, kind: str
) -> None:
    """A group whose one child fails: the sibling that succeeded is committed and its spend counted;
    the group's retry and a later resume do not run it again."""
    kit = await make_store(kind)
    manager = CheckpointManager(kit.store)
    run_id = f"{unique}-group"
    ran: list[str] = []
    fail = {"flaky": 1, "broken": 1}

    def build() -> tuple[StromaRunner, list[Any]]:
        runner = runner_for(manager, run_id)

        @runner.node("steady", input=Doc, output=Answer)
        async def steady(state: Doc) -> tuple[dict[str, str], int, int, str]:
            ran.append("steady")
            return {"answer": "s"}, 0, dollars(0.10), "gpt-4o"

        @runner.node("flaky", input=Doc, output=Doc)
        async def flaky(state: Doc) -> dict[str, str]:
            ran.append("flaky")
            await asyncio.sleep(0)  # steady finishes first
            if fail["flaky"]:
                fail["flaky"] -= 1
                raise TimeoutError("flaky upstream")
            return {"text": "f"}

        @runner.node("after", input=Doc, output=Doc)
        async def after(state: Doc) -> dict[str, str]:
            ran.append("after")
            if fail["broken"]:
                fail["broken"] -= 1
                raise RuntimeError("not yet")
            return {"text": state.text + "!"}

        return runner, [parallel(steady, flaky), after]

    with use_clock(FakeClock()):
        runner, nodes = build()
        first = await runner.run(nodes, Doc(text="t"))
        assert first.status is RunStatus.FAILED  # "after" fails (ambiguous: one call)
        assert ran == ["steady", "flaky", "flaky", "after"]  # the group's retry skipped steady
        assert first.total_cost_usd == pytest.approx(0.10)
        runner, nodes = build()
        resumed = await runner.resume(nodes, Doc(text="t"))
    assert resumed.status is RunStatus.RESUMED
    assert ran[4:] == ["after"]
    assert resumed.final_state == Doc(text="f!")


@pytest.mark.parametrize("kind", [*STORES, "async_memory"])
async def test_two_concurrent_runs_of_one_run_id_run_once(
    make_store: MakeStore, unique: str, kind: str
) -> None:
    """run() takes the run's lease: of two concurrent run() calls with one run id, exactly one runs;
    the other gets RunLeasedError."""
    kit = await make_store(kind)
    manager = CheckpointManager(kit.store)
    runner = runner_for(manager, f"{unique}-twice")
    entered = asyncio.Event()
    release = asyncio.Event()
    calls = {"n": 0}

    @runner.node("slow", input=Doc, output=Doc)
    async def slow(state: Doc) -> dict[str, str]:
        calls["n"] += 1
        entered.set()
        await release.wait()
        return {"text": "done"}

    first = asyncio.ensure_future(runner.run([slow], Doc(text="t")))
    await entered.wait()
    with pytest.raises(RunLeasedError):
        await runner.run([slow], Doc(text="t"))
    release.set()
    assert (await first).status is RunStatus.COMPLETED
    assert calls["n"] == 1


async def test_run_of_a_finished_run_id_starts_afresh_and_names_resume(
    make_store: MakeStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """run() on a run id that already completed runs it again (0.3.2) and warns once, naming resume()."""
    kit = await make_store("sqlite")
    runner = runner_for(CheckpointManager(kit.store), f"{unique}-again")
    calls = {"n": 0}

    @runner.node("once", input=Doc, output=Doc)
    async def once(state: Doc) -> dict[str, str]:
        calls["n"] += 1
        return {"text": "x"}

    assert (await runner.run([once], Doc(text="t"))).status is RunStatus.COMPLETED
    with caplog.at_level(logging.WARNING, logger="stroma"):
        assert (await runner.run([once], Doc(text="t"))).status is RunStatus.COMPLETED
    assert calls["n"] == 2
    warnings = [r for r in caplog.records if "resume()" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("kind", STORES)
async def test_a_worker_that_lost_its_lease_stops_and_commits_nothing(
    make_store: MakeStore, unique: str, kind: str
) -> None:
    """Worker A is paused inside node b past its lease; worker B takes the run over and finishes it.
    When A wakes, its commit is refused (stale fencing token): A's run ends FAILED with
    LeaseLostError, node c never runs in A, and after the takeover each node ran exactly once."""
    store = (await make_store(kind)).store
    run_id = f"{unique}-takeover"
    ran: list[tuple[str, str]] = []
    paused, wake = asyncio.Event(), asyncio.Event()

    def build(worker: str) -> tuple[StromaRunner, list[Any], list[Lease]]:
        manager = CheckpointManager(store)
        leases: list[Lease] = []
        original = manager.lease

        @contextlib.asynccontextmanager
        async def watched(run: str, ttl_s: float = 30.0) -> AsyncIterator[Lease]:
            async with original(run, ttl_s) as lease:
                leases.append(lease)
                yield lease

        manager.lease = watched  # type: ignore[method-assign]
        runner = runner_for(manager, run_id)

        @runner.node("a", input=Doc, output=Doc)
        async def a(state: Doc) -> dict[str, str]:
            ran.append((worker, "a"))
            return {"text": state.text + "a"}

        @runner.node("b", input=Doc, output=Doc)
        async def b(state: Doc) -> dict[str, str]:
            ran.append((worker, "b"))
            if worker == "A":
                paused.set()
                await wake.wait()  # SIGSTOP, a blocked loop, a partition: past the lease
            return {"text": state.text + "b"}

        @runner.node("c", input=Doc, output=Doc)
        async def c(state: Doc) -> dict[str, str]:
            ran.append((worker, "c"))
            return {"text": state.text + "c"}

        return runner, [a, b, c], leases

    runner_a, nodes_a, leases_a = build("A")
    worker_a = asyncio.ensure_future(runner_a.run(nodes_a, Doc(text="")))
    await paused.wait()
    released = store.release_lease(run_id, leases_a[0].owner)  # what the lapsed TTL does
    if inspect.isawaitable(released):
        await released
    runner_b, nodes_b, _ = build("B")
    taken = await runner_b.resume(nodes_b, Doc(text=""))
    assert taken.status is RunStatus.RESUMED
    assert taken.final_state == Doc(text="abc")
    wake.set()
    result_a = await worker_a
    assert result_a.status is RunStatus.FAILED
    assert isinstance(result_a.trace.failures()[-1].failure_message, str)
    assert "stroma.errors.LeaseLostError" in {
        e.error_type for e in result_a.trace.log if isinstance(e, AttemptFailed)
    }
    assert ran == [("A", "a"), ("A", "b"), ("B", "b"), ("B", "c")]
    assert await CheckpointManager(store).resume(run_id, "c", Doc) == Doc(text="abc")
    progress = await CheckpointManager(store).load_progress(run_id)
    assert progress is not None
    assert progress.status == "RESUMED"


async def test_a_lease_marked_lost_stops_the_run_before_its_next_node(
    make_store: MakeStore, unique: str
) -> None:
    """When the renewer marks the lease lost, the worker runs no further node and says why."""
    manager = CheckpointManager((await make_store("sqlite")).store)
    original = manager.lease
    seen: list[Lease] = []

    @contextlib.asynccontextmanager
    async def spying(run: str, ttl_s: float = 30.0) -> AsyncIterator[Lease]:
        async with original(run, ttl_s) as lease:
            seen.append(lease)
            yield lease

    manager.lease = spying  # type: ignore[method-assign]
    runner = runner_for(manager, f"{unique}-lost")

    @runner.node("first", input=Doc, output=Doc)
    async def first(state: Doc) -> dict[str, str]:
        seen[0].lost, seen[0].reason = True, "renewals failed for a whole TTL"  # what the renewer does
        return {"text": "1"}

    @runner.node("second", input=Doc, output=Doc)
    async def second(state: Doc) -> dict[str, str]:
        raise AssertionError("a worker without its lease must not run a node")

    result = await runner.run([first, second], Doc(text=""))
    assert result.status is RunStatus.FAILED
    finished = [e for e in result.trace.log if isinstance(e, NodeFinished) and e.node_id == "second"]
    assert finished[0].error_type == "stroma.errors.LeaseLostError"
    assert finished[0].attempts == 0


@pytest.mark.parametrize("kind", STORES)
async def test_a_cancelled_run_is_recorded_cancelled_not_running(
    make_store: MakeStore, unique: str, kind: str
) -> None:
    """A run cancelled mid-node keeps its final status CANCELLED in the store, so recover() (which
    looks for runs still "running") leaves it alone."""
    manager = CheckpointManager((await make_store(kind)).store)
    run_id = f"{unique}-cancelled"
    runner = runner_for(manager, run_id)
    inside = asyncio.Event()

    @runner.node("hang", input=Doc, output=Doc)
    async def hang(state: Doc) -> dict[str, str]:
        inside.set()
        await asyncio.Event().wait()
        return {"text": "never"}

    task = asyncio.ensure_future(runner.run([hang], Doc(text="t")))
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    progress = await manager.load_progress(run_id)
    assert progress is not None
    assert progress.status == "CANCELLED"
    assert run_id not in {r.run_id for r in await manager.list_runs(status="running")}
