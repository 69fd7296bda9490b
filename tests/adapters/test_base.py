"""What every adapter shares, without any framework: protocols, state reading, settings, errors."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from stroma import (
    ConfigurationError,
    ContractRegistry,
    ContractViolation,
    ExecutionBudget,
    NodeContract,
    RunConfig,
    RunStatus,
    StromaRunner,
)
from stroma.adapters import (
    FrameworkAdapter,
    LoopAdapter,
    StepInterceptor,
    TurnAdapter,
    base,
    extract_state_dict,
)
from stroma.adapters.base import AdapterRuns
from stroma.testing import FakeClock

ROOT = Path(__file__).parents[2]
FRAMEWORKS = ("langgraph", "langchain", "langchain_core", "deepagents", "crewai")


class Question(BaseModel):
    """A node's input."""

    question: str


class Answer(BaseModel):
    """A node's output."""

    answer: str


CONTRACT = NodeContract(node_id="answer", input_schema=Question, output_schema=Answer)


def test_importing_stroma_and_every_adapter_module_imports_no_framework() -> None:
    """``import stroma`` and every ``stroma.adapters`` module load without importing a framework."""
    code = (
        "import sys, stroma, stroma.adapters, stroma.adapters.base, stroma.adapters.langgraph, "
        "stroma.adapters.deepagents, stroma.adapters.crewai\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"


@dataclass
class Point:
    """A plain object state."""

    x: int
    _hidden: int = 0


class WithDict:
    """An object with a ``.dict()`` method, like pydantic v1 models."""

    def dict(self) -> dict[str, Any]:
        """Its state."""
        return {"legacy": True}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"a": 1}, {"a": 1}),
        (Question(question="q"), {"question": "q"}),
        (WithDict(), {"legacy": True}),
        (Point(3), {"x": 3}),
    ],
)
def test_extract_state_dict_reads_every_supported_state(state: Any, expected: dict[str, Any]) -> None:
    """Dicts, pydantic models, ``.dict()`` objects and plain objects become plain dicts."""
    assert extract_state_dict(state) == expected


def test_extract_state_dict_refuses_what_has_no_fields() -> None:
    """A value without fields is a TypeError naming its type."""
    with pytest.raises(TypeError, match="int"):
        extract_state_dict(42)


def test_protocols_are_runtime_checkable() -> None:
    """The adapter shapes of 0.3.x can be checked with isinstance."""
    adapter = AdapterRuns(ContractRegistry())
    assert isinstance(adapter, StepInterceptor)
    assert not isinstance(adapter, FrameworkAdapter)  # no wrap(): only framework adapters have one

    class Loop:
        def on_tool_call(self, tool_name: str, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
            return args

        def on_tool_result(self, tool_name: str, result: Any, ctx: Any) -> Any:
            return result

    assert isinstance(Loop(), LoopAdapter)
    assert not isinstance(Loop(), TurnAdapter)


def test_a_missing_framework_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """An adapter whose framework is not installed says which extra to install."""
    monkeypatch.setattr(base, "find_spec", lambda name: None)

    class Adapter(AdapterRuns):
        framework = ("langgraph", "langgraph")

    with pytest.raises(ConfigurationError, match=r"pip install 'stroma\[langgraph\]'"):
        Adapter(ContractRegistry())


def test_settings_must_be_a_runner_or_a_run_config() -> None:
    """Anything else than a StromaRunner or a RunConfig is refused with what to pass."""
    with pytest.raises(ConfigurationError, match="StromaRunner or a RunConfig, got dict"):
        AdapterRuns(ContractRegistry(), {"budget": None})  # type: ignore[arg-type]


def test_node_decorator_needs_a_contract_and_names_the_node() -> None:
    """Marking a node without a NodeContract is a typed error naming the node."""
    adapter = AdapterRuns(ContractRegistry())
    with pytest.raises(ConfigurationError, match="'answer'"):
        adapter.node_decorator("answer", None)  # type: ignore[arg-type]


def test_wrap_step_without_a_registered_contract_names_the_step() -> None:
    """wrap_step without a contract looks the step up in the registry and names it when absent."""
    with pytest.raises(KeyError, match="'answer'"):
        AdapterRuns(ContractRegistry()).wrap_step("answer", lambda state: {})


async def test_a_step_outside_a_framework_run_is_a_run_of_its_own() -> None:
    """A wrapped step called on its own validates, runs as a one-step run and reports it."""
    adapter = AdapterRuns(ContractRegistry(), RunConfig(pipeline_name="solo"))

    async def answer(state: Question) -> tuple[dict[str, Any], int, int, str]:
        return {"answer": state.question.upper()}, 3, 4, "gpt-4o"

    step = adapter.wrap_step("answer", answer, CONTRACT)
    out = await step({"question": "why"})
    assert out == Answer(answer="WHY")
    result = adapter.last_result
    assert result is not None
    assert (result.status, result.total_tokens) == (RunStatus.COMPLETED, 7)
    assert [e.node_id for e in result.trace] == ["answer"]
    assert adapter.cost_tracker.total_tokens == 7

    with pytest.raises(ContractViolation, match="'answer' \\(input\\): question"):
        await step({"wrong": 1})
    assert adapter.last_result is not None
    assert adapter.last_result.status == RunStatus.FAILED
    assert adapter.cost_tracker.total_tokens == 7


async def test_budgets_come_from_the_runner_given_to_the_adapter(clock: FakeClock) -> None:
    """A token budget set on the runner stops a step that overspends: PARTIAL, not retried."""
    runner = StromaRunner.quick(budget=ExecutionBudget(max_tokens_total=5))
    adapter = AdapterRuns(ContractRegistry(), runner)
    calls = 0

    async def answer(state: Question) -> tuple[dict[str, Any], int]:
        nonlocal calls
        calls += 1
        return {"answer": "a"}, 10

    with pytest.raises(Exception, match="budget"):
        await adapter.wrap_step("answer", answer, CONTRACT)({"question": "q"})
    assert calls == 1
    assert adapter.last_result is not None
    assert adapter.last_result.status == RunStatus.PARTIAL
