"""Per-node cost of many concurrent short runs: 1,000 five-node runs under asyncio.gather.

    python benchmarks/concurrency.py            # 1,000 runs x 5 nodes
    python benchmarks/concurrency.py --quick    # 50 runs x 5 nodes, few repeats (smoke test)

Subjects, interleaved in one process (median of --repeats rounds):
- floor: the same 1,000 hand-written loops (validate in, await node, validate out), gathered;
- stroma: one ``StromaRunner.quick()``; ``asyncio.gather`` of 1,000 ``runner.run(...)``, each a
  fresh run (own run_id, checkpoints, trace).

Target (issue 6): stroma <= 3x the floor per node.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

TARGET = 3.0
NODES = 5


async def measure(runs: int, repeats: int) -> dict[str, float]:
    """Median seconds per node executed, per subject."""
    floor_steps = c.floor_pipeline(NODES)
    runner, nodes = c.stroma_pipeline(NODES)
    starts = [c.StateA(value=i) for i in range(runs)]

    async def floor() -> None:
        await asyncio.gather(*(c.run_floor(floor_steps, s) for s in starts))

    async def stroma() -> None:
        results = await asyncio.gather(*(runner.run(nodes, s) for s in starts))
        assert all(r.status.value == "COMPLETED" for r in results)

    def setup(name: str) -> None:
        if name == "stroma":
            c.fresh_store(runner)

    medians = await c.interleaved({"floor": floor, "stroma": stroma}, repeats, setup=setup)
    return {name: seconds / (runs * NODES) for name, seconds in medians.items()}


async def main_async(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="50 runs and 3 repeats")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    c.add_clock_option(parser)
    args = parser.parse_args(argv)
    clock = c.use_clock(args.clock)
    runs = args.runs or (50 if args.quick else 1_000)
    repeats = args.repeats or (3 if args.quick else 9)

    r = await measure(runs, repeats)
    ratio = r["stroma"] / r["floor"]
    rows: list[list[Any]] = [
        [
            f"{runs:,} x {NODES}",
            c.us(r["floor"]),
            c.us(r["stroma"]),
            f"{ratio:.2f}x",
            f"<= {TARGET}x: {c.verdict(ratio <= TARGET)}",
        ]
    ]
    print(
        f"concurrency: asyncio.gather of concurrent runs ({clock} time), "
        f"median of {repeats} repeats"
    )
    print(
        c.table(["runs x nodes", "floor µs/node", "stroma µs/node", "stroma/floor", "target"], rows)
    )
    print(c.machine())


if __name__ == "__main__":
    c.run(main_async)
