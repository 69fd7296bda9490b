"""DeepAgentsAdapter on a real DeepAgents agent (create_deep_agent) with a fake chat model."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from stroma import (
    AsyncInMemoryStore,
    ContractRegistry,
    ContractViolation,
    NodeContract,
    RunStatus,
    StromaRunner,
    estimate_cost_usd,
)
from stroma import events as ev
from stroma.adapters.deepagents import DeepAgentsAdapter, stroma_deepagents_node
from stroma.testing import FakeClock, capture_events
from tests.adapters.conftest import ERROR, UNSET, Otel, framework

create_deep_agent = framework("deepagents").create_deep_agent
fake_models = framework("langchain_core.language_models.fake_chat_models")
AIMessage = framework("langchain_core.messages").AIMessage


class ScriptedModel(fake_models.FakeMessagesListChatModel):  # type: ignore[misc]
    """langchain_core's fake chat model, answering from a script; tools are bound as-is."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        """The script already says which tools to call."""
        return self


def calling(tool: str, **args: Any) -> Any:
    """A model turn that calls ``tool`` with ``args``, then a final answer."""
    return [
        AIMessage(content="", tool_calls=[{"name": tool, "args": args, "id": f"call-{tool}"}]),
        AIMessage(content="done"),
    ]


class City(BaseModel):
    """A tool's input."""

    city: str


class Weather(BaseModel):
    """A tool's output."""

    temp_c: int


CONTRACT = NodeContract(node_id="forecast", input_schema=City, output_schema=Weather)
QUESTION = {"messages": [{"role": "user", "content": "Weather in Oslo?"}]}


def forecast_tool(calls: list[str]) -> Any:
    """A decorated tool that times out twice, then answers and reports its usage."""

    @stroma_deepagents_node("forecast", CONTRACT)
    async def forecast(city: str) -> tuple[dict[str, Any], int, int, str]:
        """Today's temperature in a city."""
        calls.append(city)
        if len(calls) % 3 != 0:
            raise TimeoutError("weather service timed out")
        return {"temp_c": 21}, 40, 20, "gpt-4o-mini"

    return forecast


async def test_a_decorated_tool_is_retried_priced_and_traced(otel: Otel, clock: FakeClock) -> None:
    """The agent's tool call times out twice and succeeds; usage and spans land in one Stroma run."""
    calls: list[str] = []
    model = ScriptedModel(responses=calling("forecast", city="Oslo"))
    settings = StromaRunner.quick(pipeline_name="weather").with_hooks(otel.hooks())
    adapter = DeepAgentsAdapter(ContractRegistry(), runner=settings)
    agent = adapter.wrap(create_deep_agent(model=model, tools=[forecast_tool(calls)]))

    final = await agent.ainvoke(QUESTION)

    tool_message = next(m for m in final["messages"] if m.type == "tool")
    assert '"temp_c": 21' in tool_message.content
    assert calls == ["Oslo"] * 3
    result = adapter.last_result
    assert result is not None
    assert result.status == RunStatus.COMPLETED
    assert [(e.node_id, e.attempt, e.failure) for e in result.trace] == [
        ("forecast", 1, "RECOVERABLE"),
        ("forecast", 2, "RECOVERABLE"),
        ("forecast", 3, None),
    ]
    assert result.total_tokens == 60
    assert adapter.cost_tracker.total_cost_usd == pytest.approx(estimate_cost_usd("gpt-4o-mini", 40, 20))
    assert otel.one().shape() == (
        "invoke_workflow weather", UNSET, (
            ("node forecast", UNSET, (
                ("attempt forecast #1", ERROR, ()),
                ("attempt forecast #2", ERROR, ()),
                ("attempt forecast #3", UNSET, ()),
            )),
        ),
    )  # fmt: skip


async def test_a_tool_violating_its_contract_fails_the_agent_run(clock: FakeClock) -> None:
    """A tool answer without its output field raises ContractViolation out of ainvoke, unretried."""
    calls: list[str] = []

    @stroma_deepagents_node("forecast", CONTRACT)
    async def forecast(city: str) -> dict[str, Any]:
        """Today's temperature in a city."""
        calls.append(city)
        return {"temperature": "warm"}

    adapter = DeepAgentsAdapter(ContractRegistry())
    agent = adapter.wrap(
        create_deep_agent(model=ScriptedModel(responses=calling("forecast", city="Oslo")), tools=[forecast])
    )
    with pytest.raises(ContractViolation, match=r"'forecast' \(output\): temp_c: Field required"):
        await agent.ainvoke(QUESTION)
    assert calls == ["Oslo"]
    assert adapter.last_result is not None
    assert adapter.last_result.status == RunStatus.FAILED


@pytest.mark.parametrize("store", [None, AsyncInMemoryStore()], ids=["framework-only", "checkpoint_store"])
async def test_stroma_checkpoints_only_when_given_a_checkpoint_store(
    store: AsyncInMemoryStore | None, clock: FakeClock
) -> None:
    """Without checkpoint_store the agent's own checkpointer is the only one; with it, Stroma saves too."""
    calls: list[str] = []
    adapter = DeepAgentsAdapter(ContractRegistry(), checkpoint_store=store)
    model = ScriptedModel(responses=calling("forecast", city="Oslo"))
    agent = adapter.wrap(create_deep_agent(model=model, tools=[forecast_tool(calls)]))
    with capture_events() as events:
        await agent.ainvoke(QUESTION)
    saved = [e.node_id for e in events.of(ev.CheckpointSaved)]  # type: ignore[attr-defined]
    assert saved == ([] if store is None else ["forecast"])


async def test_cost_tracker_adds_up_every_run_of_the_adapter(clock: FakeClock) -> None:
    """Two agent runs: each run's result has its own usage; cost_tracker holds both."""
    calls: list[str] = []
    model = ScriptedModel(responses=calling("forecast", city="Oslo") + calling("forecast", city="Rome"))
    adapter = DeepAgentsAdapter(ContractRegistry())
    agent = adapter.wrap(create_deep_agent(model=model, tools=[forecast_tool(calls)]))
    await agent.ainvoke(QUESTION)
    first = adapter.last_result
    await agent.ainvoke(QUESTION)
    assert first is not None
    assert adapter.last_result is not None
    assert first.run_id != adapter.last_result.run_id
    assert (first.total_tokens, adapter.last_result.total_tokens) == (60, 60)
    assert adapter.cost_tracker.total_tokens == 120
    assert calls == ["Oslo"] * 3 + ["Rome"] * 3
