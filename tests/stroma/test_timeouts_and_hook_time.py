"""Node timeouts discard late results and say what they cannot stop; hook time is never the node's."""

from __future__ import annotations

from typing import Any

import pytest

from stroma import NodeHooks, NodeTimeoutError, RunStatus, StromaRunner
from stroma.events import AttemptStarted, AttemptSucceeded
from stroma.testing import FakeClock
from tests.stroma.conftest import Count


async def test_a_plain_def_node_that_overruns_its_timeout_is_not_committed(clock: FakeClock) -> None:
    """A sync node cannot be interrupted; when it comes back late its result is discarded (never
    committed) and the error says why the timeout could not stop it."""
    runner = StromaRunner.quick().with_node_timeouts({"blocking": 100.0})
    calls = {"n": 0}

    @runner.node("blocking", input=Count, output=Count)
    def blocking(state: Count) -> dict[str, int]:
        calls["n"] += 1
        clock.advance(0.5)  # 500 ms of blocking work, past the 100 ms timeout
        return {"n": state.n + 1}

    result = await runner.run([blocking], Count(n=0))
    assert result.status is RunStatus.PARTIAL  # RECOVERABLE, retried, never in time
    assert calls["n"] == 3
    message = result.trace.failures()[0].failure_message or ""
    assert "100 ms timeout" in message
    assert "plain def node" in message
    assert await runner.checkpoint_manager.resume(result.run_id, "blocking", Count) is None
    assert issubclass(NodeTimeoutError, TimeoutError)


async def test_hook_time_is_not_charged_to_the_node(clock: FakeClock) -> None:
    """An async hook that takes 2 s on AttemptStarted adds nothing to the attempt's duration or to
    the latency the budget counts."""

    async def slow_hook(event: Any) -> None:
        if isinstance(event, AttemptStarted):
            clock.advance(2.0)

    runner = StromaRunner.quick().with_hooks(NodeHooks(on_event=slow_hook)).with_budget(latency_ms=1000)

    @runner.node("quick", input=Count, output=Count)
    async def quick(state: Count) -> dict[str, int]:
        clock.advance(0.010)
        return {"n": 1}

    result = await runner.run([quick], Count(n=0))
    assert result.status is RunStatus.COMPLETED
    succeeded = [e for e in result.trace.log if isinstance(e, AttemptSucceeded)]
    assert succeeded[0].duration_ms == pytest.approx(10.0)
    assert result.trace.events[0].duration_ms == pytest.approx(10.0)
