"""Bad configuration gets a typed ConfigurationError at the call that received it (issue 16)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from stroma import (
    ConfigurationError,
    CostTracker,
    ExecutionBudget,
    FailureClass,
    FailurePolicy,
    FallbackPolicy,
    InvalidUsageError,
    NodeContract,
    NodeUsage,
    RunConfig,
    StromaRunner,
    stroma_node,
)
from stroma._checked import MAX_ID_CHARS

from .conftest import Count


def refused(call: Callable[[], Any], *needles: str) -> ConfigurationError:
    """Run ``call``: it must raise ConfigurationError (never pydantic's) with every needle in its message."""
    with pytest.raises(ConfigurationError) as info:
        call()
    assert not isinstance(info.value, ValidationError)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    return info.value


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"budget": {"max_cost_usd": -1}}, ("ExecutionBudget.max_cost_usd", "-1")),
        ({"budget": {"max_latency_ms": math.nan}}, ("ExecutionBudget.max_latency_ms", "nan")),
        ({"policy_map": {"RECOVERABLE": {"max_retries": -2}}}, ("max_retries", "-2")),
        ({"policy_map": {"SOMETIMES": {}}}, ("policy_map", "SOMETIMES")),
        ({"classifiers": [5]}, ("classifiers[0]", "5", "not callable")),
        ({"classifiers": "rate_limits"}, ("classifiers", "list of functions")),
        ({"hooks": "nope"}, ("hooks = 'nope'", "NodeHooks")),
        ({"hooks": [object()]}, ("hooks must be NodeHooks", "object")),
        ({"node_timeouts": {"a": math.nan}}, ("node_timeouts['a']", "nan", "finite positive")),
        ({"node_timeouts": {"a": 0}}, ("node_timeouts['a']", "0")),
        ({"node_timeouts": {"a": -5}}, ("node_timeouts['a']", "-5")),
        ({"node_timeouts": {"a": math.inf}}, ("node_timeouts['a']", "inf")),
        ({"node_timeouts": {"a": "fast"}}, ("node_timeouts['a']", "'fast'", "milliseconds")),
        ({"node_timeouts": {"a\x00": 5}}, ("node_timeouts key", "NUL")),
        (
            {"model_fallbacks": [{"preferred_model": "gpt-4o", "fallback_model": "m", "at_budget_pct": 2}]},
            ("at_budget_pct", "2"),
        ),
        ({"run_id": ""}, ("run_id", "non-empty")),
        ({"run_id": 7}, ("run_id", "7")),
        ({"trace_dir": 3.5}, ("RunConfig.trace_dir", "3.5")),
    ],
)
def test_bad_run_config_values_raise_configuration_error(
    kwargs: dict[str, Any], needles: tuple[str, ...]
) -> None:
    """Each bad RunConfig value raises ConfigurationError naming the field and the value."""
    refused(lambda: RunConfig(**kwargs), *needles)


@pytest.mark.parametrize(
    ("run_id", "needle"),
    [("run\x00id", "NUL"), ("run-\ud800", "lone surrogate"), ("r" * (MAX_ID_CHARS + 1), "characters long")],
)
def test_run_ids_no_store_can_keep_are_refused(run_id: str, needle: str) -> None:
    """A NUL, a lone surrogate or an absurdly long run id is refused by RunConfig and quick()."""
    refused(lambda: RunConfig(run_id=run_id), "run_id", needle)
    refused(lambda: StromaRunner.quick(run_id=run_id), "run_id", needle)
    assert RunConfig(run_id="r" * MAX_ID_CHARS).run_id == "r" * MAX_ID_CHARS


@pytest.mark.parametrize(
    ("node_id", "needle"),
    [
        ("node\x00", "NUL"),
        ("\udcff", "lone surrogate"),
        ("n" * (MAX_ID_CHARS + 1), "characters long"),
        ("", "non-empty"),
    ],
)
def test_node_ids_no_store_can_keep_are_refused(node_id: str, needle: str) -> None:
    """runner.node, stroma_node and NodeContract refuse the same bad node ids."""
    runner = StromaRunner.quick()
    refused(lambda: runner.node(node_id, input=Count, output=Count), "node id", needle)
    refused(lambda: NodeContract(node_id=node_id, input_schema=Count, output_schema=Count), "node id", needle)
    good = NodeContract(node_id="ok", input_schema=Count, output_schema=Count)
    refused(lambda: stroma_node(node_id, good), "node id", needle)


def test_builders_check_their_arguments_where_they_are_called() -> None:
    """with_* builders raise ConfigurationError at once, not at run time, and leave the config as it was."""
    runner = StromaRunner.quick()
    refused(lambda: runner.with_hooks("nope"), "hooks = 'nope'")  # type: ignore[arg-type]
    refused(lambda: runner.with_classifiers([5]), "classifiers[0]", "not callable")  # type: ignore[list-item]
    refused(lambda: runner.with_node_timeouts({"a": math.nan}), "node_timeouts['a']", "nan")
    refused(lambda: runner.with_budget(cost_usd=-1.0), "max_cost_usd", "-1.0")
    refused(lambda: runner.with_model_fallback("gpt-4o", to="gpt-4o-mini", at_budget_pct=0), "at_budget_pct")
    refused(lambda: runner.with_model_fallback("gpt-4o", to=""), "fallback_model")
    refused(lambda: runner.with_context(["not", "a", "dict"]), "with_context", "list")  # type: ignore[arg-type]
    refused(
        lambda: runner.with_policy_map({FailureClass.RECOVERABLE: {"backoff_seconds": math.inf}}),  # type: ignore[dict-item]
        "backoff_seconds",
        "inf",
    )
    refused(lambda: runner.with_node_policies({"a": {"NOPE": FailurePolicy()}}), "node_policies")  # type: ignore[dict-item]
    assert runner.config.classifiers == []
    assert runner.config.node_timeouts == {}
    assert runner.config.hook_list() == []


@pytest.mark.parametrize("backoff", [math.inf, math.nan, -0.5, 1e300])
def test_failure_policy_refuses_backoffs_that_hang_or_mean_nothing(backoff: float) -> None:
    """backoff_seconds must be a finite number of seconds from 0 to a day."""
    refused(lambda: FailurePolicy(backoff_seconds=backoff), "FailurePolicy.backoff_seconds", repr(backoff))
    assert FailurePolicy(backoff_seconds=86_400).backoff_seconds == 86_400


def test_budget_and_fallback_values_are_checked() -> None:
    """ExecutionBudget and FallbackPolicy refuse negative, NaN and out-of-range values."""
    refused(lambda: ExecutionBudget(max_tokens_total=-1), "ExecutionBudget.max_tokens_total", "-1")
    refused(lambda: ExecutionBudget(max_cost_usd=math.nan), "ExecutionBudget.max_cost_usd", "nan")
    refused(lambda: FallbackPolicy("gpt-4o", "gpt-4o-mini", 1.5), "at_budget_pct", "1.5")
    refused(lambda: FallbackPolicy("gpt-4o", None), "fallback_model", "None")  # type: ignore[arg-type]
    assert ExecutionBudget(max_cost_usd=math.inf).max_cost_usd == math.inf  # inf: no limit, as None


def test_the_context_value_is_never_echoed() -> None:
    """A bad context is named by type only: it may hold credentials."""
    error = refused(lambda: RunConfig(context="sk-live-SECRET"), "RunConfig.context")
    assert "SECRET" not in str(error)


def test_timeouts_for_nodes_the_pipeline_lacks_are_refused() -> None:
    """check_node_ids names the unknown timeout ids and the pipeline's nodes; known ids pass."""
    config = RunConfig(node_timeouts={"fetch": 100, "ghost": 5})
    refused(lambda: config.check_node_ids(["fetch", "summarize"]), "'ghost'", "fetch, summarize")
    RunConfig(node_timeouts={"fetch": 100}).check_node_ids(["fetch", "summarize"])


def test_negative_usage_is_a_typed_error() -> None:
    """record()/add() refuse negative or NaN usage with InvalidUsageError naming node, field and value."""
    tracker = CostTracker()
    error = refused(lambda: tracker.add("llm", -100, 0.0, 1.0), "node 'llm'", "tokens = -100")
    assert isinstance(error, InvalidUsageError)
    refused(lambda: tracker.record(NodeUsage("llm", 0, -3.0, 1.0)), "cost_usd = -3.0")
    refused(lambda: tracker.record(NodeUsage("llm", 5, math.nan, 1.0)), "cost_usd = nan")
    refused(lambda: tracker.add("llm", 0, 0.0, -1.0), "latency_ms = -1.0")
    refused(lambda: tracker.add("llm", 10, 0.0, 1.0, None, -4), "output_tokens = -4")
    assert (tracker.total_tokens, tracker.total_cost_usd, tracker.total_latency_ms) == (0, 0.0, 0.0)
    assert tracker.summary() == {}
