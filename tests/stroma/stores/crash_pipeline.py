"""The pipeline the kill -9 test runs (and SIGKILLs) in a subprocess.

Usage::

    python crash_pipeline.py --store sqlite|redis|postgres --target PATH_OR_URL --run-id ID
        --ledger FILE [--key-prefix P] [--table T] [--nodes N] [--cluster]

Prints ``ready`` once imported, then calls ``runner.resume(nodes, initial_state)`` (which runs
from the start when nothing is committed) and prints the result as one JSON line. Every node
appends ``<pid> <node_id> <attempt>`` to the ledger and fsyncs it *before* doing its work, so
the ledger survives the kill and shows every attempt that started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from pydantic import BaseModel

from stroma import (
    CheckpointManager,
    ContractRegistry,
    NodeContract,
    PostgresStore,
    RedisStore,
    RunConfig,
    SqliteStore,
    StromaRunner,
    stroma_node,
)


class Chain(BaseModel):
    """The state threaded through the nodes."""

    value: int
    path: list[str]


INITIAL = Chain(value=7, path=[])


def ledger_append(path: str, line: str) -> None:
    """Append one line to the ledger and fsync it, so a SIGKILL cannot lose it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def build_nodes(count: int, ledger: str, registry: ContractRegistry) -> list[Any]:
    """``count`` nodes n00, n01, ... that each log, work a few ms, and fold their id in."""
    nodes = []
    for index in range(count):
        node_id = f"n{index:02d}"
        contract = NodeContract(node_id=node_id, input_schema=Chain, output_schema=Chain)
        registry.register(contract)

        async def node(
            state: Chain, ctx: dict[str, Any], _id: str = node_id, _i: int = index
        ) -> dict[str, Any]:
            attempt = ctx["_stroma_attempt"]
            ledger_append(ledger, f"{os.getpid()} {_id} {attempt}\n")
            await asyncio.sleep(0.002 + 0.001 * (_i % 4))
            return {"value": (state.value * 31 + _i + 1) % 1_000_000_007, "path": [*state.path, _id]}

        nodes.append(stroma_node(node_id, contract)(node))
    return nodes


def make_store(args: argparse.Namespace) -> Any:
    """The store named on the command line."""
    if args.store == "sqlite":
        return SqliteStore(args.target)
    if args.store == "redis":
        return RedisStore(args.target, key_prefix=args.key_prefix, cluster=args.cluster)
    if args.store == "postgres":
        return PostgresStore(args.target, table=args.table)
    raise SystemExit(f"unknown store {args.store!r}")


async def main(args: argparse.Namespace) -> int:
    """Resume the run and print its result."""
    store = make_store(args)
    registry = ContractRegistry()
    nodes = build_nodes(args.nodes, args.ledger, registry)
    runner = StromaRunner(registry, CheckpointManager(store), RunConfig(run_id=args.run_id))
    print("ready", flush=True)
    result = await runner.resume(nodes, INITIAL)
    final = result.final_state.model_dump() if result.final_state is not None else None
    print(json.dumps({"status": result.status.value, "final": final}), flush=True)
    if hasattr(store, "aclose"):
        await store.aclose()
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True, choices=["sqlite", "redis", "postgres"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--key-prefix", default="stroma")
    parser.add_argument("--table", default="stroma_checkpoints")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--cluster", action="store_true", help="the Redis target is a cluster")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
