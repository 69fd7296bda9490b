"""Stroma contracts, retries and run files inside a LangGraph graph.

    pip install 'stroma[langgraph]'
    python examples/langgraph_adapter.py [--out runs]

A two-node LangGraph ``StateGraph`` (search -> summarize) keeps its own graph and state
merging; ``LangGraphAdapter`` gives each decorated node Stroma's reliability step:

1. "search" times out once: Stroma classifies the TimeoutError as RECOVERABLE and retries it.
2. "summarize" reports its token usage with a usage tuple; Stroma prices it.
3. A second invocation whose "summarize" returns malformed output is stopped at the contract
   boundary (TERMINAL, no retry): ``ainvoke`` raises ContractViolation.

Each ``ainvoke`` is one Stroma run, written as a run file that ``stroma-view`` opens.
No network and no API key: the "LLM" is a deterministic stand-in.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from stroma import (
    ContractRegistry,
    ContractViolation,
    FailureClass,
    FailurePolicy,
    NodeContract,
    StromaRunner,
)
from stroma.adapters.langgraph import LangGraphAdapter, stroma_langgraph_node


class State(TypedDict, total=False):
    """The graph's state; LangGraph merges each node's update into it."""

    question: str
    documents: list[str]
    summary: str
    malformed: bool


class Question(BaseModel):
    """search's input."""

    question: str


class Documents(BaseModel):
    """search's output."""

    documents: list[str]


class Findings(BaseModel):
    """summarize's input."""

    documents: list[str]
    malformed: bool = False


class Summary(BaseModel):
    """summarize's output."""

    summary: str


SEARCH = NodeContract(node_id="search", input_schema=Question, output_schema=Documents)
SUMMARIZE = NodeContract(node_id="summarize", input_schema=Findings, output_schema=Summary)
timeouts_left = 1


@stroma_langgraph_node("search", SEARCH)
async def search(state: Question) -> dict[str, Any]:
    """Find documents; the backend times out on the first call."""
    global timeouts_left  # noqa: PLW0603 - the demo's one flaky backend
    if timeouts_left:
        timeouts_left -= 1
        raise TimeoutError("search backend timed out")
    return {"documents": [f"{state.question}: fact {i}" for i in (1, 2, 3)]}


@stroma_langgraph_node("summarize", SUMMARIZE)
async def summarize(state: Findings) -> tuple[dict[str, Any], int, int, str]:
    """Summarize the documents and report the tokens a real model call would have used."""
    if state.malformed:
        return {"text": "oops"}, 10, 2, "gpt-4o-mini"  # no "summary": the contract catches it
    return {"summary": f"{len(state.documents)} documents found"}, 300, 40, "gpt-4o-mini"


def build_graph(out: Path) -> tuple[Any, LangGraphAdapter]:
    """The LangGraph graph with its Stroma nodes adapted; run files go to ``out``."""
    builder = StateGraph(State)
    builder.add_node("search", search)
    builder.add_node("summarize", summarize)
    builder.add_edge(START, "search")
    builder.add_edge("search", "summarize")
    builder.add_edge("summarize", END)
    fast_retries = {FailureClass.RECOVERABLE: FailurePolicy(max_retries=3, backoff_seconds=0.05)}
    settings = (
        StromaRunner.quick(pipeline_name="research")
        .with_node_policies({"search": fast_retries})
        .with_trace_dir(out)
    )
    adapter = LangGraphAdapter(ContractRegistry(), settings)
    return adapter.wrap(builder).compile(), adapter


async def main(out: Path) -> None:
    """Run the graph twice: once cleanly (after a retry), once into a contract violation."""
    graph, adapter = build_graph(out)

    final = await graph.ainvoke({"question": "otters"})
    result = adapter.last_result
    assert result is not None
    retries = sum(1 for attempt in result.trace if attempt.failure is not None)
    print(f"summary: {final['summary']}")
    print(f"status: {result.status.value}; retried 'search' {retries} time(s)")
    print(f"tokens: {result.total_tokens}, cost: ${result.total_cost_usd:.6f}")
    print(f"run file: {result.header['run_file']}")

    try:
        await graph.ainvoke({"question": "eels", "malformed": True})
    except ContractViolation as exc:
        print(f"caught at the boundary -> {exc}")
    assert adapter.last_result is not None
    print(f"status: {adapter.last_result.status.value}")
    print(f"open the runs with: stroma-view {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs"), help="where run files go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args.out))
