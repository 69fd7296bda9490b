"""Shared helpers for pipeline.py, concurrency.py and memory.py.

Every benchmark compares a subject with a *floor* measured in the same process: N sequential
``await node(state)`` calls with pydantic validation of the input and the output (what a
hand-written loop with contracts costs). Subjects and floor are interleaved, in a rotating
order, and each cell is the median of several repeats, so a noisy machine moves all of them
together.
"""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# Run from a checkout without installing: make ``import stroma`` find the repo.
try:
    import stroma  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stroma import StromaRunner
from stroma.checkpoint import AsyncInMemoryStore
from stroma.trace import AttemptRecord


class StateA(BaseModel):
    """Input of even nodes, output of odd ones."""

    value: int
    label: str = "a"


class StateB(BaseModel):
    """Output of even nodes, input of odd ones."""

    value: int
    label: str = "b"


SCHEMAS: tuple[type[BaseModel], type[BaseModel]] = (StateA, StateB)


def schemas_for(i: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """(input, output) schema of node ``i``: the two models alternate."""
    return SCHEMAS[i % 2], SCHEMAS[(i + 1) % 2]


def make_node(i: int) -> Callable[[Any], Awaitable[dict[str, Any]]]:
    """A trivial async node: returns its output fields as a dict."""
    label = "b" if i % 2 == 0 else "a"

    async def node(state: Any) -> dict[str, Any]:
        return {"value": state.value + 1, "label": label}

    node.__name__ = node.__qualname__ = f"n{i}"
    return node


# -- the floor -------------------------------------------------------------------------------


def floor_pipeline(n: int) -> list[tuple[Callable[..., Any], type[BaseModel], type[BaseModel]]]:
    """N (node, input schema, output schema) triples for :func:`run_floor`."""
    return [(make_node(i), *schemas_for(i)) for i in range(n)]


async def run_floor(
    steps: Sequence[tuple[Callable[..., Any], type[BaseModel], type[BaseModel]]],
    state: BaseModel,
    keep: list[BaseModel] | None = None,
) -> BaseModel:
    """The hand-written loop with contracts: validate in, await the node, validate out.

    ``keep`` (memory benchmark) collects every validated output, the least a loop that keeps a
    record of its run would hold.
    """
    for node, schema_in, schema_out in steps:
        state_in = schema_in.model_validate(state)
        state = schema_out.model_validate(await node(state_in))
        if keep is not None:
            keep.append(state)
    return state


# -- Stroma ----------------------------------------------------------------------------------


def stroma_pipeline(n: int) -> tuple[StromaRunner, list[Callable[..., Any]]]:
    """A ``StromaRunner.quick()`` and N distinct decorated nodes (ids n0..n{N-1})."""
    runner = StromaRunner.quick()
    nodes = []
    for i in range(n):
        schema_in, schema_out = schemas_for(i)
        nodes.append(runner.node(f"n{i}", input=schema_in, output=schema_out)(make_node(i)))
    return runner, nodes


def attempt_records(n: int) -> list[AttemptRecord]:
    """The records of a successful n-node run of :func:`stroma_pipeline` as the engine keeps
    them: each node's input is the previous node's output text (the same string object)."""
    records = []
    state = StateA(value=0).model_dump_json()
    for i in range(n):
        out = SCHEMAS[(i + 1) % 2](value=i + 1).model_dump_json()
        rec = AttemptRecord(f"n{i}", "run", 1, 3, 1.0 + i, state, None, 1.0 + i)
        rec.output_state, rec.store, rec.saved, rec.ended = out, "memory", 1.5 + i, 1.5 + i
        records.append(rec)
        state = out
    return records


def fresh_store(runner: StromaRunner) -> StromaRunner:
    """Give ``runner`` an empty in-memory store (so repeats do not pile up checkpoints)."""
    return runner.with_store(AsyncInMemoryStore())


# -- LangGraph -------------------------------------------------------------------------------


def langgraph_available() -> bool:
    try:
        import langgraph  # noqa: F401
    except ImportError:
        return False
    return True


def langgraph_pipeline(n: int, *, checkpointer: bool) -> Any:
    """A compiled StateGraph chain of N trivial async nodes (TypedDict state)."""
    from typing import TypedDict

    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph

    class GState(TypedDict):
        value: int
        label: str

    graph = StateGraph(GState)
    for i in range(n):
        graph.add_node(f"n{i}", make_dict_node(i))
    graph.add_edge(START, "n0")
    for i in range(n - 1):
        graph.add_edge(f"n{i}", f"n{i + 1}")
    graph.add_edge(f"n{n - 1}", END)
    return graph.compile(checkpointer=InMemorySaver() if checkpointer else None)


def make_dict_node(i: int) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    label = "b" if i % 2 == 0 else "a"

    async def node(state: dict[str, Any]) -> dict[str, Any]:
        return {"value": state["value"] + 1, "label": label}

    return node


_thread = 0


async def run_langgraph(app: Any, n: int) -> Any:
    global _thread  # noqa: PLW0603 - a fresh thread id per run
    _thread += 1
    config = {"recursion_limit": n + 10, "configurable": {"thread_id": f"t{_thread}"}}
    return await app.ainvoke({"value": 0, "label": "a"}, config=config)


# -- timing ----------------------------------------------------------------------------------


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock: Callable[[], float] = time.process_time


def use_clock(name: str) -> str:
    """Time with process CPU time ("cpu", the default: steady on a shared, loaded machine, and
    equal to wall time for this single-threaded, I/O-free work) or wall time ("wall")."""
    global _clock  # noqa: PLW0603 - one clock per benchmark process
    _clock = CLOCKS[name]
    return name


async def timed(make: Callable[[], Awaitable[Any]]) -> float:
    """Seconds one awaited call takes (after a full collection, GC left on as in real runs)."""
    gc.collect()
    t0 = _clock()
    await make()
    return _clock() - t0


async def interleaved(
    subjects: dict[str, Callable[[], Awaitable[Any]]],
    repeats: int,
    *,
    setup: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Median seconds per subject: one warm-up each, then ``repeats`` rounds, every round
    running each subject once in a rotated order."""
    names = list(subjects)
    for name in names:  # warm-up
        if setup is not None:
            setup(name)
        await subjects[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            if setup is not None:
                setup(name)
            samples[name].append(await timed(subjects[name]))
    return {name: statistics.median(values) for name, values in samples.items()}


# -- reporting -------------------------------------------------------------------------------


def add_clock_option(parser: Any) -> None:
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: process CPU time (default; robust to other load); wall: perf_counter",
    )


def machine() -> str:
    """`nproc`, CPU model and Python version, for the table footer."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import pydantic

    import stroma

    return (
        f"machine: nproc={os.cpu_count()}, cpu={cpu}, python={platform.python_version()}, "
        f"pydantic={pydantic.VERSION}, stroma from {Path(stroma.__file__).parent}"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (GitHub-markdown compatible)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines.extend(
        "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells[1:]
    )
    return "\n".join(lines)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())
