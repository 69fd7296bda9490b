"""The lifecycle event stream and the hooks that listen to it."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from stroma import FailureClass, NodeHooks, RunStatus, StromaRunner, register_hooks, unregister_hooks
from stroma.events import (
    EVENT_TYPES,
    AttemptFailed,
    CheckpointSaved,
    ContractViolated,
    FailureClassified,
    RetryScheduled,
    RunFinished,
    RunStarted,
    event_from_dict,
    event_to_dict,
)
from stroma.testing import FakeClock, capture_events

from .conftest import Count, Doc, Summary


def flaky_runner() -> tuple[StromaRunner, Any]:
    """A runner with one node that fails once with a TimeoutError, then succeeds."""
    runner = StromaRunner.quick(run_id="ev")
    calls = {"n": 0}

    @runner.node("flaky", input=Count, output=Count)
    async def flaky(state: Count) -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TimeoutError("secret-token-in-message")
        return {"n": state.n + 1}

    return runner, flaky


async def test_retry_then_success_emits_the_documented_sequence(clock: FakeClock) -> None:
    """The stream reads run → node → attempt fail → classify → retry → attempt ok → checkpoint → end."""
    runner, flaky = flaky_runner()
    result = await runner.run([flaky], Count(n=0))
    assert [e.kind for e in result.trace.log] == [
        "RunStarted",
        "NodeStarted",
        "AttemptStarted",
        "FailureClassified",
        "AttemptFailed",
        "RetryScheduled",
        "AttemptStarted",
        "CheckpointSaved",
        "AttemptSucceeded",
        "NodeFinished",
        "RunFinished",
    ]
    saved = next(e for e in result.trace.log if isinstance(e, CheckpointSaved))
    assert (saved.store, saved.size_bytes) == ("memory", len('{"n":1}'))
    classified = next(e for e in result.trace.log if isinstance(e, FailureClassified))
    assert (classified.failure_class, classified.decided_by, classified.error_type) == (
        "RECOVERABLE",
        "builtin:TimeoutError",
        "TimeoutError",
    )
    finished = result.trace.log[-1]
    assert isinstance(finished, RunFinished)
    assert (finished.status, finished.failures) == ("COMPLETED", 1)


async def test_contract_violation_event_carries_paths_not_values(clock: FakeClock) -> None:
    """ContractViolated names the failing fields and never the offending values."""
    runner = StromaRunner.quick()

    @runner.node("bad", input=Doc, output=Summary)
    async def bad(state: Doc) -> dict[str, Any]:
        return {"summary": "ok", "word_count": "VALUE-CANARY"}

    result = await runner.run([bad], Doc(text="x"))
    violated = next(e for e in result.trace.log if isinstance(e, ContractViolated))
    assert violated.direction == "output"
    assert violated.field_paths == ("word_count",)
    assert violated.error_count == 1
    assert "VALUE-CANARY" not in repr(event_to_dict(violated))


async def test_published_hooks_fire_per_attempt_sync_and_async(clock: FakeClock) -> None:
    """on_node_start/success/failure get the published arguments; sync and async hooks both work."""
    calls: list[tuple[Any, ...]] = []

    async def start(run_id: str, node_id: str, state: dict[str, Any]) -> None:
        calls.append(("start", run_id, node_id, state))

    def success(run_id: str, node_id: str, output: dict[str, Any], tokens: int) -> None:
        calls.append(("success", node_id, output, tokens))

    async def failure(run_id: str, node_id: str, exc: Exception, failure_class: FailureClass) -> None:
        calls.append(("failure", node_id, type(exc).__name__, failure_class))

    runner, flaky = flaky_runner()
    runner.with_hooks(NodeHooks(on_node_start=start, on_node_success=success, on_node_failure=failure))
    await runner.run([flaky], Count(n=0))
    assert calls == [
        ("start", "ev", "flaky", {"n": 0}),
        ("failure", "flaky", "TimeoutError", FailureClass.RECOVERABLE),
        ("start", "ev", "flaky", {"n": 0}),
        ("success", "flaky", {"n": 1}, 0),
    ]


async def test_several_hooks_compose_with_global_ones(clock: FakeClock) -> None:
    """Runner hooks added twice and a process-wide hook all see every event, in that order."""
    seen: list[str] = []
    first = NodeHooks(on_retry_scheduled=lambda e: seen.append("first"))
    second = NodeHooks(on_retry_scheduled=lambda e: seen.append("second"))
    process_wide = NodeHooks(on_retry_scheduled=lambda e: seen.append("global"))
    runner, flaky = flaky_runner()
    runner.with_hooks(first).with_hooks(second)
    register_hooks(process_wide)
    try:
        await runner.run([flaky], Count(n=0))
    finally:
        unregister_hooks(process_wide)
    assert seen == ["first", "second", "global"]
    await runner.run([flaky], Count(n=0))
    assert seen == ["first", "second", "global"]  # unregistered; flaky no longer fails


async def test_a_raising_hook_never_breaks_the_run(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises on every event is logged once, counted, and the run completes."""

    def broken(event: Any) -> None:
        raise RuntimeError("hook bug")

    async def broken_async(run_id: str, node_id: str, state: dict[str, Any]) -> None:
        raise ValueError("async hook bug")

    runner, flaky = flaky_runner()
    runner.with_hooks(NodeHooks(on_event=broken, on_node_start=broken_async))
    with caplog.at_level(logging.WARNING, logger="stroma.hooks"):
        result = await runner.run([flaky], Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert result.hook_errors == len(result.trace.log) + 2
    logged = [r for r in caplog.records if r.name == "stroma.hooks"]
    assert len(logged) == 2


async def test_capture_events_sees_every_run_in_the_block(clock: FakeClock) -> None:
    """stroma.testing.capture_events records the stream of runs started inside it."""
    runner, flaky = flaky_runner()
    with capture_events() as events:
        await runner.run([flaky], Count(n=0))
    assert events.kinds()[0] == "RunStarted"
    assert len(events.of(RetryScheduled)) == 1
    failed = events.of(AttemptFailed)[0]
    assert isinstance(failed, AttemptFailed)
    assert isinstance(failed.exception, TimeoutError)


def test_every_event_type_round_trips_through_its_dict_form() -> None:
    """event_to_dict/event_from_dict are inverse for every event type (the exception stays behind)."""
    samples: dict[type[Any], dict[str, Any]] = {}
    for kind, cls in EVENT_TYPES.items():
        values: dict[str, Any] = {"run_id": "r", "ts": 1.5}
        for f in dataclasses.fields(cls):
            if f.name in values or f.name == "exception":
                continue
            annotation = str(f.type)
            if annotation.startswith("tuple[tuple"):
                values[f.name] = (("a.b", "Field required"),)
            elif annotation.startswith("tuple"):
                values[f.name] = ("a", "b")
            elif annotation.startswith("dict"):
                values[f.name] = {"k": "v"}
            elif annotation.startswith("int"):
                values[f.name] = 3
            elif annotation.startswith("float"):
                values[f.name] = 2.5
            elif annotation == "BudgetDecision":
                values[f.name] = "allow"
            else:
                values[f.name] = f"{kind}-{f.name}"
        event = cls(**values)
        samples[cls] = values
        assert event_from_dict(event_to_dict(event)) == event
    assert RunStarted in samples


def test_events_are_frozen() -> None:
    """Listeners cannot change what the engine decided."""
    event = RunFinished(
        run_id="r", ts=0.0, status="COMPLETED", duration_ms=1, total_tokens=0, total_cost_usd=0, failures=0
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.status = "FAILED"  # type: ignore[misc]


async def test_a_hanging_async_hook_is_abandoned(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """An async hook that never returns is cut off after HOOK_TIMEOUT_S and counted; the run completes."""
    import asyncio

    import stroma.hooks

    monkeypatch.setattr(stroma.hooks, "HOOK_TIMEOUT_S", 0.01)

    async def hangs(event: Any) -> None:
        await asyncio.Event().wait()

    runner, flaky = flaky_runner()
    runner.with_hooks(NodeHooks(on_run_start=hangs))
    result = await runner.run([flaky], Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert result.hook_errors == 1
