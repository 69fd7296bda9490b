"""The Celery app the worker subprocesses of test_workers.py load (``celery -A ...``).

A 5-node pipeline on a shared RedisStore. Every node appends ``run node token pid`` to an
fsynced ledger before it returns, and adds its token to the state, so the test can tell which
execution of a node was the one committed. The worker started with ``STROMA_TEST_HANG_AT=k``
stops inside node ``n3`` of the k-th run it reaches there (after writing the run id to
``STROMA_TEST_HUNG``), and stays there until the test kills it.

Settings come from the environment the test sets: ``STROMA_TEST_BROKER``, ``STROMA_TEST_QUEUE``,
``STROMA_TEST_REDIS``, ``STROMA_TEST_PREFIX``, ``STROMA_TEST_TRACE_DIR``, ``STROMA_TEST_LEDGER``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from celery import Celery
from pydantic import BaseModel

from stroma import RedisStore, StromaRunner
from stroma.celery import WORKER_SETTINGS, stroma_task
from tests.stroma.stores.crash_pipeline import ledger_append

NODES = ("n1", "n2", "n3", "n4", "n5")
HANG_NODE = "n3"
HANG_LIMIT_S = 120.0  # the test kills the hung worker long before; a bound, not a timing


class Trail(BaseModel):
    """A run's id and the token of each node execution that got committed, in order."""

    run: str
    tokens: list[str] = []


def _env(name: str) -> str:
    return os.environ.get(name, "")


app = Celery("stroma-celery-test", broker=_env("STROMA_TEST_BROKER") or "memory://")
app.conf.update(
    WORKER_SETTINGS,
    task_default_queue=_env("STROMA_TEST_QUEUE") or "stroma-test",
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)

runner = StromaRunner.quick(
    store=RedisStore(_env("STROMA_TEST_REDIS") or "redis://127.0.0.1:6379/0",
                     key_prefix=_env("STROMA_TEST_PREFIX") or "stroma-test"),
)
if _env("STROMA_TEST_TRACE_DIR"):
    runner.with_trace_dir(_env("STROMA_TEST_TRACE_DIR"))

_reached_hang_node = 0


def _node(node_id: str) -> Any:
    @runner.node(node_id, input=Trail, output=Trail)
    async def step(state: Trail) -> dict[str, Any]:
        global _reached_hang_node  # noqa: PLW0603 - per-process count of runs reaching n3
        token = uuid.uuid4().hex
        await asyncio.to_thread(
            ledger_append, _env("STROMA_TEST_LEDGER"), f"{state.run} {node_id} {token} {os.getpid()}\n"
        )
        if node_id == HANG_NODE and _env("STROMA_TEST_HANG_AT"):
            _reached_hang_node += 1
            if _reached_hang_node == int(_env("STROMA_TEST_HANG_AT")):
                await asyncio.to_thread(ledger_append, _env("STROMA_TEST_HUNG"), state.run)
                await asyncio.wait_for(asyncio.Event().wait(), HANG_LIMIT_S)
        return {"run": state.run, "tokens": [*state.tokens, token]}

    return step


pipeline = stroma_task(
    app,
    runner,
    [_node(node_id) for node_id in NODES],
    name="tests.celery.five_nodes",
    retry_delay_s=float(_env("STROMA_TEST_RETRY_S") or 1.0),
)
