"""Contracts, failure classification, backoff and cost accounting on their own."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from stroma import (
    KNOWN_MODELS,
    BudgetExceeded,
    ContractRegistry,
    ContractViolation,
    CostTracker,
    ExecutionBudget,
    FailureClass,
    FailurePolicy,
    FallbackPolicy,
    NodeContext,
    NodeContract,
    NodeUsage,
    RetryBudget,
    UnknownNodeError,
    classify,
    default_policy_map,
    estimate_cost_usd,
    resolve_model,
)
from stroma.failures import backoff_delay, classify_with_reason

from .conftest import Doc, Summary


class Wide(BaseModel):
    """Seven required fields, to overflow the listed-errors limit."""

    a: int
    b: int
    c: int
    d: int
    e: int
    f: int
    g: int


def test_contract_violation_message_lists_fields_in_the_published_format() -> None:
    """The str names node, direction and each failing field as '<loc>: <msg>'."""
    registry = ContractRegistry()
    registry.register(NodeContract(node_id="summarize", input_schema=Doc, output_schema=Summary))
    with pytest.raises(ContractViolation) as info:
        registry.validate_output("summarize", {"wrong_field": 1})
    assert str(info.value) == (
        "Contract violation for 'summarize' (output): summary: Field required; word_count: Field required"
    )
    assert info.value.direction == "output"
    assert info.value.field_paths == ("summary", "word_count")


def test_contract_violation_lists_at_most_five_errors() -> None:
    """Seven failing fields are shown as five plus a count of the rest."""
    registry = ContractRegistry()
    registry.register(NodeContract(node_id="w", input_schema=Wide, output_schema=Wide))
    with pytest.raises(ContractViolation) as info:
        registry.validate_input("w", {})
    message = str(info.value)
    assert message.count("Field required") == 5
    assert message.endswith("(+2 more)")
    assert len(info.value.errors) == 7


def test_registry_get_unknown_node_names_the_registered_ones() -> None:
    """Asking for an unregistered node raises a KeyError that lists what is registered."""
    registry = ContractRegistry()
    registry.register(NodeContract(node_id="a", input_schema=Doc, output_schema=Doc))
    with pytest.raises(KeyError) as info:
        registry.get("b")
    assert isinstance(info.value, UnknownNodeError)
    assert "'b'" in str(info.value)
    assert "registered: a" in str(info.value)


def test_validation_returns_an_instance_of_the_schema_unchanged() -> None:
    """A model that already is the schema's type is not validated again (same object back)."""
    registry = ContractRegistry()
    registry.register(NodeContract(node_id="a", input_schema=Doc, output_schema=Doc))
    doc = Doc(text="x")
    assert registry.validate_input("a", doc) is doc
    converted = registry.validate_input("a", {"text": "y"})
    assert isinstance(converted, Doc)
    assert converted.text == "y"


@pytest.mark.parametrize(
    ("exc", "expected", "rule"),
    [
        (ContractViolation("n", "output", {}, []), FailureClass.TERMINAL, "builtin:ContractViolation"),
        (BudgetExceeded("tokens", 10, 11, "n"), FailureClass.RECOVERABLE, "builtin:BudgetExceeded"),
        (TimeoutError("slow"), FailureClass.RECOVERABLE, "builtin:TimeoutError"),
        (ValueError("odd"), FailureClass.AMBIGUOUS, "builtin:ValueError"),
        (RuntimeError("?"), FailureClass.AMBIGUOUS, "builtin:default"),
    ],
)
def test_builtin_rules_classify_as_documented(exc: Exception, expected: FailureClass, rule: str) -> None:
    """Each built-in rule gives the documented class and names itself as the decider."""
    ctx = NodeContext("n", 1, "r")
    assert classify(exc, ctx) is expected
    assert classify_with_reason(exc, ctx) == (expected, rule)


def test_custom_classifiers_run_in_order_and_first_non_none_wins() -> None:
    """The first classifier returning a class decides; None defers to the next."""
    seen: list[str] = []

    def defer(exc: Exception, ctx: NodeContext) -> FailureClass | None:
        seen.append("defer")
        return None

    def terminal(exc: Exception, ctx: NodeContext) -> FailureClass | None:
        seen.append("terminal")
        return FailureClass.TERMINAL

    def never(exc: Exception, ctx: NodeContext) -> FailureClass | None:
        seen.append("never")
        return FailureClass.RECOVERABLE

    result = classify_with_reason(TimeoutError(), NodeContext("n", 2, "r"), [defer, terminal, never])
    assert result[0] is FailureClass.TERMINAL
    assert result[1].endswith("terminal")
    assert seen == ["defer", "terminal"]


def test_a_classifier_that_raises_is_skipped_and_named() -> None:
    """A buggy classifier does not break classification; the built-in rule decides and says so."""

    def broken(exc: Exception, ctx: NodeContext) -> FailureClass | None:
        raise KeyError("bug")

    failure_class, decided_by = classify_with_reason(TimeoutError(), NodeContext("n", 1, "r"), [broken])
    assert failure_class is FailureClass.RECOVERABLE
    assert "builtin:TimeoutError" in decided_by
    assert "broken raised" in decided_by


def test_default_policy_map_matches_the_published_values() -> None:
    """RECOVERABLE 3/1.0 s, TERMINAL 0/0, AMBIGUOUS 1/0.5 s."""
    policies = default_policy_map()
    assert policies[FailureClass.RECOVERABLE] == FailurePolicy(max_retries=3, backoff_seconds=1.0)
    assert policies[FailureClass.TERMINAL] == FailurePolicy(max_retries=0, backoff_seconds=0.0)
    assert policies[FailureClass.AMBIGUOUS] == FailurePolicy(max_retries=1, backoff_seconds=0.5)


def test_retry_budget_counts_per_run_and_node() -> None:
    """Counts are kept per (run, node) and exhaust once they reach max_retries (attempts in total)."""
    budget = RetryBudget()
    policy = FailurePolicy(max_retries=2)
    assert budget.increment("r", "a") == 1
    assert not budget.exhausted("r", "a", policy)
    assert budget.increment("r", "a") == 2
    assert budget.exhausted("r", "a", policy)
    assert budget.increment("r", "b") == 1
    assert budget.increment("other", "a") == 1


@settings(max_examples=200, deadline=None)
@given(
    retries=st.integers(min_value=2, max_value=8),
    cap=st.floats(min_value=0.001, max_value=60.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_never_exceeds_the_policy_cap(retries: int, cap: float, seed: int) -> None:
    """Every jittered delay is within [0, cap], and the ceiling reaches the cap on the last retry."""
    rng = random.Random(seed)
    policy = FailurePolicy(max_retries=retries, backoff_seconds=cap)
    last_retry = retries - 1  # max_retries counts attempts: the first one is not a retry
    for retry in range(1, last_retry + 1):
        delay = backoff_delay(retry, policy, rng)
        assert 0.0 <= delay <= cap * 2.0 ** min(0, retry - last_retry) + 1e-12


def test_backoff_delays_vary_and_grow() -> None:
    """Full jitter spreads delays; later retries have a higher ceiling, so a higher mean."""
    rng = random.Random(7)
    policy = FailurePolicy(max_retries=4, backoff_seconds=1.0)
    first = [backoff_delay(1, policy, rng) for _ in range(500)]
    last = [backoff_delay(3, policy, rng) for _ in range(500)]
    assert len(set(first)) > 400
    assert sum(last) / len(last) > 2.5 * (sum(first) / len(first))
    assert backoff_delay(1, FailurePolicy(max_retries=2, backoff_seconds=0.0), rng) == 0.0


def test_cost_estimation_uses_known_model_prices() -> None:
    """Cost is tokens times the per-million price; unknown models cost 0."""
    inp, out = KNOWN_MODELS["gpt-4o"]
    assert estimate_cost_usd("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(inp + out)
    assert estimate_cost_usd("gpt-4o-mini", 2000, 500) == pytest.approx((2000 * 0.15 + 500 * 0.6) / 1e6)
    assert estimate_cost_usd("no-such-model", 10_000, 10_000) == 0.0
    for name in ("gpt-4-turbo", "claude-opus", "claude-sonnet", "claude-haiku", "gemini-1.5-pro"):
        assert name in KNOWN_MODELS


def test_cost_tracker_keeps_running_totals_and_per_node_usage() -> None:
    """record() accumulates per node and overall; check_budget raises on the exceeded dimension."""
    tracker = CostTracker()
    tracker.record(NodeUsage(node_id="a", tokens_used=100, cost_usd=0.5, latency_ms=10))
    tracker.record(NodeUsage(node_id="a", tokens_used=50, cost_usd=0.25, latency_ms=5))
    tracker.record(NodeUsage(node_id="b", tokens_used=1, cost_usd=0.0, latency_ms=1))
    assert (tracker.total_tokens, tracker.total_cost_usd, tracker.total_latency_ms) == (151, 0.75, 16)
    usage = tracker.usage_for("a")
    assert usage is not None
    assert usage.tokens_used == 150
    summary = tracker.summary()
    assert summary["b"] == NodeUsage("b", 1, 0.0, 1)
    tracker.check_budget(ExecutionBudget(max_tokens_total=151), "b")
    with pytest.raises(BudgetExceeded) as info:
        tracker.check_budget(ExecutionBudget(max_tokens_total=150), "b")
    assert (info.value.dimension, info.value.limit, info.value.actual) == ("tokens", 150, 151)
    assert "exceeded the 150-token tokens budget (used 151)" in str(info.value)


def test_resolve_model_falls_back_at_the_threshold() -> None:
    """Below at_budget_pct of the cost budget the declared model stays; at or above it falls back."""
    tracker = CostTracker()
    budget = ExecutionBudget(max_cost_usd=1.0)
    fallbacks = [FallbackPolicy(preferred_model="gpt-4o", fallback_model="gpt-4o-mini", at_budget_pct=0.5)]
    tracker.add("a", 0, 0.49, 0)
    assert resolve_model("gpt-4o", tracker, budget, fallbacks) == "gpt-4o"
    tracker.add("a", 0, 0.01, 0)
    assert resolve_model("gpt-4o", tracker, budget, fallbacks) == "gpt-4o-mini"
    assert resolve_model("claude-haiku", tracker, budget, fallbacks) == "claude-haiku"
    assert resolve_model("gpt-4o", tracker, ExecutionBudget(), fallbacks) == "gpt-4o"
