"""The metrics of OBSERVABILITY.md on the meter "stroma".

Dimensions are low-cardinality names from code (workflow, node id, failure class, error type,
model, store kind); never a run id, never a state or context value. Attribute dicts are cached so
recording a point costs one dict lookup plus the SDK's own work.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from opentelemetry import metrics

from stroma_otel import attributes as a

__all__ = ["StromaMetrics"]

_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
_ATTEMPT_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 16.0)

Attrs = dict[str, Any]


class StromaMetrics:
    """Instruments created once per hooks object; ``record_*`` called by the span recorder.

    ``enabled`` is False when the meter is a no-op one, so that the recorder can skip the calls.
    """

    __slots__ = (
        "_attrs",
        "budget_decisions",
        "checkpoint_duration",
        "enabled",
        "failures",
        "model_fallbacks",
        "node_attempts",
        "node_duration",
        "retry_delay",
        "run_duration",
        "usage_cost",
        "usage_tokens",
    )

    def __init__(self, meter_provider: metrics.MeterProvider | None, version: str) -> None:
        meter = metrics.get_meter(
            a.METER_NAME,
            version,
            meter_provider,
            schema_url=a.SCHEMA_URL,
            attributes={a.SCHEMA_VERSION_KEY: a.SCHEMA_VERSION},
        )
        # False when nothing can ever be recorded (a NoOpMeterProvider, or an SDK provider that
        # is disabled): the recorder then skips metrics altogether. A proxy meter (the global
        # provider before one is set) counts as enabled, since a provider may be set later.
        self.enabled = not isinstance(meter, metrics.NoOpMeter)
        self.run_duration = meter.create_histogram(
            a.METRIC_RUN_DURATION,
            unit="s",
            description="Duration of a run, by workflow name, run status and error type.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.node_duration = meter.create_histogram(
            a.METRIC_NODE_DURATION,
            unit="s",
            description="Duration of a logical node, all of its attempts and backoff included.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.node_attempts = meter.create_histogram(
            a.METRIC_NODE_ATTEMPTS,
            unit="{attempt}",
            description="Attempts a logical node took.",
            explicit_bucket_boundaries_advisory=_ATTEMPT_BUCKETS,
        )
        self.retry_delay = meter.create_histogram(
            a.METRIC_RETRY_DELAY,
            unit="s",
            description="Backoff delay actually slept before a retry.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.failures = meter.create_counter(
            a.METRIC_FAILURES,
            unit="{failure}",
            description="Failed attempts, by failure class and error type.",
        )
        self.budget_decisions = meter.create_counter(
            a.METRIC_BUDGET_DECISIONS,
            unit="{decision}",
            description="Budget checks, by dimension and decision (allow, fallback, deny).",
        )
        self.model_fallbacks = meter.create_counter(
            a.METRIC_MODEL_FALLBACKS,
            unit="{fallback}",
            description="Model fallbacks triggered by spend.",
        )
        self.usage_tokens = meter.create_counter(
            a.METRIC_USAGE_TOKENS,
            unit="{token}",
            description="Tokens reported by nodes, by model and token type.",
        )
        self.usage_cost = meter.create_counter(
            a.METRIC_USAGE_COST,
            unit="USD",
            description="Estimated cost of node attempts, by model.",
        )
        self.checkpoint_duration = meter.create_histogram(
            a.METRIC_CHECKPOINT_DURATION,
            unit="s",
            description="Checkpoint save / load duration, by store kind and operation.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self._attrs: dict[Hashable, Attrs] = {}

    def _cached(self, key: tuple[Any, ...], build: tuple[tuple[str, Any], ...]) -> Attrs:
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = {k: v for k, v in build if v is not None}
            if len(self._attrs) < 10_000:  # bounded: dimensions come from code, but be safe
                self._attrs[key] = attrs
        return attrs

    def run_finished(self, workflow: str, status: str, error_type: str | None, seconds: float) -> None:
        """One run ended (``error_type`` only when it failed)."""
        self.run_duration.record(
            seconds,
            self._cached(
                ("run", workflow, status, error_type),
                ((a.GEN_AI_WORKFLOW_NAME, workflow), (a.RUN_STATUS, status), (a.ERROR_TYPE, error_type)),
            ),
        )

    def node_finished(self, workflow: str, node_id: str, outcome: str, seconds: float, attempts: int) -> None:
        """One logical node ended."""
        attrs = self._cached(
            ("node", workflow, node_id, outcome),
            (
                (a.GEN_AI_WORKFLOW_NAME, workflow),
                (a.NODE_ID, node_id),
                (a.NODE_OUTCOME, outcome),
            ),
        )
        self.node_duration.record(seconds, attrs)
        self.node_attempts.record(attempts, attrs)

    def usage(self, workflow: str, model: str | None, in_tokens: int, out_tokens: int, cost: float) -> None:
        """Tokens and cost of one attempt."""
        if in_tokens:
            self.usage_tokens.add(
                in_tokens,
                self._cached(
                    ("tok", workflow, model, "input"),
                    (
                        (a.GEN_AI_WORKFLOW_NAME, workflow),
                        (a.GEN_AI_REQUEST_MODEL, model),
                        (a.GEN_AI_TOKEN_TYPE, "input"),
                    ),
                ),
            )
        if out_tokens:
            self.usage_tokens.add(
                out_tokens,
                self._cached(
                    ("tok", workflow, model, "output"),
                    (
                        (a.GEN_AI_WORKFLOW_NAME, workflow),
                        (a.GEN_AI_REQUEST_MODEL, model),
                        (a.GEN_AI_TOKEN_TYPE, "output"),
                    ),
                ),
            )
        if cost:
            self.usage_cost.add(
                cost,
                self._cached(
                    ("cost", workflow, model),
                    ((a.GEN_AI_WORKFLOW_NAME, workflow), (a.GEN_AI_REQUEST_MODEL, model)),
                ),
            )

    def failure(self, workflow: str, node_id: str, failure_class: str, error_type: str) -> None:
        """One failed attempt."""
        self.failures.add(
            1,
            self._cached(
                ("fail", workflow, node_id, failure_class, error_type),
                (
                    (a.GEN_AI_WORKFLOW_NAME, workflow),
                    (a.NODE_ID, node_id),
                    (a.FAILURE_CLASS, failure_class),
                    (a.ERROR_TYPE, error_type),
                ),
            ),
        )

    def retry(self, workflow: str, node_id: str, failure_class: str, delay_s: float) -> None:
        """One retry scheduled after ``delay_s``."""
        self.retry_delay.record(
            delay_s,
            self._cached(
                ("retry", workflow, node_id, failure_class),
                (
                    (a.GEN_AI_WORKFLOW_NAME, workflow),
                    (a.NODE_ID, node_id),
                    (a.FAILURE_CLASS, failure_class),
                ),
            ),
        )

    def budget(self, workflow: str, dimension: str, decision: str) -> None:
        """One budget check."""
        self.budget_decisions.add(
            1,
            self._cached(
                ("budget", workflow, dimension, decision),
                (
                    (a.GEN_AI_WORKFLOW_NAME, workflow),
                    (a.BUDGET_DIMENSION, dimension),
                    (a.BUDGET_DECISION, decision),
                ),
            ),
        )

    def fallback(self, workflow: str, from_model: str, to_model: str) -> None:
        """One model fallback."""
        self.model_fallbacks.add(
            1,
            self._cached(
                ("fallback", workflow, from_model, to_model),
                (
                    (a.GEN_AI_WORKFLOW_NAME, workflow),
                    (a.MODEL_FALLBACK_FROM, from_model),
                    (a.MODEL_FALLBACK_TO, to_model),
                ),
            ),
        )

    def checkpoint(self, store: str, operation: str, seconds: float) -> None:
        """One checkpoint save or load."""
        self.checkpoint_duration.record(
            seconds,
            self._cached(
                ("ckpt", store, operation),
                ((a.CHECKPOINT_STORE, store), (a.CHECKPOINT_OPERATION, operation)),
            ),
        )
