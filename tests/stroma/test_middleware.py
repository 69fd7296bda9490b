"""ReliabilityContext, execute_step and StromaStep: the loop without a runner."""

from __future__ import annotations

from typing import Any

from stroma import (
    AsyncInMemoryStore,
    CheckpointManager,
    ContractRegistry,
    ContractViolation,
    ReliabilityContext,
    RunConfig,
    RunStatus,
    StromaStep,
    default_policy_map,
    execute_step,
)
from stroma.testing import FakeClock

from .conftest import Count, Doc, Summary


def context(**config: Any) -> ReliabilityContext:
    """A context over an in-memory store with the default retry policies."""
    manager = CheckpointManager(AsyncInMemoryStore())
    return ReliabilityContext.for_run(
        RunConfig(run_id="mw", policy_map=default_policy_map(), **config), ContractRegistry(), manager
    )


async def test_wrapped_step_retries_checkpoints_and_traces(clock: FakeClock) -> None:
    """A StromaStep-wrapped function gets retries, a checkpoint and trace entries per attempt."""
    ctx = context()
    step = StromaStep(ctx)
    calls = {"n": 0}

    @step("count", input=Count, output=Count)
    async def count(state: Count) -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TimeoutError("once")
        return {"n": state.n + 1}

    result = await count(Count(n=1))
    assert result.status is RunStatus.COMPLETED
    assert result.final_state == Count(n=2)
    assert [e.failure is None for e in ctx.trace] == [False, True]
    assert await ctx.checkpoint_manager.resume("mw", "count", Count) == Count(n=2)  # type: ignore[union-attr]
    assert ctx.build_result(RunStatus.COMPLETED, result.final_state).status is RunStatus.COMPLETED
    assert len(clock.slept) == 1


async def test_wrapped_step_reports_a_terminal_failure_as_failed(clock: FakeClock) -> None:
    """A terminal failure is the result's FAILED status (0.3.2), not an exception; the context
    still names the node and its error."""
    ctx = context()

    @StromaStep(ctx)("bad", input=Doc, output=Summary)
    async def bad(state: Doc) -> dict[str, Any]:
        return {"nope": 1}

    result = await bad(Doc(text="x"))
    assert result.status is RunStatus.FAILED
    assert result.final_state is None
    assert ctx.last_failure is not None
    assert ctx.last_failure[0] == "bad"
    assert isinstance(ctx.last_failure[2], ContractViolation)
    assert "'bad' (output)" in str(ctx.last_failure[2])


async def test_execute_step_without_a_contract_returns_untyped_state(clock: FakeClock) -> None:
    """Without a contract the output is kept as given (and still checkpointed)."""
    ctx = context()

    async def free(state: Any) -> dict[str, Any]:
        return {"anything": [1, 2], "goes": True}

    result = await execute_step("free", free, {"x": 1}, ctx)
    assert result.status is RunStatus.COMPLETED
    assert result.final_state is not None
    assert result.final_state.anything == [1, 2]  # type: ignore[attr-defined]
    assert result.final_state.model_dump() == {"anything": [1, 2], "goes": True}
    assert ctx.trace.events[0].input_state == {"x": 1}


async def test_the_trace_keeps_one_event_per_attempt_under_its_0_3_2_names(clock: FakeClock) -> None:
    """ctx.trace has one TraceEvent per attempt: len(), iteration and ``_events`` (0.3.2) agree."""
    ctx = context()
    calls = {"n": 0}

    async def twice(state: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TimeoutError("once")
        return {"ok": True}

    result = await execute_step("twice", twice, {"x": 1}, ctx)
    assert result.status is RunStatus.COMPLETED
    assert len(ctx.trace) == 2
    assert [e.attempt for e in ctx.trace] == [1, 2]
    assert ctx.trace._events == list(ctx.trace)
    assert result.trace is ctx.trace


def test_reliability_context_has_the_0_3_2_fields_by_name() -> None:
    """Every field 0.3.2's ReliabilityContext dataclass had is readable by name, with what it says."""
    ctx = context(node_timeouts={"n": 5.0})
    for name in [
        "run_id",
        "registry",
        "checkpoint_manager",
        "cost_tracker",
        "retry_budget",
        "trace",
        "budget",
        "policy_map",
        "step_policies",
        "classifiers",
        "step_timeouts",
        "model_fallbacks",
        "hooks",
        "context",
        "run_logger",
    ]:
        assert hasattr(ctx, name), name
    assert ctx.run_id == "mw"
    assert ctx.cost_tracker is ctx.tracker
    assert ctx.step_timeouts == {"n": 5.0}
    assert ctx.policy_map == default_policy_map()
    assert ctx.budget.is_unlimited
    assert ctx.build_result("COMPLETED", None).status is RunStatus.COMPLETED
