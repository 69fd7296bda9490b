"""The runner: statuses, retries, budgets, fallback, context, timeouts, parallel and bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from stroma import (
    ConfigurationError,
    ExecutionBudget,
    FailureClass,
    FailurePolicy,
    NodeReturnTypeError,
    RunConfig,
    RunStatus,
    StromaRunner,
    parallel,
)
from stroma.events import (
    AttemptFailed,
    AttemptSucceeded,
    BudgetChecked,
    FailureClassified,
    ModelFallback,
    NodeFinished,
    NodeStarted,
    RetriesExhausted,
    RetryScheduled,
    RunFinished,
)
from stroma.testing import FakeClock, capture_events

from .conftest import Count, Doc, Summary


def make_chain(runner: StromaRunner, length: int) -> list[Any]:
    """A chain of nodes that each add one."""
    nodes = []
    for i in range(length):

        @runner.node(f"add{i}", input=Count, output=Count)
        async def add(state: Count) -> dict[str, int]:
            return {"n": state.n + 1}

        nodes.append(add)
    return nodes


async def test_a_chain_completes_and_checkpoints_every_node(clock: FakeClock) -> None:
    """Each node's output feeds the next and is checkpointed."""
    runner = StromaRunner.quick(run_id="chain")
    nodes = make_chain(runner, 3)
    result = await runner.run(nodes, Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert result.final_state == Count(n=3)
    assert [e.node_id for e in result.trace] == ["add0", "add1", "add2"]
    saved = await runner.checkpoint_manager.resume("chain", "add1", Count)
    assert saved == Count(n=2)


async def test_recoverable_failures_retry_with_the_delays_reported(clock: FakeClock) -> None:
    """A TimeoutError is retried per the RECOVERABLE policy; the delay slept is the one reported."""
    runner = StromaRunner.quick()
    calls = {"n": 0}

    @runner.node("flaky", input=Count, output=Count)
    async def flaky(state: Count) -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] < 3:
            raise TimeoutError("upstream timed out")
        return {"n": state.n}

    result = await runner.run([flaky], Count(n=1))
    assert result.status is RunStatus.COMPLETED
    assert calls["n"] == 3
    retries = [e for e in result.trace.log if isinstance(e, RetryScheduled)]
    assert [r.attempt for r in retries] == [1, 2]
    assert [r.delay_s for r in retries] == clock.slept
    assert all(0 <= d <= 1.0 for d in clock.slept)
    assert [e.failure for e in result.trace.events_for("flaky")] == [
        FailureClass.RECOVERABLE,
        FailureClass.RECOVERABLE,
        None,
    ]


@pytest.mark.parametrize(
    ("exc", "attempts", "status"),
    [
        (TimeoutError("t"), 3, RunStatus.PARTIAL),
        (ValueError("v"), 1, RunStatus.FAILED),
        (RuntimeError("r"), 1, RunStatus.FAILED),
    ],
)
async def test_attempt_counts_and_status_follow_the_policy_per_class(
    clock: FakeClock, exc: Exception, attempts: int, status: RunStatus
) -> None:
    """max_retries counts calls (0.3.2): recoverable 3 calls, then PARTIAL; ambiguous 1, then FAILED."""
    runner = StromaRunner.quick()

    @runner.node("always", input=Count, output=Count)
    async def always(state: Count) -> dict[str, int]:
        raise exc

    result = await runner.run([always], Count(n=1))
    assert len(result.trace.events_for("always")) == attempts
    assert result.status is status
    exhausted = [e for e in result.trace.log if isinstance(e, RetriesExhausted)]
    assert len(exhausted) == 1
    assert exhausted[0].attempts == attempts
    assert len(clock.slept) == attempts - 1


async def test_contract_violation_is_terminal_and_not_retried(clock: FakeClock) -> None:
    """Bad output stops at its node: FAILED, one attempt, no sleep."""
    runner = StromaRunner.quick()
    after = {"ran": False}

    @runner.node("bad", input=Doc, output=Summary)
    async def bad(state: Doc) -> dict[str, str]:
        return {"wrong_field": "x"}

    @runner.node("after", input=Summary, output=Summary)
    async def after_node(state: Summary) -> dict[str, Any]:
        after["ran"] = True
        return state.model_dump()

    result = await runner.run([bad, after_node], Doc(text="hello"))
    assert result.status is RunStatus.FAILED
    assert len(result.trace) == 1
    assert clock.slept == []
    assert not after["ran"]
    assert result.final_state == Doc(text="hello")
    classified = [e for e in result.trace.log if isinstance(e, FailureClassified)]
    assert classified[0].decided_by == "builtin:ContractViolation"


async def test_input_contract_violation_is_caught_before_the_node_runs(clock: FakeClock) -> None:
    """A state that fails the node's input schema never reaches the node."""
    runner = StromaRunner.quick()
    ran = {"n": 0}

    @runner.node("needs_summary", input=Summary, output=Summary)
    async def needs_summary(state: Summary) -> dict[str, Any]:
        ran["n"] += 1
        return state.model_dump()

    result = await runner.run([needs_summary], Doc(text="no summary here"))
    assert result.status is RunStatus.FAILED
    assert ran["n"] == 0
    failure = result.trace.failures()[0]
    assert failure.failure_message is not None
    assert "(input)" in failure.failure_message


async def test_node_policies_override_the_global_map(clock: FakeClock) -> None:
    """A per-node policy gives that node more retries than the global map."""
    runner = StromaRunner.quick().with_node_policies(
        {"picky": {FailureClass.AMBIGUOUS: FailurePolicy(max_retries=4, backoff_seconds=0.1)}}
    )

    @runner.node("picky", input=Count, output=Count)
    async def picky(state: Count) -> dict[str, int]:
        raise ValueError("nope")

    @runner.node("plain", input=Count, output=Count)
    async def plain(state: Count) -> dict[str, int]:
        raise ValueError("nope")

    first = await runner.run([picky], Count(n=0))
    second = await runner.run([plain], Count(n=0))
    assert len(first.trace) == 4
    assert len(second.trace) == 1
    assert all(d <= 0.1 for d in clock.slept[:3])


async def test_run_config_without_policy_map_does_not_retry(clock: FakeClock) -> None:
    """A hand-built RunConfig has no policies (as published): a failure is final at once."""
    runner = StromaRunner.quick()
    plain = StromaRunner(runner.registry, runner.checkpoint_manager, RunConfig())

    @runner.node("once", input=Count, output=Count)
    async def once(state: Count) -> dict[str, int]:
        raise TimeoutError("t")

    result = await plain.run([once], Count(n=0))
    assert result.status is RunStatus.PARTIAL
    assert len(result.trace) == 1


async def test_budget_stop_is_partial_and_not_retried(clock: FakeClock) -> None:
    """Exceeding the token budget stops the run PARTIAL at that node, with one attempt."""
    runner = StromaRunner.quick().with_budget(tokens=150)

    @runner.node("spend", input=Count, output=Count)
    async def spend(state: Count) -> tuple[dict[str, int], int]:
        return {"n": state.n + 1}, 100

    @runner.node("spend2", input=Count, output=Count)
    async def spend2(state: Count) -> tuple[dict[str, int], int]:
        return {"n": state.n + 1}, 100

    @runner.node("never", input=Count, output=Count)
    async def never(state: Count) -> dict[str, int]:
        raise AssertionError("must not run")

    result = await runner.run([spend, spend2, never], Count(n=0))
    assert result.status is RunStatus.PARTIAL
    assert result.total_tokens == 200
    assert len(result.trace.events_for("spend2")) == 1
    assert result.final_state == Count(n=1)
    checks = [e for e in result.trace.log if isinstance(e, BudgetChecked)]
    assert [(c.node_id, c.decision, c.used) for c in checks] == [
        ("spend", "allow", 100.0),
        ("spend2", "deny", 200.0),
    ]
    failure = result.trace.failures()[0]
    assert failure.failure_message is not None
    assert "150-token" in failure.failure_message
    assert "used 200" in failure.failure_message
    assert clock.slept == []


async def test_latency_budget_uses_the_run_clock(clock: FakeClock) -> None:
    """A node that takes 2 s on the clock exceeds a 1,000 ms latency budget."""
    runner = StromaRunner.quick().with_budget(latency_ms=1000)

    @runner.node("slow", input=Count, output=Count)
    async def slow(state: Count) -> dict[str, int]:
        clock.advance(2.0)
        return {"n": state.n}

    result = await runner.run([slow], Count(n=0))
    assert result.status is RunStatus.PARTIAL
    check = next(e for e in result.trace.log if isinstance(e, BudgetChecked))
    assert (check.dimension, check.decision, check.used) == ("latency", "deny", 2000.0)


@pytest.mark.parametrize(
    ("returned", "tokens", "cost"),
    [
        (({"n": 1}, 500), 500, 0.0),
        (({"n": 1}, 1000, 500), 1500, (1000 * 0.15 + 500 * 0.6) / 1e6),
        (({"n": 1}, 1000, 500, "gpt-4o"), 1500, (1000 * 2.5 + 500 * 10) / 1e6),
    ],
)
async def test_usage_tuples_are_counted_and_priced(
    clock: FakeClock, returned: tuple[Any, ...], tokens: int, cost: float
) -> None:
    """(out, tokens), (out, in, out) and (out, in, out, model) are all understood."""
    runner = StromaRunner.quick().with_context({"model": "gpt-4o-mini"})

    @runner.node("llm", input=Count, output=Count)
    async def llm(state: Count) -> Any:
        return returned

    result = await runner.run([llm], Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert result.total_tokens == tokens
    if len(returned) == 2:
        assert result.total_cost_usd == pytest.approx(500 * 0.15 / 1e6)
    else:
        assert result.total_cost_usd == pytest.approx(cost)


async def test_model_fallback_switches_model_and_pricing(clock: FakeClock) -> None:
    """Past 50% of the cost budget, nodes get the fallback model in ctx and are priced at it."""
    runner = (
        StromaRunner.quick()
        .with_budget(cost_usd=0.02)
        .with_model_fallback("gpt-4o", to="gpt-4o-mini", at_budget_pct=0.5)
        .with_context({"model": "gpt-4o"})
    )
    seen: list[str] = []

    @runner.node("a", input=Count, output=Count)
    async def a(state: Count, ctx: dict[str, Any]) -> Any:
        seen.append(ctx.get("_stroma_model", ctx["model"]))
        return {"n": 1}, 1000, 1000, "gpt-4o"

    @runner.node("b", input=Count, output=Count)
    async def b(state: Count, ctx: dict[str, Any]) -> Any:
        seen.append(ctx.get("_stroma_model", ctx["model"]))
        return {"n": 2}, 1000, 1000, "gpt-4o"

    result = await runner.run([a, b], Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert seen == ["gpt-4o", "gpt-4o-mini"]
    expected = (1000 * 2.5 + 1000 * 10) / 1e6 + (1000 * 0.15 + 1000 * 0.6) / 1e6
    assert result.total_cost_usd == pytest.approx(expected)
    fallback = [e for e in result.trace.log if isinstance(e, ModelFallback)]
    assert [(f.node_id, f.from_model, f.to_model) for f in fallback] == [("b", "gpt-4o", "gpt-4o-mini")]
    assert fallback[0].spend_fraction == pytest.approx(0.0125 / 0.02)
    decisions = [e.decision for e in result.trace.log if isinstance(e, BudgetChecked)]
    assert "fallback" in decisions


async def test_nodes_taking_ctx_get_the_shared_context(clock: FakeClock) -> None:
    """Two-argument nodes receive the shared dict (with the attempt's idempotency key)."""
    shared: dict[str, Any] = {"cache": {}}
    runner = StromaRunner.quick(run_id="ctx-run").with_context(shared)

    @runner.node("writer", input=Count, output=Count)
    async def writer(state: Count, ctx: dict[str, Any]) -> dict[str, int]:
        ctx["cache"]["seen"] = ctx["_stroma_idempotency_key"]
        return {"n": state.n}

    @runner.node("reader", input=Count, output=Count)
    async def reader(state: Count, ctx: dict[str, Any]) -> dict[str, int]:
        return {"n": len(ctx["cache"])}

    result = await runner.run([writer, reader], Count(n=5))
    assert result.final_state == Count(n=1)
    assert shared["cache"]["seen"] == "ctx-run:writer"


async def test_node_timeout_raises_timeout_and_is_retried(clock: FakeClock) -> None:
    """A node past its timeout is cut off, classified RECOVERABLE and retried; late results are dropped."""
    runner = StromaRunner.quick().with_node_timeouts({"hang": 20})
    never = asyncio.Event()
    calls = {"n": 0}

    @runner.node("hang", input=Count, output=Count)
    async def hang(state: Count) -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            await never.wait()
        return {"n": 42}

    result = await runner.run([hang], Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert result.final_state == Count(n=42)
    failed = [e for e in result.trace.log if isinstance(e, AttemptFailed)]
    assert [(f.error_type, f.failure_class) for f in failed] == [("timeout", "RECOVERABLE")]


async def test_cancellation_is_never_classified_or_retried(clock: FakeClock) -> None:
    """CancelledError propagates out of the run untouched; listeners hear the run ended CANCELLED."""
    runner = StromaRunner.quick()
    entered = asyncio.Event()

    @runner.node("waits", input=Count, output=Count)
    async def waits(state: Count) -> dict[str, int]:
        entered.set()
        await asyncio.Event().wait()
        return {"n": 0}

    with capture_events() as events:
        task = asyncio.ensure_future(runner.run([waits], Count(n=0)))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert clock.slept == []
    assert events.kinds()[-2:] == ["AttemptStarted", "RunFinished"]
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.status == "CANCELLED"


async def test_parallel_merges_children_and_sums_usage(clock: FakeClock) -> None:
    """Children get the same input; outputs merge (last write wins); usage adds up."""
    runner = StromaRunner.quick()

    class Left(Count):
        """Left child output."""

        left: str

    class Right(Count):
        """Right child output."""

        right: str

    @runner.node("left", input=Count, output=Left)
    async def left(state: Count) -> Any:
        return {"n": 1, "left": "L"}, 10

    @runner.node("right", input=Count, output=Right)
    async def right(state: Count) -> Any:
        return {"n": 2, "right": "R"}, 5, 5, "gpt-4o-mini"

    @runner.node("join", input=Count, output=Count)
    async def join(state: Count) -> dict[str, int]:
        return {"n": state.n * 10}

    group = parallel(left, right)
    result = await runner.run([group, join], Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert result.final_state == Count(n=20)
    assert result.total_tokens == 20
    started = [e for e in result.trace.log if isinstance(e, NodeStarted) and e.parent]
    assert {e.node_id for e in started} == {"left", "right"}
    assert {e.parent for e in started} == {"parallel(left,right)"}


async def test_parallel_child_failure_cancels_siblings(clock: FakeClock) -> None:
    """When one child violates its contract, the slow sibling is cancelled and nothing is merged."""
    runner = StromaRunner.quick()
    sibling_cancelled = asyncio.Event()

    @runner.node("bad_child", input=Count, output=Summary)
    async def bad_child(state: Count) -> dict[str, str]:
        return {"nope": "x"}

    @runner.node("slow_child", input=Count, output=Count)
    async def slow_child(state: Count) -> dict[str, int]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            sibling_cancelled.set()
            raise
        return {"n": 1}

    result = await runner.run([parallel(bad_child, slow_child)], Count(n=0))
    assert result.status is RunStatus.FAILED
    assert sibling_cancelled.is_set()
    outcomes = {e.node_id: e.outcome for e in result.trace.log if isinstance(e, NodeFinished) and e.parent}
    assert outcomes == {"bad_child": "failed", "slow_child": "cancelled"}
    message = result.trace.failures()[0].failure_message or ""
    assert "Contract violation for 'bad_child' (output)" in message
    assert await runner.checkpoint_manager.resume(result.run_id, "parallel(bad_child,slow_child)") is None


async def test_parallel_is_callable_on_its_own() -> None:
    """Awaiting a parallel() group directly returns the merged dict as a usage 4-tuple."""
    runner = StromaRunner.quick()

    @runner.node("x", input=Count, output=Count)
    async def x(state: Count) -> Any:
        return {"n": 1}, 3

    @runner.node("y", input=Count, output=Summary)
    async def y(state: Count) -> Any:
        return {"summary": "s", "word_count": 2}

    merged = await parallel(x, y)(Count(n=0))
    assert merged == ({"n": 1, "summary": "s", "word_count": 2}, 3, 0, None)


async def test_node_returning_a_non_dict_fails_with_a_clear_message(clock: FakeClock) -> None:
    """A node returning a list fails terminally and the message says what it returned and what to do."""
    runner = StromaRunner.quick()

    @runner.node("listy", input=Count, output=Count)
    async def listy(state: Count) -> Any:
        return [1, 2, 3]

    result = await runner.run([listy], Count(n=0))
    assert result.status is RunStatus.FAILED
    failed = next(e for e in result.trace.log if isinstance(e, AttemptFailed))
    assert failed.error_type == "stroma.errors.NodeReturnTypeError"
    assert isinstance(failed.exception, NodeReturnTypeError)
    assert "returned list ([1, 2, 3])" in failed.message
    assert "a node returns a dict" in failed.message
    assert len(result.trace) == 1


async def test_a_function_without_a_contract_is_refused_with_how_to_fix() -> None:
    """Passing a plain async function says how to add a contract."""
    runner = StromaRunner.quick()

    async def plain(state: Count) -> dict[str, int]:
        return {"n": 0}

    with pytest.raises(ConfigurationError) as info:
        await runner.run([plain], Count(n=0))
    assert "plain has no contract" in str(info.value)
    assert "@runner.node('plain', input=" in str(info.value)


async def test_duplicate_nodes_are_refused() -> None:
    """Node ids key checkpoints, so a node twice is an error, as is a reserved id."""
    runner = StromaRunner.quick()
    (node,) = make_chain(runner, 1)
    with pytest.raises(ConfigurationError, match="appears twice"):
        await runner.run([node, node], Count(n=0))
    with pytest.raises(ConfigurationError, match="reserves"):
        runner.node("__stroma_run__", input=Count, output=Count)


async def test_an_empty_pipeline_completes_at_once_with_its_initial_state() -> None:
    """run([], state) is COMPLETED at once (0.3.2): the initial state is the final state, no attempt."""
    runner = StromaRunner.quick()
    result = await runner.run([], Count(n=3))
    assert result.status is RunStatus.COMPLETED
    assert result.final_state == Count(n=3)
    assert len(result.trace) == 0
    plain = await runner.run([], {"n": 3})
    assert plain.final_state == {"n": 3}


async def test_each_run_without_an_explicit_run_id_gets_a_new_one(clock: FakeClock) -> None:
    """quick() runners used twice produce two runs; an explicit run_id is kept."""
    runner = StromaRunner.quick()
    nodes = make_chain(runner, 1)
    first = await runner.run(nodes, Count(n=0))
    second = await runner.run(nodes, Count(n=0))
    assert first.run_id != second.run_id
    named = StromaRunner.quick(run_id="fixed")
    assert (await named.run(make_chain(named, 1), Count(n=0))).run_id == "fixed"


async def test_budget_config_and_builders_return_the_runner() -> None:
    """Every with_* builder returns the runner and sets what it says."""
    runner = StromaRunner.quick()

    def classifier(exc: Exception, ctx: Any) -> FailureClass | None:
        return None

    assert runner.with_budget(tokens=1, cost_usd=2.0, latency_ms=3) is runner
    assert runner.config.budget == ExecutionBudget(max_tokens_total=1, max_cost_usd=2.0, max_latency_ms=3)
    assert runner.with_classifiers([classifier]).config.classifiers == [classifier]
    assert runner.with_policy_map({}).config.policy_map == {}
    assert runner.with_node_timeouts({"a": 5}).config.node_timeouts == {"a": 5}
    with pytest.raises(ConfigurationError, match="positive number of milliseconds"):
        runner.with_node_timeouts({"a": 0})
    assert runner.with_context({"k": 1}).config.context == {"k": 1}


async def test_successful_attempt_reports_usage_on_its_event(clock: FakeClock) -> None:
    """AttemptSucceeded carries tokens, cost and model of that attempt."""
    runner = StromaRunner.quick()

    @runner.node("llm", input=Count, output=Count)
    async def llm(state: Count) -> Any:
        return {"n": 1}, 10, 20, "gpt-4o"

    result = await runner.run([llm], Count(n=0))
    done = next(e for e in result.trace.log if isinstance(e, AttemptSucceeded))
    assert (done.input_tokens, done.output_tokens, done.tokens, done.model) == (10, 20, 30, "gpt-4o")
    assert done.cost_usd == pytest.approx((10 * 2.5 + 20 * 10) / 1e6)


async def test_trace_queries_replay_and_json(clock: FakeClock) -> None:
    """events_for, failures, replay and to_json answer from the same attempts."""
    runner = StromaRunner.quick()
    calls = {"n": 0}

    @runner.node("first", input=Count, output=Count)
    async def first(state: Count) -> dict[str, int]:
        return {"n": state.n + 1}

    @runner.node("second", input=Count, output=Count)
    async def second(state: Count) -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            clock.advance(5.0)
            raise TimeoutError("slow")
        return {"n": state.n * 3}

    result = await runner.run([first, second], Count(n=1))
    trace = result.trace
    assert [e.attempt for e in trace.events_for("second")] == [1, 2]
    assert [(e.node_id, e.attempt) for e in trace.failures()] == [("second", 1)]
    replayed = list(trace.replay())
    assert [(e.node_id, e.attempt) for e in replayed] == [("first", 1), ("second", 1), ("second", 2)]
    assert replayed[1].timestamp_utc < replayed[2].timestamp_utc
    assert replayed[1].duration_ms == 5000.0
    as_json = json.loads(trace.to_json())
    assert [a["output_state"] for a in as_json] == [{"n": 2}, None, {"n": 6}]
    assert replayed[0].step_id == "first"
