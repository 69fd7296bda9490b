"""One step loop: a run somebody watches and a quiet one differ only in how events are recorded.

Each scenario runs the same pipeline three ways, each on a fresh fake clock: quiet (no listener:
compact records, events built when the trace is read), watched by a listener that does nothing
(events built and dispatched live), and watched through a run file (``with_trace_dir``). The
events (every field, timestamps included), the attempts, the results and the run files must be
identical.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from stroma import NodeHooks, RunStatus, StromaRunner, load_run, parallel
from stroma.checkpoint import AsyncInMemoryStore
from stroma.testing import FakeClock, seed_jitter, use_clock
from stroma.trace import ExecutionResult
from tests.stroma.conftest import Count


class Words(BaseModel):
    """Output of the usage-reporting node."""

    n: int
    words: list[str]


Scenario = Callable[[StromaRunner, FakeClock, AsyncInMemoryStore], Awaitable[ExecutionResult]]


async def success(runner: StromaRunner, clock: FakeClock, store: AsyncInMemoryStore) -> ExecutionResult:
    """Seven nodes: typed, usage tuple, flaky, ctx, parallel group, timed, sync."""
    runner = runner.with_node_timeouts({"timed": 5_000.0})
    calls = {"flaky": 0}

    @runner.node("first", input=Count, output=Count)
    async def first(state: Count) -> dict[str, int]:
        clock.advance(0.010)
        return {"n": state.n + 1}

    @runner.node("usage", input=Count, output=Words)
    async def usage(state: Count) -> tuple[dict[str, Any], int, int, str]:
        clock.advance(0.020)
        return {"n": state.n, "words": ["a", "b"]}, 120, 30, "gpt-4o-mini"

    @runner.node("flaky", input=Words, output=Count)
    async def flaky(state: Words) -> dict[str, int]:
        calls["flaky"] += 1
        clock.advance(0.005)
        if calls["flaky"] == 1:
            raise TimeoutError("upstream timed out")
        return {"n": state.n + 10}

    @runner.node("with_ctx", input=Count, output=Count)
    async def with_ctx(state: Count, ctx: dict[str, Any]) -> Count:
        return Count(n=state.n + len(ctx["_stroma_idempotency_key"]))

    @runner.node("left", input=Count, output=Count)
    async def left(state: Count) -> dict[str, int]:
        return {"n": state.n * 2}

    @runner.node("timed", input=Count, output=Count)
    async def timed(state: Count) -> dict[str, int]:
        clock.advance(0.001)
        return {"n": state.n - 1}

    @runner.node("last", input=Count, output=Count)
    def last(state: Count) -> dict[str, int]:  # a sync node
        return {"n": state.n + 100}

    return await runner.run([first, usage, flaky, with_ctx, parallel(left), timed, last], Count(n=1))


async def retry_then_terminal(
    runner: StromaRunner, clock: FakeClock, store: AsyncInMemoryStore
) -> ExecutionResult:
    """A node that times out twice then succeeds, then a node whose output breaks its contract."""
    calls = {"n": 0}

    @runner.node("slow", input=Count, output=Count)
    async def slow(state: Count) -> dict[str, int]:
        calls["n"] += 1
        clock.advance(0.002)
        if calls["n"] < 3:
            raise TimeoutError("slow upstream")
        return {"n": state.n + 1}

    @runner.node("bad", input=Count, output=Words)
    async def bad(state: Count) -> dict[str, Any]:
        return {"n": "not a number"}

    return await runner.run([slow, bad], Count(n=0))


async def budget_stop(runner: StromaRunner, clock: FakeClock, store: AsyncInMemoryStore) -> ExecutionResult:
    """The second node's spend crosses the token budget: PARTIAL, not retried."""
    runner = runner.with_budget(tokens=100)

    @runner.node("cheap", input=Count, output=Count)
    async def cheap(state: Count) -> tuple[dict[str, int], int]:
        return {"n": 1}, 60

    @runner.node("pricey", input=Count, output=Count)
    async def pricey(state: Count) -> tuple[dict[str, int], int]:
        return {"n": 2}, 60

    return await runner.run([cheap, pricey], Count(n=0))


async def group_failure(runner: StromaRunner, clock: FakeClock, store: AsyncInMemoryStore) -> ExecutionResult:
    """A parallel group whose one child fails terminally: the sibling is cancelled."""

    @runner.node("ok", input=Count, output=Count)
    async def ok(state: Count) -> tuple[dict[str, int], int, int, str]:
        return {"n": 1}, 10, 5, "gpt-4o-mini"

    @runner.node("broken", input=Count, output=Words)
    async def broken(state: Count) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"wrong": True}

    return await runner.run([parallel(ok, broken)], Count(n=0))


async def killed_then_resumed(
    runner: StromaRunner, clock: FakeClock, store: AsyncInMemoryStore
) -> ExecutionResult:
    """A run cancelled inside its second node (as a kill would stop it), then resumed."""
    gate = asyncio.Event()

    @runner.node("a", input=Count, output=Count)
    async def a(state: Count) -> dict[str, int]:
        return {"n": state.n + 1}

    @runner.node("b", input=Count, output=Count)
    async def b(state: Count) -> dict[str, int]:
        if not gate.is_set():
            gate.set()
            await asyncio.Event().wait()  # hangs until cancelled
        return {"n": state.n + 2}

    task = asyncio.ensure_future(runner.run([a, b], Count(n=0)))
    await gate.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return await runner.resume([a, b], Count(n=0))


SCENARIOS: dict[str, Scenario] = {
    "success": success,
    "retry_then_terminal": retry_then_terminal,
    "budget_stop": budget_stop,
    "group_failure": group_failure,
    "killed_then_resumed": killed_then_resumed,
}


def plain_events(result: ExecutionResult) -> list[tuple[str, dict[str, Any]]]:
    """Every lifecycle event of the run as plain data (the live exception object left out)."""
    return [
        (
            type(e).__name__,
            {f.name: getattr(e, f.name) for f in dataclasses.fields(e) if f.name != "exception"},
        )
        for e in result.trace.log
    ]


async def run_way(scenario: Scenario, way: str, tmp_path: Path) -> tuple[ExecutionResult, AsyncInMemoryStore]:
    """Run ``scenario`` quiet, watched by a hook, or streamed to a run file."""
    clock = FakeClock()
    seed_jitter(11)
    store = AsyncInMemoryStore()
    with use_clock(clock):
        runner = StromaRunner.quick(store=store, run_id="one-loop", pipeline_name="loop")
        if way == "hook":
            runner = runner.with_hooks(NodeHooks(on_event=lambda event: None))
        elif way == "file":
            runner = runner.with_trace_dir(tmp_path / way)
        return await scenario(runner, clock, store), store


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_quiet_and_watched_runs_record_the_same_run(name: str, tmp_path: Path) -> None:
    """Quiet, hook-watched and file-watched runs give identical events, attempts, results and files."""
    scenario = SCENARIOS[name]
    outcomes = {way: await run_way(scenario, way, tmp_path) for way in ("quiet", "hook", "file")}
    quiet = outcomes["quiet"][0]
    for way in ("hook", "file"):
        other = outcomes[way][0]
        assert other.status is quiet.status, way
        assert other.final_state == quiet.final_state, way
        assert (other.total_tokens, other.total_cost_usd) == (quiet.total_tokens, quiet.total_cost_usd), way
        assert plain_events(other) == plain_events(quiet), way
        assert [e.model_dump() for e in other.trace] == [e.model_dump() for e in quiet.trace], way
    saved = load_run(quiet.save(tmp_path / "quiet.json"))
    streamed_file = outcomes["file"][0].header.get("run_file")
    assert streamed_file is not None
    streamed = load_run(streamed_file)
    assert json.dumps(saved.events, default=repr) == json.dumps(streamed.events, default=repr)
    quiet_store, hook_store = outcomes["quiet"][1], outcomes["hook"][1]
    for node in ("__stroma_progress__", "__stroma_run__"):
        assert await quiet_store.load_raw("one-loop", node) == await hook_store.load_raw("one-loop", node)


async def test_scenarios_cover_what_they_claim(tmp_path: Path) -> None:
    """The scenarios end as their names say (so the comparison above compares something)."""
    statuses = {name: (await run_way(s, "quiet", tmp_path))[0] for name, s in SCENARIOS.items()}
    assert statuses["success"].status is RunStatus.COMPLETED
    assert statuses["success"].total_tokens == 150
    assert statuses["retry_then_terminal"].status is RunStatus.FAILED
    assert [e.attempt for e in statuses["retry_then_terminal"].trace.events_for("slow")] == [1, 2, 3]
    assert statuses["budget_stop"].status is RunStatus.PARTIAL
    assert isinstance(statuses["budget_stop"].trace.events_for("pricey")[0].failure_message, str)
    assert statuses["group_failure"].status is RunStatus.FAILED
    assert statuses["killed_then_resumed"].status is RunStatus.RESUMED


async def test_concurrent_runs_on_one_runner_keep_their_own_keys() -> None:
    """1,000 concurrent runs on one runner: after an await, every node still reads its own run's
    idempotency key and fallback model, while the user's context values stay shared objects."""
    shared_client = object()
    runner = (
        StromaRunner.quick()
        .with_context({"client": shared_client})
        .with_budget(cost_usd=1.0)
        .with_model_fallback("gpt-4o", to="gpt-4o-mini", at_budget_pct=0.5)
    )
    wrong: list[str] = []

    @runner.node("spend", input=Count, output=Count)
    async def spend(state: Count, ctx: dict[str, Any]) -> tuple[dict[str, int], int, int, str]:
        key = ctx["_stroma_idempotency_key"]
        await asyncio.sleep(0)
        if ctx["_stroma_idempotency_key"] != key or ctx["client"] is not shared_client:
            wrong.append(key)
        # runs with an odd n spend past the fallback threshold; even ones spend nothing
        return {"n": state.n}, (300_000 if state.n % 2 else 0), 0, "gpt-4o"

    @runner.node("check", input=Count, output=Count)
    async def check(state: Count, ctx: dict[str, Any]) -> dict[str, int]:
        run_key = ctx["_stroma_idempotency_key"]
        await asyncio.sleep(0)
        expected_model = "gpt-4o-mini" if state.n % 2 else None
        if ctx.get("_stroma_model") != expected_model or ctx["_stroma_idempotency_key"] != run_key:
            wrong.append(run_key)
        if not run_key.endswith(":check"):
            wrong.append(run_key)
        return {"n": state.n}

    results = await asyncio.gather(*(runner.run([spend, check], Count(n=i)) for i in range(1000)))
    assert all(r.status is RunStatus.COMPLETED for r in results)
    assert len({r.run_id for r in results}) == 1000
    assert wrong == []
    assert "_stroma_idempotency_key" not in runner.config.context


async def test_contract_errors_carry_no_values_a_custom_validator_quoted() -> None:
    """ContractViolated.errors keeps pydantic's own messages (they name what was expected) but not
    a custom validator's, which may quote the input: its error type stands in."""
    from pydantic import field_validator

    from stroma.events import ContractViolated

    class Secretive(BaseModel):
        """An output whose validator quotes the value it refuses."""

        code: str
        n: int

        @field_validator("code")
        @classmethod
        def _no_secrets(cls, value: str) -> str:
            raise ValueError(f"refusing {value!r}")

    runner = StromaRunner.quick()

    @runner.node("leaky", input=Count, output=Secretive)
    async def leaky(state: Count) -> dict[str, Any]:
        return {"code": "hunter2", "n": "x"}

    result = await runner.run([leaky], Count(n=0))
    (violated,) = [e for e in result.trace.log if isinstance(e, ContractViolated)]
    assert dict(violated.errors) == {
        "code": "value_error",
        "n": "Input should be a valid integer, unable to parse string as an integer",
    }
    assert "hunter2" not in repr(violated)
