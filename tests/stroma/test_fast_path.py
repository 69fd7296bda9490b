"""A run nobody watches live takes the engine's fast path (compact records, in-process commits).

Everything it records must be what the general path publishes: the same lifecycle events with
the same fields, the same attempts, the same checkpoints, progress record and manifest in the
store. Each test runs one pipeline twice, once quiet (fast path) and once with a listener that
does nothing (general path), under a fake clock so timestamps and durations match too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from pydantic import BaseModel

from stroma import NodeHooks, RunStatus, StromaRunner, parallel
from stroma import events as ev
from stroma._engine import ReliabilityContext
from stroma.checkpoint import PROGRESS_NODE, RUN_NODE, AsyncInMemoryStore, RunManifest, RunProgress
from stroma.events import build_event
from stroma.testing import FakeClock, seed_jitter, use_clock
from stroma.trace import ExecutionResult
from tests.stroma.conftest import Count


class Words(BaseModel):
    """Output of the usage-reporting node."""

    n: int
    words: list[str]


def build(clock: FakeClock, *, listener: bool) -> tuple[StromaRunner, list[Any], AsyncInMemoryStore]:
    """Seven nodes covering every branch of the fast path and its hand-over to the general one."""
    store = AsyncInMemoryStore()
    runner = StromaRunner.quick(store=store, pipeline_name="fast")
    if listener:
        runner = runner.with_hooks(NodeHooks(on_event=lambda event: None))
    runner = runner.with_node_timeouts({"timed": 5_000.0})
    calls = {"flaky": 0, "bad_then_good": 0}

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
            raise ConnectionError("upstream reset")
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

    return runner, [first, usage, flaky, with_ctx, parallel(left), timed, last], store


def normalized(result: ExecutionResult) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """The run's events and attempts as plain data, with its random run id replaced."""
    run_id = result.run_id

    def plain(value: Any) -> Any:
        text = json.dumps(value, default=repr, sort_keys=True).replace(run_id, "RUN")
        return json.loads(text)

    events = [
        (type(e).__name__, plain({f.name: getattr(e, f.name) for f in dataclasses.fields(e)}))
        for e in result.trace.log
    ]
    attempts = [plain(a.model_dump(mode="json")) for a in result.trace.events]
    return events, attempts


async def run_both(clock: FakeClock) -> list[tuple[ExecutionResult, AsyncInMemoryStore]]:
    """The pipeline run quiet, then watched, each on a fresh fake clock."""
    outcomes = []
    for listener in (False, True):
        fresh = FakeClock()
        seed_jitter(7)
        with use_clock(fresh):
            runner, nodes, store = build(fresh, listener=listener)
            outcomes.append((await runner.run(nodes, Count(n=1)), store))
    return outcomes


async def test_quiet_run_records_what_a_watched_run_publishes(clock: FakeClock) -> None:
    (fast, _), (general, _) = await run_both(clock)
    assert fast.status is general.status is RunStatus.COMPLETED
    assert fast.final_state == general.final_state
    fast_events, fast_attempts = normalized(fast)
    general_events, general_attempts = normalized(general)
    assert [kind for kind, _ in fast_events] == [kind for kind, _ in general_events]
    for (kind, mine), (_, theirs) in zip(fast_events, general_events, strict=True):
        assert mine == theirs, kind
    assert fast_attempts == general_attempts
    assert fast.total_tokens == general.total_tokens == 150
    assert fast.total_cost_usd == general.total_cost_usd > 0
    # the flaky node's first attempt failed and was retried in both
    assert [a["attempt"] for a in fast_attempts if a["node_id"] == "flaky"] == [1, 2]


async def test_quiet_run_stores_the_same_records(clock: FakeClock) -> None:
    (fast, fast_store), (general, general_store) = await run_both(clock)

    async def records(store: AsyncInMemoryStore, run_id: str) -> dict[str, Any]:
        out = {}
        for node_id in list(store._data[run_id]):
            raw = await store.load_raw(run_id, node_id)
            assert raw is not None
            out[node_id] = (json.loads(raw[0].replace(run_id, "RUN")), raw[1])
        return out

    mine = await records(fast_store, fast.run_id)
    theirs = await records(general_store, general.run_id)
    assert mine == theirs
    progress = RunProgress.model_validate_json((await fast_store.load_raw(fast.run_id, PROGRESS_NODE))[0])
    assert (progress.status, progress.last_node, progress.committed) == ("COMPLETED", "last", 7)
    assert progress.tokens == 150
    manifest = RunManifest.model_validate_json((await fast_store.load_raw(fast.run_id, RUN_NODE))[0])
    assert manifest.pipeline[0] == "first"
    assert manifest.pipeline_name == "fast"
    assert (await fast_store.load(fast.run_id, "usage")) == Words(n=2, words=["a", "b"])


async def test_a_failure_after_fast_nodes_resumes_from_the_in_memory_store(clock: FakeClock) -> None:
    store = AsyncInMemoryStore()
    runner = StromaRunner.quick(store=store, run_id="fast-resume")
    broken = {"on": True}

    @runner.node("a", input=Count, output=Count)
    async def a(state: Count) -> dict[str, int]:
        return {"n": state.n + 1}

    @runner.node("b", input=Count, output=Count)
    async def b(state: Count) -> dict[str, int]:
        if broken["on"]:
            return {"n": "not a number"}  # a contract violation: terminal
        return {"n": state.n + 1}

    first = await runner.run([a, b], Count(n=0))
    assert first.status is RunStatus.FAILED
    assert first.final_state == Count(n=1)  # the last output before the failure
    assert [type(e).__name__ for e in first.trace.log if getattr(e, "node_id", None) == "b"][:3] == [
        "NodeStarted",
        "AttemptStarted",
        "ContractViolated",
    ]
    broken["on"] = False
    resumed = await runner.resume([a, b], Count(n=0))
    assert resumed.status is RunStatus.RESUMED
    assert resumed.final_state == Count(n=2)
    assert [e.node_id for e in resumed.trace.events] == ["b"]


async def test_a_cancelled_fast_node_still_shows_it_started(clock: FakeClock) -> None:
    runner = StromaRunner.quick()
    entered = asyncio.Event()
    seen: list[ExecutionResult] = []

    @runner.node("hangs", input=Count, output=Count)
    async def hangs(state: Count) -> dict[str, int]:
        entered.set()
        await asyncio.Event().wait()
        return {"n": 0}

    from stroma import _engine

    original = _engine.ReliabilityContext.abort

    def abort(self: _engine.ReliabilityContext) -> None:
        original(self)
        seen.append(self.build_result(RunStatus.FAILED, None))

    _engine.ReliabilityContext.abort = abort  # type: ignore[method-assign]
    try:
        task = asyncio.ensure_future(runner.run([hangs], Count(n=0)))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        _engine.ReliabilityContext.abort = original  # type: ignore[method-assign]
    kinds = [type(e).__name__ for e in seen[0].trace.log]
    assert kinds == ["RunStarted", "NodeStarted", "AttemptStarted", "RunFinished"]
    assert seen[0].trace.log[-1].status == "CANCELLED"  # type: ignore[attr-defined]


async def test_freestanding_context_counts_attempts_and_usage_of_fast_nodes(clock: FakeClock) -> None:
    runner = StromaRunner.quick()
    calls = {"b": 0}

    @runner.node("a", input=Count, output=Count)
    async def a(state: Count) -> dict[str, int]:
        clock.advance(0.010)
        return {"n": state.n + 1}

    @runner.node("b", input=Count, output=Count)
    async def b(state: Count) -> dict[str, int]:
        calls["b"] += 1
        clock.advance(0.002)
        if calls["b"] == 1:
            raise ConnectionError("reset")
        return {"n": state.n + 1}

    @runner.node("c", input=Count, output=Count)
    async def c(state: Count) -> dict[str, int]:
        clock.advance(0.003)
        return {"n": state.n + 1}

    rc = ReliabilityContext(runner.config, runner.registry, runner.checkpoint_manager, run_id="free")
    await rc.start_run(["a", "b", "c", "a2"])
    steps = [(f._stroma_node_id, f, f._stroma_contract) for f in (a, b, c)]  # type: ignore[attr-defined]
    steps.append(("a2", a, a._stroma_contract))  # type: ignore[attr-defined]
    assert await rc.run_chain(steps, Count(n=0)) == Count(n=4)
    budget = rc.retry_budget
    assert [budget.count("free", node) for node in ("a", "b", "c", "a2", "d")] == [1, 2, 1, 1, 0]
    usage = rc.tracker.by_node
    assert list(usage) == ["a", "b", "c", "a2"]  # first-seen order across fast and general nodes
    assert usage["a"].latency_ms == pytest.approx(10.0)
    assert usage["b"].latency_ms == pytest.approx(4.0)  # both attempts
    assert usage["c"].latency_ms == pytest.approx(3.0)
    assert rc.tracker.total_latency_ms == pytest.approx(27.0)


def _sample(field: dataclasses.Field[Any], i: int) -> Any:
    """A distinct value of the field's annotated kind."""
    kind = str(field.type)
    if "tuple" in kind:
        return (f"v{i}", f"w{i}") if "str, str" not in kind else ((f"p{i}", f"m{i}"),)
    if "dict" in kind:
        return {"k": i}
    if kind.startswith("float"):
        return i + 0.5
    if kind.startswith("int"):
        return i
    if kind.startswith("bool"):
        return True
    if "BaseException" in kind:
        return ValueError(i)
    return f"s{i}"


@pytest.mark.parametrize("cls", list(ev.EVENT_TYPES.values()), ids=lambda c: c.__name__)
def test_events_built_for_listeners_equal_their_dataclass_construction(cls: type[Any]) -> None:
    every = {f.name: _sample(f, i) for i, f in enumerate(dataclasses.fields(cls))}
    required = {
        f.name: every[f.name]
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    for fields in (every, required):
        built = build_event(cls, {"type": cls.kind, **fields})
        expected = cls(**fields)
        assert type(built) is cls
        assert built == expected
        assert repr(built) == repr(expected)
        with pytest.raises(dataclasses.FrozenInstanceError):
            built.run_id = "changed"
    # fields with a default factory get a fresh object each time, as the dataclass gives
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            one, two = build_event(cls, {**required}), build_event(cls, {**required})
            assert getattr(one, f.name) is not getattr(two, f.name)


class _Counting(AsyncInMemoryStore):
    """Counts the raw writes it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []


class _CountsCommits(_Counting):
    async def commit_raw(self, run_id: str, node_id: str, payload: str, ref: str, progress: str) -> None:
        self.writes.append(node_id)
        await super().commit_raw(run_id, node_id, payload, ref, progress)


class _CountsSaves(_Counting):
    async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
        self.writes.append(node_id)
        await super().save_raw(run_id, node_id, payload, ref)


@pytest.mark.parametrize(
    ("store_cls", "expected"),
    [(_CountsCommits, ["a", "b"]), (_CountsSaves, [RUN_NODE, PROGRESS_NODE])],
)
async def test_a_store_subclass_that_changes_writes_gets_every_write(
    clock: FakeClock, store_cls: type[_Counting], expected: list[str]
) -> None:
    store = store_cls()
    runner = StromaRunner.quick(store=store)
    assert runner.checkpoint_manager.commit_inline is None
    assert runner.checkpoint_manager.save_inline is None

    @runner.node("a", input=Count, output=Count)
    async def a(state: Count) -> dict[str, int]:
        return {"n": state.n + 1}

    @runner.node("b", input=Count, output=Count)
    async def b(state: Count) -> dict[str, int]:
        return {"n": state.n + 1}

    result = await runner.run([a, b], Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert store.writes == expected
    assert [type(e).__name__ for e in result.trace.log].count("CheckpointSaved") == 2
