"""The hand-made baselines of ``benchmarks/otel_overhead.py`` make the tree ``otel_hooks`` makes.

The benchmark's target compares ``otel_hooks()`` with the same spans created by hand; that only
means something while every hand-made variant creates the same spans: run span, node spans,
attempt spans attached as current, the same attributes and checkpoint events. No timing here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel

from stroma import NodeHooks, StromaRunner
from stroma_otel import attributes as a
from tests.stroma_otel.conftest import Otel, SpanNode

BENCH = Path(__file__).parents[2] / "benchmarks" / "otel_overhead.py"
NODES = 3
# Values a hand-made tree in a plain loop cannot know (no run): compared by type only.
VARYING = {a.RUN_ID, a.CHECKPOINT_DURATION_S}


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("otel_overhead_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (type(v) if k in VARYING else v) for k, v in values.items()}


def _view(node: SpanNode) -> tuple[Any, ...]:
    """Name, kind, status, attributes, events and children of a span, recursively."""
    return (
        node.name,
        node.span.kind,
        node.status,
        _attrs(node.attrs),
        tuple((name, _attrs(attrs)) for name, attrs in node.events),
        tuple(_view(child) for child in node.children),
    )


async def _run_tree(bench: ModuleType, hooks: NodeHooks, otel: Otel) -> SpanNode:
    runner, chain = bench.build(NODES, hooks)
    result = await runner.run(chain, bench.State(n=0))
    assert result.status == "COMPLETED"
    return otel.one()


async def test_every_hand_made_variant_makes_the_tree_otel_hooks_makes() -> None:
    bench = _bench()
    expected_otel = Otel()
    expected = _view(await _run_tree(bench, expected_otel.hooks(), expected_otel))
    assert expected[0] == "invoke_workflow bench"
    assert [child[0] for child in expected[5]] == [f"node n{i}" for i in range(NODES)]
    assert all(child[5][0][0] == f"attempt n{i} #1" for i, child in enumerate(expected[5]))

    hand = Otel()
    bench.hand_made(hand.tracer_provider.get_tracer("hand"), NODES)
    assert _view(hand.one()) == expected

    for make in (bench.hand_in_run, bench.hand_hooks):
        otel = Otel()
        tree = await _run_tree(bench, make(otel.tracer_provider.get_tracer("hand")), otel)
        assert _view(tree) == expected, make.__name__


class _N(BaseModel):
    n: int


async def test_hand_in_run_attaches_the_attempt_span_while_the_node_runs() -> None:
    bench = _bench()
    otel = Otel()
    seen: list[str] = []
    runner = StromaRunner.quick(pipeline_name="bench").with_hooks(
        bench.hand_in_run(otel.tracer_provider.get_tracer("hand"))
    )

    @runner.node("only", input=_N, output=_N)
    async def only(state: _N) -> dict[str, int]:
        seen.append(getattr(trace.get_current_span(), "name", ""))
        return {"n": state.n + 1}

    await runner.run([only], _N(n=0))
    assert seen == ["attempt only #1"]
    assert trace.get_current_span() is trace.INVALID_SPAN
