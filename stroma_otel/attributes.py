"""Every span, span-event, attribute and metric name stroma_otel emits, in one place.

Existing OpenTelemetry semantic-convention names come first (``gen_ai.*``, ``error.type``); the
rest live under ``stroma.*``. ``SCHEMA_URL`` is the semantic-convention schema the ``gen_ai`` names
follow; ``SCHEMA_VERSION`` versions the ``stroma.*`` names and is emitted as the instrumentation
scope attribute (and run span attribute) ``stroma.schema.version``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ATTEMPT_MAX",
    "ATTEMPT_NUMBER",
    "ATTEMPT_SPAN",
    "BUDGET_DECISION",
    "BUDGET_DIMENSION",
    "BUDGET_LIMIT",
    "BUDGET_USED",
    "CHECKPOINT_DURATION_S",
    "CHECKPOINT_NODE",
    "CHECKPOINT_OPERATION",
    "CHECKPOINT_SIZE_BYTES",
    "CHECKPOINT_STORE",
    "CONTENT_MAX_CHARS",
    "CONTRACT_DIRECTION",
    "CONTRACT_ERRORS",
    "CONTRACT_ERROR_COUNT",
    "CONTRACT_FIELD_PATHS",
    "COST_USD",
    "ERROR_TYPE",
    "ERROR_TYPE_INTERRUPTED",
    "ERROR_TYPE_OTHER",
    "EVENT_BUDGET_CHECKED",
    "EVENT_CHECKPOINT_LOADED",
    "EVENT_CHECKPOINT_SAVED",
    "EVENT_CONTRACT_VIOLATION",
    "EVENT_EXCEPTION",
    "EVENT_FAILURE_CLASSIFIED",
    "EVENT_MODEL_FALLBACK",
    "EVENT_RETRIES_EXHAUSTED",
    "EVENT_RETRY_SCHEDULED",
    "EXCEPTION_MESSAGE",
    "EXCEPTION_TYPE",
    "FAILURE_CLASS",
    "FAILURE_DECIDED_BY",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_TOKEN_TYPE",
    "GEN_AI_WORKFLOW_NAME",
    "INSTRUMENTATION_NAME",
    "LINK_TYPE",
    "LINK_TYPE_RESUMED_FROM",
    "METER_NAME",
    "METRIC_BUDGET_DECISIONS",
    "METRIC_CHECKPOINT_DURATION",
    "METRIC_FAILURES",
    "METRIC_MODEL_FALLBACKS",
    "METRIC_NODE_ATTEMPTS",
    "METRIC_NODE_DURATION",
    "METRIC_RETRY_DELAY",
    "METRIC_RUN_DURATION",
    "METRIC_USAGE_COST",
    "METRIC_USAGE_TOKENS",
    "MODEL_FALLBACK_FROM",
    "MODEL_FALLBACK_SPEND_FRACTION",
    "MODEL_FALLBACK_TO",
    "NODE_ATTEMPTS",
    "NODE_ID",
    "NODE_OUTCOME",
    "NODE_OUTCOME_DENIED",
    "NODE_PARENT",
    "NODE_RESTORED",
    "NODE_SPAN",
    "OPERATION_INVOKE_WORKFLOW",
    "RETRY_ATTEMPT",
    "RETRY_BACKOFF_S",
    "RETRY_DELAY_S",
    "RETRY_MAX_RETRIES",
    "RUN_ID",
    "RUN_RESUMED_FROM",
    "RUN_SPAN",
    "RUN_STATUS",
    "RUN_STATUS_INTERRUPTED",
    "SCHEMA_URL",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "STATE_INPUT",
    "STATE_OUTPUT",
    "USAGE_COST_USD",
    "USAGE_INPUT_TOKENS",
    "USAGE_OUTPUT_TOKENS",
    "USAGE_TOKENS",
]

# -- schema and scope ------------------------------------------------------------------------

INSTRUMENTATION_NAME: Final = "stroma"
"""Name of the tracer (instrumentation scope)."""
METER_NAME: Final = "stroma"
"""Name of the meter every metric is recorded on."""
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.44.0"
"""Semantic-convention schema of the ``gen_ai.*`` / ``error.type`` names used here."""
SCHEMA_VERSION: Final = "1"
"""Version of the ``stroma.*`` names below; bumped on any rename or meaning change."""
SCHEMA_VERSION_KEY: Final = "stroma.schema.version"

# -- span names (a suffix follows: pipeline name, node id, "node_id #n") -----------------------

RUN_SPAN: Final = "invoke_workflow"
NODE_SPAN: Final = "node"
ATTEMPT_SPAN: Final = "attempt"

# -- semantic-convention attributes ----------------------------------------------------------

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
OPERATION_INVOKE_WORKFLOW: Final = "invoke_workflow"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
ERROR_TYPE: Final = "error.type"
ERROR_TYPE_OTHER: Final = "_OTHER"
"""``error.type`` when the core does not say which exception it was (a failed parallel child)."""
ERROR_TYPE_INTERRUPTED: Final = "stroma.interrupted"
"""``error.type`` of spans a replayed run file left open: the process stopped before they ended."""
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"

# -- run --------------------------------------------------------------------------------------

RUN_ID: Final = "stroma.run.id"
RUN_STATUS: Final = "stroma.run.status"
RUN_STATUS_INTERRUPTED: Final = "INTERRUPTED"
"""``stroma.run.status`` of a replayed run whose file ends before the run did (a killed process)."""
RUN_RESUMED_FROM: Final = "stroma.run.resumed_from"
USAGE_TOKENS: Final = "stroma.usage.tokens"
USAGE_COST_USD: Final = "stroma.usage.cost_usd"
USAGE_INPUT_TOKENS: Final = "stroma.usage.input_tokens"
"""On an attempt that reported usage: Stroma's roll-up. The provider's own client span stays the one
source of ``gen_ai.usage.*``, so a backend summing those over a trace counts each token once."""
USAGE_OUTPUT_TOKENS: Final = "stroma.usage.output_tokens"
LINK_TYPE: Final = "stroma.link.type"
LINK_TYPE_RESUMED_FROM: Final = "resumed_from"

# -- node -------------------------------------------------------------------------------------

NODE_ID: Final = "stroma.node.id"
NODE_ATTEMPTS: Final = "stroma.node.attempts"
NODE_RESTORED: Final = "stroma.node.restored"
NODE_PARENT: Final = "stroma.node.parent"
"""On a parallel() child: the id of its group node."""
NODE_OUTCOME: Final = "stroma.node.outcome"
"""succeeded | failed | cancelled (a parallel() child cancelled because a sibling failed) | denied."""
NODE_OUTCOME_DENIED: Final = "denied"
"""The node's code succeeded but the budget check after it denied the spend: a denial, not a failure."""

# -- attempt ----------------------------------------------------------------------------------

ATTEMPT_NUMBER: Final = "stroma.attempt.number"
ATTEMPT_MAX: Final = "stroma.attempt.max"
COST_USD: Final = "stroma.cost_usd"
FAILURE_CLASS: Final = "stroma.failure.class"
FAILURE_DECIDED_BY: Final = "stroma.failure.decided_by"
STATE_INPUT: Final = "stroma.state.input"
"""Input state as JSON; only with content capture on (truncated)."""
STATE_OUTPUT: Final = "stroma.state.output"
"""Output state as JSON; only with content capture on (truncated)."""
CONTENT_MAX_CHARS: Final = 4096
"""Captured content (state JSON, exception messages) is cut to this many characters."""

# -- span events and their attributes ---------------------------------------------------------

EVENT_FAILURE_CLASSIFIED: Final = "stroma.failure.classified"
EVENT_RETRY_SCHEDULED: Final = "stroma.retry.scheduled"
EVENT_RETRIES_EXHAUSTED: Final = "stroma.retry.exhausted"
EVENT_BUDGET_CHECKED: Final = "stroma.budget.checked"
EVENT_MODEL_FALLBACK: Final = "stroma.model.fallback"
EVENT_CHECKPOINT_SAVED: Final = "stroma.checkpoint.saved"
EVENT_CHECKPOINT_LOADED: Final = "stroma.checkpoint.loaded"
EVENT_CONTRACT_VIOLATION: Final = "stroma.contract.violation"
EVENT_EXCEPTION: Final = "exception"
"""The semantic-convention exception event on a failed attempt: ``exception.type`` always,
``exception.message`` only with content capture on."""

RETRY_ATTEMPT: Final = "stroma.retry.attempt"
"""The number of the attempt that failed and will be retried."""
RETRY_DELAY_S: Final = "stroma.retry.delay_s"
RETRY_MAX_RETRIES: Final = "stroma.retry.max_retries"
RETRY_BACKOFF_S: Final = "stroma.retry.backoff_s"
BUDGET_DIMENSION: Final = "stroma.budget.dimension"
BUDGET_LIMIT: Final = "stroma.budget.limit"
BUDGET_USED: Final = "stroma.budget.used"
BUDGET_DECISION: Final = "stroma.budget.decision"
MODEL_FALLBACK_FROM: Final = "stroma.model.from"
MODEL_FALLBACK_TO: Final = "stroma.model.to"
MODEL_FALLBACK_SPEND_FRACTION: Final = "stroma.model.spend_fraction"
CHECKPOINT_NODE: Final = "stroma.checkpoint.node"
CHECKPOINT_STORE: Final = "stroma.checkpoint.store"
CHECKPOINT_SIZE_BYTES: Final = "stroma.checkpoint.size_bytes"
CHECKPOINT_DURATION_S: Final = "stroma.checkpoint.duration_s"
CHECKPOINT_OPERATION: Final = "stroma.checkpoint.operation"
CONTRACT_DIRECTION: Final = "stroma.contract.direction"
CONTRACT_ERROR_COUNT: Final = "stroma.contract.error_count"
CONTRACT_FIELD_PATHS: Final = "stroma.contract.field_paths"
CONTRACT_ERRORS: Final = "stroma.contract.errors"
"""Validation messages ("path: message"); only with content capture on."""

# -- metrics (meter "stroma"; never a run id as a dimension) ---------------------------------

METRIC_RUN_DURATION: Final = "stroma.run.duration"
"""Run duration (s) by workflow name, run status and error type."""
METRIC_NODE_DURATION: Final = "stroma.node.duration"
METRIC_NODE_ATTEMPTS: Final = "stroma.node.attempts"
METRIC_RETRY_DELAY: Final = "stroma.retry.delay"
METRIC_FAILURES: Final = "stroma.failures"
METRIC_BUDGET_DECISIONS: Final = "stroma.budget.decisions"
METRIC_MODEL_FALLBACKS: Final = "stroma.model.fallbacks"
METRIC_USAGE_TOKENS: Final = "stroma.usage.tokens"
METRIC_USAGE_COST: Final = "stroma.usage.cost"
METRIC_CHECKPOINT_DURATION: Final = "stroma.checkpoint.duration"
