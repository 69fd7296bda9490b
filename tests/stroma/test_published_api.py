"""Code written for the published stroma 0.3.2 gets 0.3.2's results (issue 11, outside the engine)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pytest

from stroma import (
    AsyncInMemoryStore,
    BoundaryValidator,
    ContractViolation,
    CostTracker,
    ExecutionBudget,
    FailurePolicy,
    FallbackPolicy,
    InMemoryStore,
    ModelHint,
    NodeContext,
    NodeContract,
    NodeHooks,
    NodeUsage,
    PostgresStore,
    RedisStore,
    RetryBudget,
    RunConfig,
    StepContext,
    StromaError,
    StromaRunner,
    SyncRedisStore,
    resolve_model,
    stroma_step,
)
from stroma.checkpoint import _resolve_schema
from stroma.cost import active_fallback
from stroma.failures import may_retry

from .conftest import Count, Doc, Summary

# -- retries ------------------------------------------------------------------------------------


def test_retry_budget_exhausts_when_the_count_reaches_max_retries() -> None:
    """After two increments a max_retries=2 policy is exhausted, counted per (run_id, node_id)."""
    budget = RetryBudget()
    policy = FailurePolicy(max_retries=2)
    budget.increment("run", "a")
    assert not budget.exhausted("run", "a", policy)
    budget.increment("run", "a")
    assert budget.exhausted("run", "a", policy)
    assert not budget.exhausted("run", "b", policy)
    assert not budget.exhausted("other", "a", policy)


def test_max_retries_counts_attempts_in_total() -> None:
    """may_retry is the one rule: max_retries=3 allows 3 calls, 1 and 0 allow one call."""
    assert [may_retry(n, FailurePolicy(max_retries=3)) for n in (1, 2, 3)] == [True, True, False]
    assert not may_retry(1, FailurePolicy(max_retries=1))
    assert not may_retry(1, FailurePolicy(max_retries=0))
    assert not may_retry(1, None)
    budget = RetryBudget()
    budget.increment("run", "a")
    assert budget.exhausted("run", "a", FailurePolicy(max_retries=0))


def test_max_attempts_is_an_alias_of_max_retries() -> None:
    """FailurePolicy(max_attempts=3) is FailurePolicy(max_retries=3); max_attempts reads at least 1."""
    assert FailurePolicy(max_attempts=3) == FailurePolicy(max_retries=3)
    assert FailurePolicy(max_retries=3).max_attempts == 3
    assert FailurePolicy(max_retries=0).max_attempts == 1


# -- cost ---------------------------------------------------------------------------------------


def test_usage_types_construct_positionally_in_the_published_order() -> None:
    """NodeUsage, FallbackPolicy and ModelHint take 0.3.2's positional arguments and are dataclasses."""
    usage = NodeUsage("a", 10, 0.5, 20, "gpt-4o", 3)
    assert dataclasses.asdict(usage) == {
        "node_id": "a",
        "tokens_used": 10,
        "cost_usd": 0.5,
        "latency_ms": 20,
        "model": "gpt-4o",
        "output_tokens": 3,
    }
    policy = FallbackPolicy("gpt-4o", "gpt-4o-mini", 0.5)
    assert (policy.preferred_model, policy.fallback_model, policy.at_budget_pct) == (
        "gpt-4o",
        "gpt-4o-mini",
        0.5,
    )
    assert FallbackPolicy("gpt-4o", "gpt-4o-mini").at_budget_pct == 0.8
    hint = ModelHint("a", "gpt-4o", "gpt-4o-mini", 100)
    assert dataclasses.asdict(hint) == {
        "node_id": "a",
        "preferred_model": "gpt-4o",
        "fallback_model": "gpt-4o-mini",
        "max_tokens": 100,
    }
    assert ModelHint("a", "gpt-4o").fallback_model is None


def test_cost_tracker_summary_is_usage_per_node() -> None:
    """record() sums per node id; summary() maps node id to NodeUsage and keeps the first model."""
    tracker = CostTracker()
    tracker.record(NodeUsage("a", 100, 0.5, 10, "gpt-4o", 40))
    tracker.record(NodeUsage("a", 50, 0.25, 5, None, 10))
    tracker.record(NodeUsage("a", 1, 0.0, 1, "claude-haiku", 0))
    tracker.record(NodeUsage("b", 7, 0.0, 2))
    summary = tracker.summary()
    assert list(summary) == ["a", "b"]
    assert summary["a"] == NodeUsage("a", 151, 0.75, 16, "gpt-4o", 50)
    assert summary["b"] == NodeUsage("b", 7, 0.0, 2, None, 0)
    assert (tracker.total_tokens, tracker.total_cost_usd, tracker.total_latency_ms) == (158, 0.75, 18)


def test_time_only_usage_still_counts_in_the_summary() -> None:
    """An attempt that used only time (the engine's cheap path) shows in the node's summary, in order."""
    tracker = CostTracker()
    tracker.add("a", 0, 0.0, 4.0)
    tracker.add("b", 10, 0.1, 1.0, "gpt-4o")
    tracker.add("a", 0, 0.0, 6.0)
    summary = tracker.summary()
    assert list(summary) == ["a", "b"]
    assert summary["a"].latency_ms == 10.0
    assert tracker.total_latency_ms == 11.0


def test_active_fallback_applies_to_every_node_once_spend_reaches_the_threshold() -> None:
    """The first policy whose threshold spend reached is in force whatever the node's model; none below it."""
    tracker = CostTracker()
    budget = ExecutionBudget(max_cost_usd=1.0)
    fallbacks = [
        FallbackPolicy("gpt-4o", "gpt-4o-mini", 0.8),
        FallbackPolicy("claude-sonnet", "claude-haiku", 0.5),
    ]
    tracker.add("a", 1, 0.49, 0.0)
    assert active_fallback(tracker, budget, fallbacks) is None
    tracker.add("a", 1, 0.01, 0.0)
    assert active_fallback(tracker, budget, fallbacks) is fallbacks[1]
    tracker.add("a", 1, 0.3, 0.0)
    assert active_fallback(tracker, budget, fallbacks) is fallbacks[0]
    assert active_fallback(tracker, ExecutionBudget(), fallbacks) is None
    assert active_fallback(tracker, budget, []) is None


def test_resolve_model_prices_at_the_first_matching_fallback_without_chaining() -> None:
    """resolve_model follows 0.3.2: the first reached policy for the declared model, one step only."""
    tracker = CostTracker()
    tracker.add("a", 1, 0.9, 0.0)
    budget = ExecutionBudget(max_cost_usd=1.0)
    fallbacks = [
        FallbackPolicy("gpt-4o", "gpt-4o-mini", 0.5),
        FallbackPolicy("gpt-4o-mini", "gpt-3.5-turbo", 0.5),
    ]
    assert resolve_model("gpt-4o", tracker, budget, fallbacks) == "gpt-4o-mini"
    assert resolve_model("claude-haiku", tracker, budget, fallbacks) == "claude-haiku"
    assert resolve_model(None, tracker, budget, fallbacks) is None


# -- runner and hooks ---------------------------------------------------------------------------


def test_config_hooks_is_the_object_the_user_passed() -> None:
    """RunConfig(hooks=), quick(hooks=) and with_hooks() keep the very NodeHooks given."""
    hooks = NodeHooks(on_node_start=lambda *a: None)
    assert RunConfig(hooks=hooks).hooks is hooks
    assert StromaRunner.quick(hooks=hooks).config.hooks is hooks
    assert StromaRunner.quick().with_hooks(hooks).config.hooks is hooks
    assert StromaRunner.quick().config.hooks.on_node_success is None


async def test_several_hooks_become_one_that_calls_each_in_order() -> None:
    """with_hooks twice gives one NodeHooks whose callbacks call both, in order; hook_list lists both."""
    calls: list[tuple[str, str]] = []

    def first(run_id: str, node_id: str, output: dict[str, Any], tokens: int) -> None:
        calls.append(("first", node_id))

    async def second(run_id: str, node_id: str, output: dict[str, Any], tokens: int) -> None:
        calls.append(("second", node_id))

    a, b = NodeHooks(on_node_success=first), NodeHooks(on_node_success=second)
    runner = StromaRunner.quick().with_hooks(a).with_hooks(b)
    assert isinstance(runner.config.hooks, NodeHooks)
    callback = runner.config.hooks.on_node_success
    assert callback is not None
    await callback("run", "n", {}, 0)
    assert calls == [("first", "n"), ("second", "n")]
    assert runner.config.hook_list() == [a, b]
    assert RunConfig(hooks=[a, b]).hook_list() == [a, b]


def test_boundary_validator_is_a_class() -> None:
    """BoundaryValidator()(contract, direction, data) validates, or raises ContractViolation."""
    contract = NodeContract(node_id="s", input_schema=Doc, output_schema=Summary)
    validator = BoundaryValidator()
    assert validator(contract, "input", {"text": "hi"}) == Doc(text="hi")
    assert validator(contract, "output", {"summary": "x", "word_count": 1}) == Summary(
        summary="x", word_count=1
    )
    with pytest.raises(ContractViolation) as info:
        validator(contract, "output", {"summary": "x"})
    assert info.value.direction == "output"


def test_stroma_step_takes_step_id_and_contexts_are_dataclasses() -> None:
    """stroma_step(step_id=..., contract=...) marks the function; NodeContext works with asdict."""
    contract = NodeContract(node_id="s", input_schema=Count, output_schema=Count)

    @stroma_step(step_id="s", contract=contract)
    async def step(state: Count) -> dict[str, int]:
        return {"n": state.n}

    assert step._stroma_node_id == "s"  # type: ignore[attr-defined]
    context = NodeContext("s", 2, "run")
    assert dataclasses.asdict(context) == {"node_id": "s", "attempt": 2, "run_id": "run"}
    assert StepContext is NodeContext


# -- stores -------------------------------------------------------------------------------------


async def test_async_in_memory_store_saves_and_loads_typed() -> None:
    """AsyncInMemoryStore.save_typed validates as the schema; load_typed reads with the given one."""
    store = AsyncInMemoryStore()
    await store.save_typed("run", "a", Count(n=3), Count)
    assert await store.load_typed("run", "a", Count) == Count(n=3)
    assert await store.load_typed("run", "missing", Count) is None


async def test_save_typed_refuses_a_schema_that_is_not_a_model() -> None:
    """Both in-memory stores raise TypeError 'schema must be a BaseModel type' for a non-model."""
    with pytest.raises(TypeError, match="schema must be a BaseModel type"):
        InMemoryStore().save_typed("run", "a", Count(n=1), dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="schema must be a BaseModel type"):
        await AsyncInMemoryStore().save_typed("run", "a", Count(n=1), dict)  # type: ignore[arg-type]


def test_resolve_schema_of_a_non_model_is_a_type_error_and_imports_nothing() -> None:
    """_resolve_schema('builtins:dict') raises TypeError 'resolved schema is not a BaseModel'."""
    with pytest.raises(TypeError, match="resolved schema is not a BaseModel"):
        _resolve_schema("builtins:dict")
    with pytest.raises(TypeError, match="resolved schema is not a BaseModel"):
        _resolve_schema("stroma_never_imported_module:Thing")
    assert "stroma_never_imported_module" not in sys.modules


@pytest.mark.parametrize(
    ("make", "start", "extra"),
    [
        (lambda: RedisStore("redis://localhost:6379"), "redis is required for RedisStore", "stroma[redis]"),
        (
            lambda: SyncRedisStore("redis://localhost:6379"),
            "redis is required for SyncRedisStore",
            "stroma[redis]",
        ),
        (
            lambda: StromaRunner.quick().with_redis("redis://localhost:6379"),
            "redis is required for RedisStore",
            "stroma[redis]",
        ),
        (
            lambda: PostgresStore("postgresql://localhost/test"),
            "asyncpg is required for PostgresStore",
            "stroma[postgres]",
        ),
    ],
)
def test_a_missing_extra_is_an_import_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, make: Any, start: str, extra: str
) -> None:
    """Without the optional package, the store raises an ImportError (and StromaError) naming the extra."""
    for name in ("redis", "redis.asyncio", "asyncpg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError) as info:
        make()
    assert isinstance(info.value, StromaError)
    assert str(info.value).startswith(start)
    assert extra in str(info.value)
