"""The worker and the recoverer the recover() test runs in subprocesses.

Usage::

    python recover_pipeline.py work|recover --store sqlite|redis|postgres --target PATH_OR_URL
        --prefix P --ledger FILE --charge-url URL [--runs N] [--key-prefix K] [--table T]

``pause`` runs one run (``P-0``) and waits inside ``b`` for a line on stdin (the test stops it
with SIGSTOP there). ``work`` starts N runs (ids ``P-0`` ...) concurrently; node ``b`` of every
run hangs, and once all N are inside ``b`` it prints ``ready`` (the test then SIGKILLs it). ``recover`` calls
``runner.recover(nodes)`` and prints the recovered run ids as one JSON line. Every node appends
``<pid> <run_id> <node> <attempt>`` to the ledger and fsyncs it before its work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.request
from typing import Any

from pydantic import BaseModel

from stroma import PostgresStore, RedisStore, SqliteStore, StromaRunner


class Job(BaseModel):
    """The state threaded through the nodes."""

    n: int
    path: list[str]


def build(args: argparse.Namespace) -> tuple[StromaRunner, list[Any], Any]:
    """The runner (pipeline "recoverable") and its three nodes a, b, c."""
    if args.store == "sqlite":
        store: Any = SqliteStore(args.target)
    elif args.store == "redis":
        store = RedisStore(args.target, key_prefix=args.key_prefix)
    else:
        store = PostgresStore(args.target, table=args.table)
    runner = StromaRunner.quick(store=store, pipeline_name="recoverable")
    inside_b: set[str] = set()
    all_inside = asyncio.Event()

    def log(ctx: dict[str, Any], node: str) -> None:
        run_id = str(ctx["_stroma_idempotency_key"]).rsplit(":", 1)[0]
        line = f"{os.getpid()} {run_id} {node} {ctx['_stroma_attempt']}\n"
        fd = os.open(args.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    @runner.node("a", input=Job, output=Job)
    async def a(state: Job, ctx: dict[str, Any]) -> dict[str, Any]:
        log(ctx, "a")
        return {"n": state.n, "path": [*state.path, "a"]}

    @runner.node("b", input=Job, output=Job)
    async def b(state: Job, ctx: dict[str, Any]) -> dict[str, Any]:
        log(ctx, "b")
        # "charge" a payment provider with the node's idempotency key (the same on every try)
        key = str(ctx["_stroma_idempotency_key"]).encode()
        charge = urllib.request.Request(args.charge_url, data=key, method="POST")
        await asyncio.to_thread(lambda: urllib.request.urlopen(charge, timeout=10).read())
        if args.mode == "work":
            inside_b.add(str(ctx["_stroma_idempotency_key"]))
            if len(inside_b) == args.runs:
                all_inside.set()
            await asyncio.Event().wait()  # hangs until the worker is killed
        if args.mode == "pause":  # the test SIGSTOPs us here, past our lease, then lets us go on
            print("in-b", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        return {"n": state.n * 2, "path": [*state.path, "b"]}

    @runner.node("c", input=Job, output=Job)
    async def c(state: Job, ctx: dict[str, Any]) -> dict[str, Any]:
        log(ctx, "c")
        return {"n": state.n + 1, "path": [*state.path, "c"]}

    runner.all_inside = all_inside  # type: ignore[attr-defined]
    return runner, [a, b, c], store


async def main(args: argparse.Namespace) -> int:
    """Work (and hang) or recover."""
    runner, nodes, store = build(args)
    if args.mode == "work":
        runs = [
            asyncio.ensure_future(
                StromaRunner(
                    runner.registry,
                    runner.checkpoint_manager,
                    runner.config.model_copy(update={"run_id": f"{args.prefix}-{i}"}),
                ).run(nodes, Job(n=i, path=[]))
            )
            for i in range(args.runs)
        ]
        await runner.all_inside.wait()  # type: ignore[attr-defined]
        print("ready", flush=True)
        await asyncio.gather(*runs)
        return 1  # never reached: b hangs until the kill
    if args.mode == "pause":
        one = StromaRunner(runner.registry, runner.checkpoint_manager, runner.config.model_copy(
            update={"run_id": f"{args.prefix}-0"}))
        result = await one.run(nodes, Job(n=0, path=[]))
        print(json.dumps({"status": result.status.value}), flush=True)
        return 0
    results = await runner.recover(nodes, concurrency=4)
    print(
        json.dumps(
            {r.run_id: [r.status.value, r.final_state.model_dump()] for r in results if r.final_state}
        ),
        flush=True,
    )
    if hasattr(store, "aclose"):
        await store.aclose()
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["work", "pause", "recover"])
    parser.add_argument("--store", required=True, choices=["sqlite", "redis", "postgres"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--charge-url", required=True, help="the loopback 'payment provider'")
    parser.add_argument("--key-prefix", default="stroma")
    parser.add_argument("--table", default="stroma_checkpoints")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
