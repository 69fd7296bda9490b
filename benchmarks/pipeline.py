"""Per-node cost of a linear pipeline of N trivial nodes: floor vs Stroma vs LangGraph.

    python benchmarks/pipeline.py            # N = 10, 100, 1,000, 10,000
    python benchmarks/pipeline.py --quick    # N = 10, 100, few repeats (smoke test)

Subjects, interleaved in one process (median of --repeats rounds):
- floor: N sequential ``await node(state)`` with pydantic validation of input and output;
- stroma: ``StromaRunner.quick()`` (contracts, in-memory checkpoint per node, trace, events);
- watched: the same with one synchronous ``on_event`` hook (every event built and dispatched live);
- events: building, and nothing else, the five lifecycle events of each node of such a run (the
  functions a watched run uses), a lower bound of what watching adds to a quiet run;
- langgraph / langgraph+ckpt: a StateGraph chain of the same N nodes, without and with
  ``InMemorySaver``.

Targets: stroma <= 2.5x floor at N = 1,000; stroma per-node cost at N = 10,000 within 1.3x of
N = 100; watched <= 2x stroma.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from stroma import NodeHooks
from stroma.trace import StateDecoder, attempt_closed, attempt_opened

TARGET_VS_FLOOR = 2.5
TARGET_FLAT = 1.3
TARGET_WATCHED = 2.0  # a run with one synchronous on_event hook, against a quiet run


async def measure(
    n: int, repeats: int, use_langgraph: bool, gc_freeze: bool, per_sample: int = 2_000
) -> dict[str, float]:
    """Median seconds per node of every subject at pipeline length ``n``."""
    inner = max(1, per_sample // n)  # runs per sample, so short pipelines still time > 1 ms
    floor_steps = c.floor_pipeline(n)
    runner, nodes = c.stroma_pipeline(n)
    start_a = c.StateA(value=0)

    async def floor() -> None:
        for _ in range(inner):
            await c.run_floor(floor_steps, start_a)

    async def stroma() -> None:
        for _ in range(inner):
            result = await runner.run(nodes, start_a)
            assert result.status.value == "COMPLETED", result.status

    watched_runner, watched_nodes = c.stroma_pipeline(n)
    seen = [0]

    def on_event(event: Any) -> None:  # the cheapest real listener: one sync hook, every event
        seen[0] += 1

    watched_runner.with_hooks(NodeHooks(on_event=on_event))

    async def watched() -> None:
        for _ in range(inner):
            result = await watched_runner.run(watched_nodes, start_a)
            assert result.status.value == "COMPLETED", result.status

    records = c.attempt_records(n)

    async def events() -> None:
        for _ in range(inner):
            decode = StateDecoder()  # one per run, as a watched run has: one decode per state
            for rec in records:
                attempt_opened(rec, decode)
                attempt_closed(rec, decode)

    subjects: dict[str, Any] = {"floor": floor, "stroma": stroma, "watched": watched, "events": events}
    if use_langgraph:
        plain = c.langgraph_pipeline(n, checkpointer=False)
        saved = c.langgraph_pipeline(n, checkpointer=True)

        async def langgraph() -> None:
            for _ in range(inner):
                await c.run_langgraph(plain, n)

        async def langgraph_ckpt() -> None:
            for _ in range(inner):
                await c.run_langgraph(saved, n)

        subjects["langgraph"] = langgraph
        subjects["langgraph+ckpt"] = langgraph_ckpt

    def setup(name: str) -> None:
        if name in ("stroma", "watched"):  # an empty store per sample: repeats don't accumulate
            c.fresh_store(runner if name == "stroma" else watched_runner)

    if gc_freeze:  # the pipeline definitions are long-lived: keep them out of full collections
        gc.collect()
        gc.freeze()
    try:
        medians = await c.interleaved(subjects, repeats, setup=setup)
    finally:
        if gc_freeze:
            gc.unfreeze()
    return {name: seconds / (inner * n) for name, seconds in medians.items()}


async def main_async(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="N = 10, 100 and 3 repeats")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-langgraph", action="store_true")
    parser.add_argument(
        "--langgraph-max",
        type=int,
        default=1_000,
        help="largest N run through LangGraph (default 1,000: its checkpointed chain copies "
        "per-node channel versions every step, so N = 10,000 takes minutes)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after building the pipelines (what a long-lived service does)",
    )
    c.add_clock_option(parser)
    args = parser.parse_args(argv)
    clock = c.use_clock(args.clock)
    sizes = args.sizes or ([10, 100] if args.quick else [10, 100, 1_000, 10_000])
    repeats = args.repeats or (3 if args.quick else 7)
    use_lg = not args.no_langgraph and c.langgraph_available()

    per_node: dict[int, dict[str, float]] = {}
    for n in sizes:
        per_node[n] = await measure(
            n, repeats, use_lg and n <= args.langgraph_max, args.gc_freeze,
            per_sample=200 if args.quick else 2_000,
        )
        print(f"  measured N={n:,}", file=sys.stderr, flush=True)

    headers = [
        "N",
        "floor µs/node",
        "stroma µs/node",
        "stroma/floor",
        "watched µs/node",
        "watched/stroma",
        "events/stroma",
    ]
    if use_lg:
        headers += ["langgraph µs/node", "lg+ckpt µs/node", "stroma/lg", "stroma/lg+ckpt"]
    headers.append("target")
    rows = []
    for n in sizes:
        r = per_node[n]
        ratio = r["stroma"] / r["floor"]
        watched_ratio = r["watched"] / r["stroma"]
        row: list[Any] = [
            f"{n:,}",
            c.us(r["floor"]),
            c.us(r["stroma"]),
            f"{ratio:.2f}x",
            c.us(r["watched"]),
            f"{watched_ratio:.2f}x",
            f"{r['events'] / r['stroma']:.2f}x",
        ]
        if use_lg and "langgraph" not in r:
            row += ["-", "-", "-", "-"]
        elif use_lg:
            row += [
                c.us(r["langgraph"]),
                c.us(r["langgraph+ckpt"]),
                f"{r['stroma'] / r['langgraph']:.2f}x",
                f"{r['stroma'] / r['langgraph+ckpt']:.2f}x",
            ]
        row.append(
            f"<= {TARGET_VS_FLOOR}x: {c.verdict(ratio <= TARGET_VS_FLOOR)}; watched <= "
            f"{TARGET_WATCHED}x: {c.verdict(watched_ratio <= TARGET_WATCHED)}"
            if n == 1_000
            else ""
        )
        rows.append(row)
    freeze = ", gc.freeze() after setup" if args.gc_freeze else ""
    print(
        f"pipeline: per-node cost ({clock} time), median of {repeats} interleaved repeats{freeze}"
    )
    print(c.table(headers, rows))
    if 100 in per_node and 10_000 in per_node:
        flat = per_node[10_000]["stroma"] / per_node[100]["stroma"]
        print(
            f"stroma per-node N=10,000 / N=100: {flat:.2f}x "
            f"(target <= {TARGET_FLAT}x): {c.verdict(flat <= TARGET_FLAT)}"
        )
    print(c.machine())
    return 0


def main() -> None:
    c.run(lambda: _exit_with(main_async()))


async def _exit_with(coro: Any) -> None:
    code = await coro
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
