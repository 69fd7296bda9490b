"""Memory: bytes a run keeps per attempt, and peak memory of 1,000 concurrent runs.

    python benchmarks/memory.py            # N = 1,000 and 10,000; 1,000 concurrent 5-node runs
    python benchmarks/memory.py --quick    # N = 100, 1,000; 50 concurrent runs (smoke test)

Measured with tracemalloc (Python allocations), median of --repeats, floor and Stroma
interleaved in one process:
- kept bytes per attempt: allocations still alive after one run of N nodes, with the result kept
  alive (``gc.collect()`` first), divided by N. The floor is the hand-written loop that keeps
  every validated output model (the least a loop with a record of its run keeps). Stroma is
  measured twice: the ExecutionResult alone (its trace: attempts + event log), and the result plus
  the in-memory checkpoint store (``StromaRunner.quick()``'s default, which holds every
  node's JSON checkpoint until the process exits).
- peak: tracemalloc peak while 1,000 five-node runs are gathered, results kept.

Issue 6 sets no numeric memory target. Printed checks: kept bytes per attempt does not grow with
run length (N = 10,000 within 1.3x of N = 1,000; linear memory).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

TARGET_FLAT = 1.3
NODES = 5


async def kept(make: Callable[[], Awaitable[Any]]) -> tuple[int, int]:
    """(bytes still allocated after ``make()`` with its result alive, peak during it)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = await make()
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return current - base, peak - base


async def per_attempt(n: int, repeats: int) -> dict[str, float]:
    floor_steps = c.floor_pipeline(n)
    runner, nodes = c.stroma_pipeline(n)
    start = c.StateA(value=0)

    async def floor() -> Any:
        outputs: list[Any] = []
        await c.run_floor(floor_steps, start, keep=outputs)
        return outputs

    async def stroma_result() -> Any:
        c.fresh_store(runner)
        result = await runner.run(nodes, start)
        c.fresh_store(runner)  # drop the checkpoints: count what the result itself keeps
        return result

    async def stroma_with_store() -> Any:
        store_runner = c.fresh_store(runner)
        result = await runner.run(nodes, start)
        return result, store_runner.checkpoint_manager

    subjects = {"floor": floor, "stroma": stroma_result, "stroma+store": stroma_with_store}
    for make in subjects.values():  # warm-up: per-function caches are filled once per process
        await make()
    samples: dict[str, list[int]] = {k: [] for k in subjects}
    for r in range(repeats):
        names = list(subjects)
        for name in names[r % 3:] + names[: r % 3]:
            samples[name].append((await kept(subjects[name]))[0])
    c.fresh_store(runner)
    return {k: statistics.median(v) / n for k, v in samples.items()}


async def concurrent_peak(runs: int, repeats: int) -> dict[str, float]:
    floor_steps = c.floor_pipeline(NODES)
    runner, nodes = c.stroma_pipeline(NODES)
    starts = [c.StateA(value=i) for i in range(runs)]

    async def floor() -> Any:
        return await asyncio.gather(*(c.run_floor(floor_steps, s) for s in starts))

    async def stroma() -> Any:
        c.fresh_store(runner)
        return await asyncio.gather(*(runner.run(nodes, s) for s in starts))

    await floor()  # warm-up
    await stroma()
    samples: dict[str, list[int]] = {"floor": [], "stroma": []}
    for r in range(repeats):
        order = [("floor", floor), ("stroma", stroma)]
        if r % 2:
            order.reverse()
        for name, make in order:
            samples[name].append((await kept(make))[1])
    c.fresh_store(runner)
    return {k: float(statistics.median(v)) for k, v in samples.items()}


async def main_async(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    sizes = [100, 1_000] if args.quick else [1_000, 10_000]
    runs = 50 if args.quick else 1_000
    repeats = args.repeats or (1 if args.quick else 3)

    rows: list[list[Any]] = []
    by_n: dict[int, dict[str, float]] = {}
    for n in sizes:
        r = by_n[n] = await per_attempt(n, repeats)
        rows.append(
            [
                f"{n:,}",
                f"{r['floor']:.0f}",
                f"{r['stroma']:.0f}",
                f"{r['stroma'] / r['floor']:.2f}x",
                f"{r['stroma+store']:.0f}",
                f"{r['stroma+store'] / r['floor']:.2f}x",
            ]
        )
    print(f"memory: kept bytes per attempt (tracemalloc, result alive), median of {repeats}")
    print(
        c.table(
            [
                "N",
                "floor B/node",
                "stroma result B/attempt",
                "result/floor",
                "stroma result+store B/attempt",
                "(result+store)/floor",
            ],
            rows,
        )
    )
    small, big = sizes
    flat = by_n[big]["stroma"] / by_n[small]["stroma"]
    print(
        f"stroma kept bytes per attempt N={big:,} / N={small:,}: {flat:.2f}x "
        f"(target <= {TARGET_FLAT}x, linear memory): {c.verdict(flat <= TARGET_FLAT)}"
    )

    peak = await concurrent_peak(runs, repeats)
    ratio = peak["stroma"] / peak["floor"]
    print()
    print(f"memory: tracemalloc peak, {runs:,} concurrent {NODES}-node runs, results kept")
    print(
        c.table(
            ["runs x nodes", "floor peak KiB", "stroma peak KiB", "stroma/floor", "per run KiB"],
            [
                [
                    f"{runs:,} x {NODES}",
                    f"{peak['floor'] / 1024:.0f}",
                    f"{peak['stroma'] / 1024:.0f}",
                    f"{ratio:.2f}x",
                    f"{peak['stroma'] / runs / 1024:.1f}",
                ]
            ],
        )
    )
    print(c.machine())


if __name__ == "__main__":
    c.run(main_async)
