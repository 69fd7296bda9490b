"""The public surface: names, import isolation and the published module layout."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import stroma

ROOT = Path(__file__).parents[2]


def test_all_is_exactly_the_public_names() -> None:
    """__all__ lists every public attribute of the package (modules aside), once each."""
    import types

    public = {
        name
        for name, value in vars(stroma).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert len(set(stroma.__all__)) == len(stroma.__all__)
    assert set(stroma.__all__) == public | {"__version__"}


def test_published_names_import_from_their_published_modules() -> None:
    """Code written against stroma 0.3.x imports from the same module paths."""
    from stroma.checkpoint import (
        AsyncCheckpointStore,
        CheckpointKey,
        CheckpointStore,
        _resolve_schema,
        _schema_ref,
    )
    from stroma.contracts import BoundaryValidator, ContractViolation, StepContract, StepViolation
    from stroma.cost import KNOWN_MODELS, FallbackPolicy, ModelHint, StepUsage, resolve_model
    from stroma.failures import Classifier, RetryBudget, StepContext, classify
    from stroma.middleware import ReliabilityContext, StromaStep, execute_step
    from stroma.runner import NodeHooks, RunConfig, StepHooks, parallel, stroma_node, stroma_step
    from stroma.trace import ExecutionResult, ExecutionTrace, RunStatus, TraceEvent

    assert StepContract is stroma.NodeContract
    assert StepViolation is ContractViolation
    assert StepHooks is NodeHooks
    assert list(inspect.signature(stroma_step).parameters) == ["step_id", "contract"]
    assert list(inspect.signature(stroma_node).parameters) == ["node_id", "contract"]
    assert all(
        x is not None
        for x in (
            AsyncCheckpointStore,
            CheckpointKey,
            CheckpointStore,
            _resolve_schema,
            _schema_ref,
            BoundaryValidator,
            KNOWN_MODELS,
            FallbackPolicy,
            ModelHint,
            StepUsage,
            resolve_model,
            Classifier,
            RetryBudget,
            StepContext,
            classify,
            ReliabilityContext,
            StromaStep,
            execute_step,
            RunConfig,
            parallel,
            ExecutionResult,
            ExecutionTrace,
            RunStatus,
            TraceEvent,
        )
    )


def test_import_stroma_loads_no_optional_dependency() -> None:
    """`import stroma` (and every store class) imports no opentelemetry, textual, redis or asyncpg."""
    code = (
        "import json, sys, stroma\n"
        "from stroma import RedisStore, SyncRedisStore, PostgresStore, SqliteStore\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'opentelemetry', 'textual', 'redis', 'asyncpg', 'rich'})\n"
        "print(json.dumps(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert json.loads(proc.stdout) == []


def test_errors_share_one_root() -> None:
    """Every error Stroma raises on purpose is a StromaError."""
    for name in stroma.__all__:
        obj = getattr(stroma, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, stroma.StromaError), name
