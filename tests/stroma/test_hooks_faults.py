"""Hooks cannot stall or abort a run: circuit breaker for hung hooks, every exception contained (issue 16)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import stroma.hooks
from stroma import NodeHooks, RunStatus, StromaRunner
from stroma.testing import FakeClock

from .conftest import Count


def chain_runner() -> tuple[StromaRunner, list[Any]]:
    """A quick runner and a two-node chain (the second node fails once, then succeeds)."""
    runner = StromaRunner.quick()
    calls = {"b": 0}

    @runner.node("a", input=Count, output=Count)
    async def a(state: Count) -> dict[str, int]:
        return {"n": state.n + 1}

    @runner.node("b", input=Count, output=Count)
    async def b(state: Count) -> dict[str, int]:
        calls["b"] += 1
        if calls["b"] == 1:
            raise TimeoutError("once")
        return {"n": state.n + 1}

    return runner, [a, b]


@pytest.fixture
def instant_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook timeout of 0 s: a hung hook is abandoned at its first suspension, without waiting."""
    monkeypatch.setattr(stroma.hooks, "HOOK_TIMEOUT_S", 0.0)


@pytest.mark.usefixtures("instant_timeout")
async def test_a_hung_hook_is_abandoned_once_and_disabled_for_the_rest_of_the_run(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that never returns is awaited once per run, counted once and logged once; the run completes."""
    entered: list[str] = []

    async def hangs(event: Any) -> None:
        entered.append(event.kind)
        await asyncio.get_running_loop().create_future()  # never resolved

    seen: list[str] = []
    runner, nodes = chain_runner()
    runner.with_hooks(NodeHooks(on_event=hangs)).with_hooks(NodeHooks(on_event=lambda e: seen.append(e.kind)))
    with caplog.at_level(logging.WARNING, logger="stroma.hooks"):
        result = await runner.run(nodes, Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert entered == ["RunStarted"]
    assert result.hook_errors == 1
    assert [r.getMessage() for r in caplog.records if "disabled" in r.getMessage()] == [
        "stroma hook test_a_hung_hook_is_abandoned_once_and_disabled_for_the_rest_of_the_run.<locals>.hangs "
        "did not finish within 0s; it is disabled for the rest of this run"
    ]
    assert seen == [e.kind for e in result.trace.log]  # the other hook saw every event
    entered.clear()
    second = await runner.run(nodes, Count(n=0))
    assert (entered, second.hook_errors) == (["RunStarted"], 1)  # a new run tries the hook again


@pytest.mark.usefixtures("instant_timeout")
async def test_a_hook_that_raises_timeout_error_itself_is_not_disabled(clock: FakeClock) -> None:
    """Only the dispatcher's own timeout trips the breaker: a hook raising TimeoutError keeps being called."""
    calls: list[str] = []

    async def raises(event: Any) -> None:
        calls.append(event.kind)
        raise TimeoutError("the hook's own")

    runner, nodes = chain_runner()
    runner.with_hooks(NodeHooks(on_event=raises))
    result = await runner.run(nodes, Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert calls == [e.kind for e in result.trace.log]
    assert result.hook_errors == len(calls)


@pytest.mark.parametrize(
    "error", [SystemExit(3), KeyboardInterrupt(), asyncio.CancelledError(), GeneratorExit()]
)
@pytest.mark.parametrize("is_async", [False, True])
async def test_every_base_exception_from_a_hook_is_contained(
    clock: FakeClock, error: BaseException, is_async: bool
) -> None:
    """SystemExit, KeyboardInterrupt, CancelledError from a hook (sync or async) are counted, not fatal."""

    def sync_hook(run_id: str, node_id: str, state: dict[str, Any]) -> None:
        raise error

    async def async_hook(run_id: str, node_id: str, state: dict[str, Any]) -> None:
        raise error

    runner, nodes = chain_runner()
    runner.with_hooks(NodeHooks(on_node_start=async_hook if is_async else sync_hook))
    result = await runner.run(nodes, Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert result.hook_errors == 3  # a, b's failed attempt, b's retry


async def test_a_real_cancellation_of_the_run_still_cancels_it(clock: FakeClock) -> None:
    """Cancelling the run's task while a hook is awaited cancels the run, as before."""
    entered = asyncio.Event()

    async def waits(event: Any) -> None:
        entered.set()
        await asyncio.get_running_loop().create_future()

    runner, nodes = chain_runner()
    runner.with_hooks(NodeHooks(on_node_begin=waits))
    task = asyncio.create_task(runner.run(nodes, Count(n=0)))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
