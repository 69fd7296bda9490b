"""What otel_hooks() costs compared with creating the same spans by hand.

Runs one pipeline of ``NODES`` nodes ``RUNS`` times:

- ``bare``:  no hooks (the engine alone);
- ``hooks``: ``otel_hooks()`` on an SDK TracerProvider (BatchSpanProcessor + InMemorySpanExporter);
- ``hand``:  the same span tree (run span, node span, attempt span attached as current, the same
  attributes and checkpoint events) created in a plain loop with the same tracer provider.

- ``replay``: the span recorder behind ``otel_hooks()`` fed one run's recorded events in a plain
  loop, i.e. under the same conditions as ``hand``;
- ``hand hooks``: the same spans written by hand as plain Stroma hooks in the same pipeline
  (what a user would write; the fairest comparison, as both pay for running inside the engine);
- ``listener``: a hook that does nothing (what the engine pays to publish events to any listener).

Prints stroma_otel's own cost per run, ``hooks - listener``, against ``hand``; the target is a
ratio of at most 1.30 (the hooks cost no more than hand-made spans + 30%). Also printed: the cost
the run sees (``hooks - bare``, which includes the engine's event dispatch). Metrics go to a no-op
meter for the ratio (hand-made spans record none); a line shows what SDK metrics add. Variants
run interleaved, timed in process CPU time (all threads, so the batch exporter counts), and the
best batch of each counts, so a busy machine skews less.

    python benchmarks/otel_overhead.py [--nodes 20] [--runs 50] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

from opentelemetry import context, metrics, trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from stroma import NodeHooks, StromaRunner
from stroma.testing import capture_events
from stroma_otel import attributes as a
from stroma_otel import otel_hooks
from stroma_otel._spans import SpanRecorder


class State(BaseModel):
    """The state passed along the chain."""

    n: int


def make_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """An SDK provider exporting in batches to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1_000_000))
    return provider, exporter


def build(nodes: int, hooks: NodeHooks | None) -> tuple[StromaRunner, list[Any]]:
    """A runner with a chain of ``nodes`` trivial nodes."""
    runner = StromaRunner.quick(pipeline_name="bench")
    if hooks is not None:
        runner = runner.with_hooks(hooks)
    chain = []
    for i in range(nodes):

        @runner.node(f"n{i}", input=State, output=State)
        async def step(state: State) -> dict[str, int]:
            return {"n": state.n + 1}

        chain.append(step)
    return runner, chain


async def time_runs(runner: StromaRunner, chain: list[Any], runs: int) -> float:
    """Seconds per run over one batch of ``runs``."""
    gc.collect()
    t0 = time.process_time()
    for _ in range(runs):
        await runner.run(chain, State(n=0))
    return (time.process_time() - t0) / runs


def hand_made(tracer: trace.Tracer, nodes: int) -> None:
    """The same tree the hooks emit, written by hand."""
    run = tracer.start_span(
        "invoke_workflow bench",
        attributes={
            a.GEN_AI_OPERATION_NAME: a.OPERATION_INVOKE_WORKFLOW,
            a.GEN_AI_WORKFLOW_NAME: "bench",
            a.RUN_ID: "run",
            a.SCHEMA_VERSION_KEY: a.SCHEMA_VERSION,
        },
    )
    run_ctx = trace.set_span_in_context(run)
    carrier: dict[str, str] = {}
    inject(carrier, context=run_ctx)
    for i in range(nodes):
        node_id = f"n{i}"
        node = tracer.start_span(f"node {node_id}", context=run_ctx, attributes={a.NODE_ID: node_id})
        attempt = tracer.start_span(
            f"attempt {node_id} #1",
            context=trace.set_span_in_context(node),
            attributes={a.ATTEMPT_NUMBER: 1, a.ATTEMPT_MAX: 4},
        )
        token = context.attach(trace.set_span_in_context(attempt))
        run.add_event(
            a.EVENT_CHECKPOINT_SAVED,
            {
                a.CHECKPOINT_NODE: node_id,
                a.CHECKPOINT_STORE: "memory",
                a.CHECKPOINT_SIZE_BYTES: 7,
                a.CHECKPOINT_DURATION_S: 0.0,
            },
        )
        context.detach(token)
        attempt.set_attributes(
            {a.GEN_AI_USAGE_INPUT_TOKENS: 0, a.GEN_AI_USAGE_OUTPUT_TOKENS: 0, a.COST_USD: 0.0}
        )
        attempt.end()
        node.set_attributes({a.NODE_ATTEMPTS: 1, a.NODE_OUTCOME: "succeeded"})
        node.end()
    run.set_attributes({a.RUN_STATUS: "COMPLETED", a.USAGE_TOKENS: 0, a.USAGE_COST_USD: 0.0})
    run.end()


def hand_hooks(tracer: trace.Tracer) -> NodeHooks:
    """The same spans written by hand as plain Stroma hooks (no error handling, no metrics)."""
    runs: dict[str, tuple[trace.Span, Any]] = {}
    nodes: dict[tuple[str, str], tuple[trace.Span, Any]] = {}
    attempts: dict[tuple[str, str], tuple[trace.Span, object]] = {}

    def run_start(e: Any) -> None:
        span = tracer.start_span(
            f"invoke_workflow {e.pipeline_name}",
            attributes={
                a.GEN_AI_OPERATION_NAME: a.OPERATION_INVOKE_WORKFLOW,
                a.GEN_AI_WORKFLOW_NAME: e.pipeline_name,
                a.RUN_ID: e.run_id,
                a.SCHEMA_VERSION_KEY: a.SCHEMA_VERSION,
            },
        )
        ctx = trace.set_span_in_context(span)
        inject(e.carrier, context=ctx)
        runs[e.run_id] = (span, ctx)

    def node_begin(e: Any) -> None:
        run_ctx = runs[e.run_id][1]
        span = tracer.start_span(f"node {e.node_id}", context=run_ctx, attributes={a.NODE_ID: e.node_id})
        nodes[e.run_id, e.node_id] = (span, trace.set_span_in_context(span))

    def attempt_start(run_id: str, node_id: str, input_state: dict[str, Any]) -> None:
        node_ctx = nodes[run_id, node_id][1]
        span = tracer.start_span(
            f"attempt {node_id}", context=node_ctx, attributes={a.ATTEMPT_NUMBER: 1, a.ATTEMPT_MAX: 4}
        )
        attempts[run_id, node_id] = (span, context.attach(trace.set_span_in_context(span)))

    def attempt_success(run_id: str, node_id: str, output: dict[str, Any], tokens: int) -> None:
        span, token = attempts.pop((run_id, node_id))
        context.detach(token)  # type: ignore[arg-type]
        span.set_attributes(
            {a.GEN_AI_USAGE_INPUT_TOKENS: 0, a.GEN_AI_USAGE_OUTPUT_TOKENS: 0, a.COST_USD: 0.0}
        )
        span.end()

    def checkpoint(e: Any) -> None:
        runs[e.run_id][0].add_event(
            a.EVENT_CHECKPOINT_SAVED,
            {
                a.CHECKPOINT_NODE: e.node_id,
                a.CHECKPOINT_STORE: e.store,
                a.CHECKPOINT_SIZE_BYTES: e.size_bytes,
                a.CHECKPOINT_DURATION_S: e.duration_ms / 1000.0,
            },
        )

    def node_end(e: Any) -> None:
        span = nodes.pop((e.run_id, e.node_id))[0]
        span.set_attributes({a.NODE_ATTEMPTS: e.attempts, a.NODE_OUTCOME: e.outcome})
        span.end()

    def run_end(e: Any) -> None:
        span = runs.pop(e.run_id)[0]
        span.set_attributes(
            {a.RUN_STATUS: e.status, a.USAGE_TOKENS: e.total_tokens, a.USAGE_COST_USD: e.total_cost_usd}
        )
        span.end()

    return NodeHooks(
        on_run_start=run_start,
        on_node_begin=node_begin,
        on_node_start=attempt_start,
        on_node_success=attempt_success,
        on_checkpoint_saved=checkpoint,
        on_node_end=node_end,
        on_run_end=run_end,
    )


def time_hand(tracer: trace.Tracer, nodes: int, runs: int) -> float:
    """Seconds per hand-made tree over one batch of ``runs``."""
    gc.collect()
    t0 = time.process_time()
    for _ in range(runs):
        hand_made(tracer, nodes)
    return (time.process_time() - t0) / runs


def time_replay(recorder: SpanRecorder, events: list[Any], runs: int) -> float:
    """Seconds per run of feeding one run's recorded events to the span recorder in a loop."""
    gc.collect()
    on_event = recorder.on_event
    t0 = time.process_time()
    for _ in range(runs):
        for event in events:
            on_event(event)
    return (time.process_time() - t0) / runs


async def main() -> None:
    """Measure (variants interleaved, best batch of each) and print."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--runs", type=int, default=50, help="runs per batch")
    parser.add_argument("--rounds", type=int, default=15, help="batches per variant")
    args = parser.parse_args()
    nodes, runs = args.nodes, args.runs

    provider, _ = make_provider()
    noop_meter = metrics.NoOpMeterProvider()
    sdk_meter = MeterProvider(metric_readers=[InMemoryMetricReader()])
    variants: dict[str, NodeHooks | None] = {
        "bare": None,
        "listener": NodeHooks(on_event=lambda event: None),
        "hooks": otel_hooks(provider, noop_meter),
        "hooks+metrics": otel_hooks(provider, sdk_meter),
    }
    tracer = provider.get_tracer("hand", schema_url=a.SCHEMA_URL)
    variants["hand hooks"] = hand_hooks(tracer)
    built = {name: build(nodes, hooks) for name, hooks in variants.items()}
    with capture_events() as events:
        await built["bare"][0].run(built["bare"][1], State(n=0))
    recorder = SpanRecorder(provider)
    best = dict.fromkeys([*variants, "hand", "replay"], float("inf"))
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for name, (runner, chain) in built.items():
            seconds = await time_runs(runner, chain, runs)
            if round_:
                best[name] = min(best[name], seconds)
        seconds = time_hand(tracer, nodes, runs)
        if round_:
            best["hand"] = min(best["hand"], seconds)
        seconds = time_replay(recorder, list(events), runs)
        if round_:
            best["replay"] = min(best["replay"], seconds)
    provider.shutdown()

    us = 1e6
    own = best["hooks"] - best["listener"]
    total = best["hooks"] - best["bare"]
    print(f"pipeline of {nodes} nodes; best of {args.rounds} interleaved batches of {runs} runs")
    for name in (*variants, "hand", "replay"):
        print(f"  {name:<14} {best[name] * us:9.1f} us per run")
    print(f"stroma_otel's own cost (hooks - listener): {own * us:.1f} us per run")
    print(f"cost seen by the run   (hooks - bare):     {total * us:.1f} us per run")
    print(f"metrics add (hooks+metrics - hooks):       {(best['hooks+metrics'] - best['hooks']) * us:.1f} us")
    print(f"ratio stroma_otel / hand-made spans: {own / best['hand']:.2f}  (target <= 1.30)")
    print(f"ratio incl. the engine's event dispatch: {total / best['hand']:.2f}")
    print(f"ratio span recorder alone, same loop as hand: {best['replay'] / best['hand']:.2f}")
    by_hand = best["hand hooks"] - best["listener"]
    print(f"ratio otel_hooks / the same spans as hand-written hooks in the run: {own / by_hand:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
