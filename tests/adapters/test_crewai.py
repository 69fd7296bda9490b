"""CrewAIAdapter on a real CrewAI Flow whose steps need no LLM, started with kickoff_async."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from stroma import (
    ConfigurationError,
    ContractRegistry,
    ContractViolation,
    NodeContract,
    RunStatus,
    StromaRunner,
    estimate_cost_usd,
)
from stroma.adapters.crewai import CrewAIAdapter, stroma_crewai_step
from stroma.testing import FakeClock
from stroma_otel import attributes as a
from tests.adapters.conftest import ERROR, UNSET, Otel, framework

flow_mod = framework("crewai.flow.flow")
Flow, start, listen = flow_mod.Flow, flow_mod.start, flow_mod.listen


class Brief(BaseModel):
    """The flow's state."""

    topic: str = "otters"
    outline: list[str] = []
    words: int = 0


class Topic(BaseModel):
    """outline's input (read from the flow state)."""

    topic: str


class Outline(BaseModel):
    """outline's output, merged into the state."""

    outline: list[str]


class Words(BaseModel):
    """count's output."""

    words: int


OUTLINE = NodeContract(node_id="outline", input_schema=Topic, output_schema=Outline)
COUNT = NodeContract(node_id="count", input_schema=Topic, output_schema=Words)


class Research(Flow[Brief]):  # type: ignore[misc]
    """outline (times out twice) -> count (reports usage)."""

    calls: dict[str, int] = {}  # noqa: RUF012 - per-instance copy made in __init__ by pydantic

    @start()
    @stroma_crewai_step("outline", OUTLINE)
    async def outline(self) -> dict[str, Any]:
        """Plan the sections."""
        self.calls["outline"] = self.calls.get("outline", 0) + 1
        if self.calls["outline"] <= 2:
            raise TimeoutError("planner timed out")
        return {"outline": ["intro", self.state.topic]}

    @listen(outline)
    @stroma_crewai_step("count", COUNT)
    def count(self, planned: dict[str, Any]) -> tuple[dict[str, Any], int, int, str]:
        """Count the planned sections (a sync step: CrewAI runs it in a thread)."""
        self.calls["count"] = self.calls.get("count", 0) + 1
        return {"words": len(planned["outline"])}, 100, 25, "gpt-4o"


class Broken(Flow[Brief]):  # type: ignore[misc]
    """One step whose output breaks its contract."""

    @start()
    @stroma_crewai_step("outline", OUTLINE)
    async def outline(self) -> dict[str, Any]:
        """Return the wrong field."""
        return {"sections": 3}


async def test_a_flow_run_retries_prices_and_traces_its_steps(otel: Otel, clock: FakeClock) -> None:
    """kickoff_async is one Stroma run: retried outline, priced count, state merged, spans recorded."""
    settings = StromaRunner.quick(pipeline_name="research").with_hooks(otel.hooks())
    adapter = CrewAIAdapter(ContractRegistry(), settings)
    flow = adapter.wrap(Research())
    flow.calls = {}

    out = await flow.kickoff_async()

    assert out == {"words": 2}  # what the last step returned, without its usage
    assert flow.state.outline == ["intro", "otters"]
    assert flow.state.words == 2
    assert flow.calls == {"outline": 3, "count": 1}
    result = adapter.last_result
    assert result is not None
    assert result.status == RunStatus.COMPLETED
    assert result.total_tokens == 125
    assert result.total_cost_usd == pytest.approx(estimate_cost_usd("gpt-4o", 100, 25))
    run = otel.one()
    assert run.shape() == (
        "invoke_workflow research", UNSET, (
            ("node outline", UNSET, (
                ("attempt outline #1", ERROR, ()),
                ("attempt outline #2", ERROR, ()),
                ("attempt outline #3", UNSET, ()),
            )),
            ("node count", UNSET, (("attempt count #1", UNSET, ()),)),
        ),
    )  # fmt: skip
    assert run.child("node count").child("attempt count #1").attrs[a.USAGE_INPUT_TOKENS] == 100


async def test_a_step_violating_its_contract_fails_the_flow(otel: Otel, clock: FakeClock) -> None:
    """The violation is raised out of kickoff_async, once (TERMINAL), and the run span is an error."""
    adapter = CrewAIAdapter(ContractRegistry(), StromaRunner.quick().with_hooks(otel.hooks()))
    flow = adapter.wrap(Broken())
    with pytest.raises(ContractViolation, match=r"'outline' \(output\): outline: Field required"):
        await flow.kickoff_async()
    assert adapter.last_result is not None
    assert adapter.last_result.status == RunStatus.FAILED
    assert [(e.attempt, e.failure) for e in adapter.last_result.trace] == [(1, "TERMINAL")]
    assert otel.one().status == ERROR


def test_wrap_refuses_a_flow_class() -> None:
    """Passing the Flow class instead of an instance is a typed error saying so."""
    with pytest.raises(ConfigurationError, match="an instance, not the class"):
        CrewAIAdapter(ContractRegistry()).wrap(Research)
