"""LangGraphAdapter on a real LangGraph StateGraph driven with ainvoke / astream."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TypedDict

import pytest
from pydantic import BaseModel

from stroma import (
    ConfigurationError,
    ContractRegistry,
    ContractViolation,
    NodeContract,
    RunStatus,
    StromaRunner,
    estimate_cost_usd,
    load_run,
)
from stroma import events as ev
from stroma.adapters.langgraph import LangGraphAdapter, stroma_langgraph_node
from stroma.testing import FakeClock, capture_events
from stroma_otel import attributes as a
from tests.adapters.conftest import ERROR, UNSET, Otel, framework
from viewer.model.index import RunIndex

graph_mod = framework("langgraph.graph")
StateGraph, START, END = graph_mod.StateGraph, graph_mod.START, graph_mod.END
InMemorySaver = framework("langgraph.checkpoint.memory").InMemorySaver
interrupt = framework("langgraph.types").interrupt


class State(TypedDict, total=False):
    """The graph's state: LangGraph merges each node's update into it."""

    topic: str
    text: str
    words: int
    verdict: str


class Topic(BaseModel):
    """fetch's input."""

    topic: str


class Text(BaseModel):
    """fetch's output, count's and judge's input."""

    text: str


class Words(BaseModel):
    """count's output."""

    words: int


class Verdict(BaseModel):
    """judge's output."""

    verdict: str


FETCH = NodeContract(node_id="fetch", input_schema=Topic, output_schema=Text)
COUNT = NodeContract(node_id="count", input_schema=Text, output_schema=Words)
JUDGE = NodeContract(node_id="judge", input_schema=Text, output_schema=Verdict)


class Calls(dict[str, int]):
    """How many times each node function ran."""

    def hit(self, name: str) -> int:
        """Count one call of ``name``; return the count."""
        self[name] = self.get(name, 0) + 1
        return self[name]


def build(calls: Calls, *, violate: bool = False) -> Any:
    """START -> fetch (times out twice) -> count (reports usage) [-> judge (violates)] -> END."""

    @stroma_langgraph_node("fetch", FETCH)
    async def fetch(state: Topic) -> dict[str, Any]:
        if calls.hit("fetch") <= 2:
            raise TimeoutError("search backend timed out")
        return {"text": f"notes about {state.topic} and more"}

    @stroma_langgraph_node("count", COUNT)
    async def count(state: Text) -> tuple[dict[str, Any], int, int, str]:
        calls.hit("count")
        return {"words": len(state.text.split())}, 120, 30, "gpt-4o"

    @stroma_langgraph_node("judge", JUDGE)
    async def judge(state: Text) -> dict[str, Any]:
        calls.hit("judge")
        return {"score": 3}  # no "verdict": the contract catches it

    builder = StateGraph(State)
    builder.add_node("fetch", fetch)
    builder.add_node("count", count)
    builder.add_edge(START, "fetch")
    builder.add_edge("fetch", "count")
    if violate:
        builder.add_node("judge", judge)
        builder.add_edge("count", "judge")
        builder.add_edge("judge", END)
    else:
        builder.add_edge("count", END)
    return builder


def runner(otel: Otel, **kwargs: Any) -> StromaRunner:
    """Quick settings with the in-memory OpenTelemetry hooks."""
    return StromaRunner.quick(pipeline_name="research", **kwargs).with_hooks(otel.hooks())


async def test_retries_and_usage_inside_ainvoke_become_stroma_spans(otel: Otel, clock: FakeClock) -> None:
    """fetch times out twice and succeeds on its third call; count's usage is priced; spans show both."""
    calls = Calls()
    adapter = LangGraphAdapter(ContractRegistry(), runner(otel))
    graph = adapter.wrap(build(calls)).compile()

    final = await graph.ainvoke({"topic": "otters"})

    assert final == {"topic": "otters", "text": "notes about otters and more", "words": 5}
    assert calls == {"fetch": 3, "count": 1}
    assert len(clock.slept) == 2  # two backoffs, on the fake clock
    result = adapter.last_result
    assert result is not None
    assert result.status == RunStatus.COMPLETED
    assert result.total_tokens == 150
    assert result.total_cost_usd == pytest.approx(estimate_cost_usd("gpt-4o", 120, 30))
    assert [(e.node_id, e.attempt, e.failure) for e in result.trace] == [
        ("fetch", 1, "RECOVERABLE"),
        ("fetch", 2, "RECOVERABLE"),
        ("fetch", 3, None),
        ("count", 1, None),
    ]
    assert "fetch" in adapter.registry
    assert "count" in adapter.registry

    run = otel.one()
    assert run.shape() == (
        "invoke_workflow research", UNSET, (
            ("node fetch", UNSET, (
                ("attempt fetch #1", ERROR, ()),
                ("attempt fetch #2", ERROR, ()),
                ("attempt fetch #3", UNSET, ()),
            )),
            ("node count", UNSET, (("attempt count #1", UNSET, ()),)),
        ),
    )  # fmt: skip
    assert run.attrs[a.RUN_STATUS] == "COMPLETED"
    usage = run.child("node count").child("attempt count #1").attrs
    assert usage[a.USAGE_INPUT_TOKENS] == 120
    assert usage[a.USAGE_OUTPUT_TOKENS] == 30
    first = run.child("node fetch").children[0].attrs
    assert first[a.ERROR_TYPE] == "TimeoutError"


async def test_a_contract_violation_fails_the_graph_run_once_and_terminally(
    otel: Otel, clock: FakeClock
) -> None:
    """judge's output misses a field: ainvoke raises ContractViolation naming it, with no retry."""
    calls = Calls()
    adapter = LangGraphAdapter(ContractRegistry(), runner(otel))
    graph = adapter.wrap(build(calls, violate=True)).compile()

    with capture_events() as events, pytest.raises(ContractViolation) as caught:
        await graph.ainvoke({"topic": "otters"})

    assert str(caught.value) == "Contract violation for 'judge' (output): verdict: Field required"
    assert calls["judge"] == 1
    violated = events.of(ev.ContractViolated)
    assert [(e.node_id, e.direction, e.field_paths) for e in violated] == [  # type: ignore[attr-defined]
        ("judge", "output", ("verdict",))
    ]
    classified = [e for e in events.of(ev.FailureClassified) if e.node_id == "judge"]  # type: ignore[attr-defined]
    assert [e.failure_class for e in classified] == ["TERMINAL"]  # type: ignore[attr-defined]
    assert adapter.last_result is not None
    assert adapter.last_result.status == RunStatus.FAILED

    run = otel.one()
    assert run.status == ERROR
    assert run.attrs[a.RUN_STATUS] == "FAILED"
    judge = run.child("node judge")
    assert judge.shape() == ("node judge", ERROR, (("attempt judge #1", ERROR, ()),))


async def test_an_input_violation_names_the_missing_state_key(clock: FakeClock) -> None:
    """A state without the node's input field fails before the node runs."""
    calls = Calls()
    graph = LangGraphAdapter(ContractRegistry()).wrap(build(calls)).compile()
    with pytest.raises(ContractViolation, match=r"'fetch' \(input\): topic: Field required"):
        await graph.ainvoke({"text": "no topic"})
    assert calls == {}


async def test_a_compiled_graph_is_wrapped_and_writes_a_run_file(tmp_path: Path, clock: FakeClock) -> None:
    """wrap() takes an already compiled graph; astream is one run, saved for stroma-view to draw."""
    calls = Calls()
    settings = StromaRunner.quick(run_id="lg-run").with_trace_dir(tmp_path)
    adapter = LangGraphAdapter(ContractRegistry(), settings)
    graph = build(calls).compile()
    assert adapter.wrap(graph) is graph

    chunks = [chunk async for chunk in graph.astream({"topic": "eels"}, stream_mode="updates")]

    assert [next(iter(c)) for c in chunks] == ["fetch", "count"]
    assert adapter.last_result is not None
    record = load_run(adapter.last_result.header["run_file"])
    assert record.header.status == "COMPLETED"
    assert list(record.header.pipeline) == ["fetch", "count"]
    assert record.header.pipeline_name == "LangGraph"  # the graph's name when the settings name none
    assert [(t.node_id, t.attempt) for t in record.attempts()] == [
        ("fetch", 1),
        ("fetch", 2),
        ("fetch", 3),
        ("count", 1),
    ]
    viewer = RunIndex(record)  # what stroma-view draws
    assert [(n.node_id, n.status, len(n.attempts)) for n in viewer.ordered()] == [
        ("fetch", "succeeded", 3),
        ("count", "succeeded", 1),
    ]


async def test_parallel_branches_are_steps_of_one_run(clock: FakeClock) -> None:
    """Two decorated nodes in the same LangGraph superstep run concurrently within one Stroma run."""
    calls = Calls()

    @stroma_langgraph_node("words", COUNT)
    async def words(state: Text) -> dict[str, Any]:
        calls.hit("words")
        return {"words": 2}

    @stroma_langgraph_node("verdict", JUDGE)
    async def verdict(state: Text) -> dict[str, Any]:
        calls.hit("verdict")
        return {"verdict": "ok"}

    builder = StateGraph(State)
    builder.add_node("words", words)
    builder.add_node("verdict", verdict)
    builder.add_edge(START, "words")
    builder.add_edge(START, "verdict")
    adapter = LangGraphAdapter(ContractRegistry())
    final = await adapter.wrap(builder).compile().ainvoke({"text": "a b"})

    assert final == {"text": "a b", "words": 2, "verdict": "ok"}
    assert adapter.last_result is not None
    assert sorted(e.node_id for e in adapter.last_result.trace) == ["verdict", "words"]


async def test_undecorated_nodes_are_left_to_langgraph(clock: FakeClock) -> None:
    """A plain node runs as LangGraph calls it; only decorated ones are in the run's pipeline."""
    calls = Calls()
    builder = build(calls)

    def shout(state: State) -> dict[str, Any]:
        return {"text": state["text"].upper()}

    builder.add_node("shout", shout)
    builder.add_edge("count", "shout")
    with capture_events() as events:
        final = await LangGraphAdapter(ContractRegistry()).wrap(builder).compile().ainvoke({"topic": "x"})
    assert final["text"] == "NOTES ABOUT X AND MORE"
    (started,) = events.of(ev.RunStarted)
    assert started.pipeline == ("fetch", "count")  # type: ignore[attr-defined]


async def test_an_interrupt_is_langgraph_control_flow_not_a_failure_to_retry(clock: FakeClock) -> None:
    """interrupt() inside a decorated node pauses the graph after one call, as LangGraph intends."""
    calls = Calls()

    @stroma_langgraph_node("review", JUDGE)
    async def review(state: Text) -> dict[str, Any]:
        calls.hit("review")
        return {"verdict": interrupt("approve?")}

    builder = StateGraph(State)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    graph = LangGraphAdapter(ContractRegistry()).wrap(builder).compile(checkpointer=InMemorySaver())

    paused = await graph.ainvoke({"text": "draft"}, {"configurable": {"thread_id": "t1"}})

    assert "__interrupt__" in paused
    assert calls == {"review": 1}


async def test_a_node_taking_ctx_gets_the_runner_context(clock: FakeClock) -> None:
    """A decorated node with (state, ctx) receives the context dict of the runner's settings."""
    seen: list[Any] = []

    @stroma_langgraph_node("fetch", FETCH)
    async def fetch(state: Topic, ctx: dict[str, Any]) -> dict[str, Any]:
        seen.append(ctx["tenant"])
        return {"text": "t"}

    builder = StateGraph(State)
    builder.add_node("fetch", fetch)
    builder.add_edge(START, "fetch")
    settings = StromaRunner.quick().with_context({"tenant": "acme"})
    await LangGraphAdapter(ContractRegistry(), settings).wrap(builder).compile().ainvoke({"topic": "x"})
    assert seen == ["acme"]


def test_wrap_refuses_what_is_not_a_langgraph_graph() -> None:
    """Anything but a StateGraph or a compiled graph is a typed error naming what it got."""
    with pytest.raises(ConfigurationError, match="StateGraph or a compiled graph, got dict"):
        LangGraphAdapter(ContractRegistry()).wrap({"nodes": {}})


async def test_concurrent_invocations_are_separate_runs(clock: FakeClock) -> None:
    """Two ainvoke calls at once each get their own Stroma run, with their own nodes."""
    calls = Calls()
    calls["fetch"] = 2  # no timeouts left: both runs succeed at once
    graph = LangGraphAdapter(ContractRegistry()).wrap(build(calls)).compile()
    with capture_events() as events:
        first, second = await asyncio.gather(graph.ainvoke({"topic": "a"}), graph.ainvoke({"topic": "b"}))
    assert (first["words"], second["words"]) == (5, 5)
    runs = {e.run_id for e in events.of(ev.RunStarted)}
    assert len(runs) == 2
    for run_id in runs:
        nodes = [e.node_id for e in events.of(ev.NodeFinished) if e.run_id == run_id]  # type: ignore[attr-defined]
        assert nodes == ["fetch", "count"]


def test_sync_invoke_says_to_use_the_async_api() -> None:
    """Adapted nodes are async: LangGraph's invoke() refuses them and points to ainvoke."""
    graph = LangGraphAdapter(ContractRegistry()).wrap(build(Calls())).compile()
    with pytest.raises(TypeError, match="ainvoke"):
        graph.invoke({"topic": "a"})
