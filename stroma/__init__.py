"""Stroma: a reliability runtime for async agent pipelines that you can see.

At every node boundary Stroma validates a typed contract, classifies failures and retries them
with jittered backoff, enforces token / cost / latency budgets with model fallback, checkpoints the
output so a crashed run resumes where it stopped, and records every step as lifecycle events.

Example::

    from stroma import StromaRunner

    runner = StromaRunner.quick()

    @runner.node("summarize", input=Document, output=Summary)
    async def summarize(state: Document) -> dict:
        return {"summary": state.text[:40], "word_count": len(state.text.split())}

    result = await runner.run([summarize], Document(text="hello world"))
"""

from stroma.checkpoint import (
    AsyncCheckpointStore,
    AsyncInMemoryStore,
    CheckpointKey,
    CheckpointManager,
    CheckpointStore,
    InMemoryStore,
    PostgresStore,
    RedisStore,
    SqliteStore,
    SyncRedisStore,
)
from stroma.compare import NodeChange, NodeComparison, RunComparison, compare_runs
from stroma.contracts import (
    BoundaryValidator,
    ContractRegistry,
    ContractViolation,
    NodeContract,
    StepContract,
    StepViolation,
    UntypedState,
)
from stroma.cost import (
    KNOWN_MODELS,
    BudgetExceeded,
    CostTracker,
    ExecutionBudget,
    FallbackPolicy,
    ModelHint,
    NodeUsage,
    StepUsage,
    estimate_cost_usd,
    resolve_model,
)
from stroma.errors import (
    CheckpointDataError,
    CheckpointMissingError,
    ConfigurationError,
    InvalidUsageError,
    MissingExtraError,
    NodeReturnTypeError,
    NodeTimeoutError,
    ResumeError,
    ResumeMismatchError,
    RunFileError,
    RunLeasedError,
    SchemaResolutionError,
    StoreUnavailableError,
    StromaError,
    UnknownNodeError,
)
from stroma.failures import (
    Classifier,
    FailureClass,
    FailurePolicy,
    NodeContext,
    PolicyMap,
    RetryBudget,
    StepContext,
    classify,
    default_policy_map,
)
from stroma.hooks import NodeHooks, StepHooks, register_hooks, unregister_hooks
from stroma.middleware import ReliabilityContext, StromaStep, execute_step
from stroma.runfile import RunHeader, RunRecord, load_run
from stroma.runner import RunConfig, StromaRunner, parallel, stroma_node, stroma_step
from stroma.trace import ExecutionResult, ExecutionTrace, RunStatus, TraceEvent

__version__ = "0.4.0.dev0"

__all__ = [
    "KNOWN_MODELS",
    "AsyncCheckpointStore",
    "AsyncInMemoryStore",
    "BoundaryValidator",
    "BudgetExceeded",
    "CheckpointDataError",
    "CheckpointKey",
    "CheckpointManager",
    "CheckpointMissingError",
    "CheckpointStore",
    "Classifier",
    "ConfigurationError",
    "ContractRegistry",
    "ContractViolation",
    "CostTracker",
    "ExecutionBudget",
    "ExecutionResult",
    "ExecutionTrace",
    "FailureClass",
    "FailurePolicy",
    "FallbackPolicy",
    "InMemoryStore",
    "InvalidUsageError",
    "MissingExtraError",
    "ModelHint",
    "NodeChange",
    "NodeComparison",
    "NodeContext",
    "NodeContract",
    "NodeHooks",
    "NodeReturnTypeError",
    "NodeTimeoutError",
    "NodeUsage",
    "PolicyMap",
    "PostgresStore",
    "RedisStore",
    "ReliabilityContext",
    "ResumeError",
    "ResumeMismatchError",
    "RetryBudget",
    "RunComparison",
    "RunConfig",
    "RunFileError",
    "RunHeader",
    "RunLeasedError",
    "RunRecord",
    "RunStatus",
    "SchemaResolutionError",
    "SqliteStore",
    "StepContext",
    "StepContract",
    "StepHooks",
    "StepUsage",
    "StepViolation",
    "StoreUnavailableError",
    "StromaError",
    "StromaRunner",
    "StromaStep",
    "SyncRedisStore",
    "TraceEvent",
    "UnknownNodeError",
    "UntypedState",
    "__version__",
    "classify",
    "compare_runs",
    "default_policy_map",
    "estimate_cost_usd",
    "execute_step",
    "load_run",
    "parallel",
    "register_hooks",
    "resolve_model",
    "stroma_node",
    "stroma_step",
    "unregister_hooks",
]
