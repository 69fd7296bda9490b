"""The metrics of OBSERVABILITY.md on the meter "stroma", never keyed by run id."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.metrics import NoOpMeterProvider

from stroma import FailureClass, NodeContext, NodeHooks, StromaRunner, estimate_cost_usd
from stroma.testing import FakeClock
from stroma_otel import attributes as a
from stroma_otel import otel_hooks
from stroma_otel._metrics import StromaMetrics
from tests.stroma_otel.conftest import Doc, Otel, Out


def recoverable(exc: Exception, ctx: NodeContext) -> FailureClass | None:
    """Every error is RECOVERABLE."""
    return FailureClass.RECOVERABLE


async def run_pipeline(otel: Otel, clock: FakeClock) -> None:
    """A retried node, a fallback and a checkpointed chain, twice (two run ids)."""
    for run_id in ("metrics-1", "metrics-2"):
        runner = (
            StromaRunner.quick(run_id=run_id, pipeline_name="docs")
            .with_classifiers([recoverable])
            .with_budget(cost_usd=0.01)
            .with_model_fallback("gpt-4o", to="gpt-4o-mini", at_budget_pct=0.5)
            .with_context({"model": "gpt-4o"})
            .with_hooks(otel.hooks())
        )
        calls = 0

        @runner.node("draft", input=Doc, output=Out)
        async def draft(state: Doc) -> tuple[dict[str, Any], int, int, str]:
            nonlocal calls
            calls += 1
            clock.advance(2.0)
            if calls == 1:
                raise ConnectionError("reset")
            return {"text": state.text}, 1000, 300, "gpt-4o"

        @runner.node("polish", input=Out, output=Out)
        async def polish(state: Out) -> tuple[dict[str, Any], int, int, str]:
            return {"text": state.text}, 100, 10, "gpt-4o"

        result = await runner.run([draft, polish], Doc(text="x"))
        assert str(result.status) == "COMPLETED"


async def test_metrics_names_units_and_dimensions(otel: Otel, clock: FakeClock) -> None:
    """Each metric of the spec is recorded with low-cardinality dimensions and the right values."""
    await run_pipeline(otel, clock)
    metrics = otel.metrics()
    assert set(metrics) == {
        a.METRIC_RUN_DURATION,
        a.METRIC_NODE_DURATION,
        a.METRIC_NODE_ATTEMPTS,
        a.METRIC_RETRY_DELAY,
        a.METRIC_FAILURES,
        a.METRIC_BUDGET_DECISIONS,
        a.METRIC_MODEL_FALLBACKS,
        a.METRIC_USAGE_TOKENS,
        a.METRIC_USAGE_COST,
        a.METRIC_CHECKPOINT_DURATION,
    }
    draft = {a.GEN_AI_WORKFLOW_NAME: "docs", a.NODE_ID: "draft", a.NODE_OUTCOME: "succeeded"}
    durations = {tuple(sorted(k.items())): p for k, p in metrics[a.METRIC_NODE_DURATION]}
    point = durations[tuple(sorted(draft.items()))]
    assert point.count == 2
    slept = sum(clock.slept)
    assert point.sum == pytest.approx(2 * 4.0 + slept)  # two attempts of 2 s each run, + backoff
    attempts = {tuple(sorted(k.items())): p for k, p in metrics[a.METRIC_NODE_ATTEMPTS]}
    assert attempts[tuple(sorted(draft.items()))].sum == 4
    ((failure_attrs, failures),) = metrics[a.METRIC_FAILURES]
    assert failure_attrs == {
        a.GEN_AI_WORKFLOW_NAME: "docs",
        a.NODE_ID: "draft",
        a.FAILURE_CLASS: "RECOVERABLE",
        a.ERROR_TYPE: "ConnectionError",
    }
    assert failures.value == 2
    ((_, delay),) = metrics[a.METRIC_RETRY_DELAY]
    assert delay.count == 2
    assert delay.sum == pytest.approx(slept)
    fallbacks = {tuple(sorted(k.items())): p.value for k, p in metrics[a.METRIC_MODEL_FALLBACKS]}
    assert fallbacks == {
        (
            (a.GEN_AI_WORKFLOW_NAME, "docs"),
            (a.MODEL_FALLBACK_FROM, "gpt-4o"),
            (a.MODEL_FALLBACK_TO, "gpt-4o-mini"),
        ): 2
    }
    decisions = {
        (k[a.BUDGET_DIMENSION], k[a.BUDGET_DECISION]): p.value for k, p in metrics[a.METRIC_BUDGET_DECISIONS]
    }
    assert decisions["cost", "fallback"] == 2
    assert decisions["cost", "allow"] >= 4
    tokens = {
        (k.get(a.GEN_AI_REQUEST_MODEL), k[a.GEN_AI_TOKEN_TYPE]): p.value
        for k, p in metrics[a.METRIC_USAGE_TOKENS]
    }
    assert tokens == {
        ("gpt-4o", "input"): 2000,
        ("gpt-4o", "output"): 600,
        ("gpt-4o-mini", "input"): 200,
        ("gpt-4o-mini", "output"): 20,
    }
    cost = {k.get(a.GEN_AI_REQUEST_MODEL): p.value for k, p in metrics[a.METRIC_USAGE_COST]}
    assert cost["gpt-4o"] == pytest.approx(2 * estimate_cost_usd("gpt-4o", 1000, 300))
    ((run_attrs, run_point),) = metrics[a.METRIC_RUN_DURATION]
    assert run_attrs == {a.GEN_AI_WORKFLOW_NAME: "docs", a.RUN_STATUS: "COMPLETED"}  # never a run id
    assert run_point.count == 2  # two runs
    assert run_point.sum >= point.sum
    checkpoints = {tuple(sorted(k.items())): p.count for k, p in metrics[a.METRIC_CHECKPOINT_DURATION]}
    assert checkpoints == {((a.CHECKPOINT_OPERATION, "save"), (a.CHECKPOINT_STORE, "memory")): 4}


async def test_no_metric_has_a_run_id_dimension(otel: Otel, clock: FakeClock) -> None:
    """Neither the run id attribute nor any run id value appears among metric attributes."""
    await run_pipeline(otel, clock)
    for points in otel.metrics().values():
        for attrs, _ in points:
            assert a.RUN_ID not in attrs
            assert not {"metrics-1", "metrics-2"} & {str(v) for v in attrs.values()}


async def test_meter_is_named_stroma_with_the_schema(otel: Otel, clock: FakeClock) -> None:
    """Every metric is on the meter "stroma" with the semantic-convention schema URL."""
    await run_pipeline(otel, clock)
    data = otel.reader.get_metrics_data()
    assert data is not None
    scopes = {(sm.scope.name, sm.scope.schema_url) for rm in data.resource_metrics for sm in rm.scope_metrics}
    assert scopes == {("stroma", a.SCHEMA_URL)}


class NoOpMeterOtel(Otel):
    """``otel_hooks`` on the SDK tracer provider and a no-op meter provider."""

    def hooks(self, *, capture_content: bool = False) -> NodeHooks:
        """``otel_hooks`` with ``NoOpMeterProvider()``."""
        return otel_hooks(self.tracer_provider, NoOpMeterProvider(), capture_content)


def span_views(otel: Otel) -> list[tuple[str, dict[str, Any], list[tuple[str, dict[str, Any]]]]]:
    """Name, attributes and events of every finished span (retry delays, jittered: by type)."""

    def event_attrs(attrs: Any) -> dict[str, Any]:
        return {k: type(v) if k == a.RETRY_DELAY_S else v for k, v in dict(attrs or {}).items()}

    return [
        (s.name, dict(s.attributes or {}), [(e.name, event_attrs(e.attributes)) for e in s.events])
        for s in otel.spans()
    ]


async def test_a_no_op_meter_is_skipped_and_the_spans_stay_the_same(otel: Otel, clock: FakeClock) -> None:
    assert StromaMetrics(otel.meter_provider, "").enabled
    assert StromaMetrics(None, "").enabled  # the global provider: a real one may be set later
    assert not StromaMetrics(NoOpMeterProvider(), "").enabled

    await run_pipeline(otel, clock)
    assert otel.metrics()
    no_op = NoOpMeterOtel()
    assert no_op.hooks().on_event.__self__._metrics is None  # the recorder calls no meter
    await run_pipeline(no_op, clock)
    assert span_views(no_op) == span_views(otel)
