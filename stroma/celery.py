"""Run a Stroma pipeline as a Celery task, at least once, resuming where a lost worker stopped.

Celery delivers the task message; Stroma's checkpoints make redelivery safe. The task calls
``StromaRunner.resume`` for the run id in the message: a new run starts from the first node, a
run a killed worker left behind continues after its last committed node, and a finished run
returns its stored result without running anything. ``resume`` holds the run's lease, so two
deliveries of one run never execute at once: the second gets ``RunLeasedError`` and the task
retries it later (``retry_delay_s``), when the first has finished or its lease has lapsed.

Usage::

    from celery import Celery
    from stroma import RedisStore, StromaRunner
    from stroma.celery import WORKER_SETTINGS, stroma_task

    app = Celery("tasks", broker="amqp://guest:guest@127.0.0.1:5672//")
    app.conf.update(WORKER_SETTINGS)
    runner = StromaRunner.quick(store=RedisStore("redis://127.0.0.1:6379/0"))
    # ... @runner.node(...) functions extract, summarize ...
    summarize_doc = stroma_task(app, runner, [extract, summarize], name="tasks.summarize_doc")

    summarize_doc.start(Document(text="..."), run_id="doc-42")   # from any process

Configuration: the task is registered with ``acks_late=True`` (the message is acknowledged
after the run, so a worker that dies mid-run leaves it to be redelivered),
``reject_on_worker_lost=True`` (a pool process killed mid-task requeues it) and the ``json``
serializer (the initial state travels as JSON and is validated against the first node's input
schema on the worker). :data:`WORKER_SETTINGS` adds the worker side: prefetch one message.

The store must be one every worker reaches (``RedisStore``, ``PostgresStore``; ``SqliteStore``
for workers on one machine). Tasks run on one event loop per worker process (or thread), kept
between tasks so the store's connection pool is reused; event-loop pools (gevent, eventlet) are
not supported. Celery itself is not imported here: install it with ``pip install
'stroma[celery]'``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from stroma._checked import check_id
from stroma._config import new_run_id
from stroma.checkpoint import LEASE_TTL_S
from stroma.contracts import ContractViolation
from stroma.errors import ConfigurationError, RunLeasedError, StoreUnavailableError
from stroma.runner import StromaRunner

__all__ = ["WORKER_SETTINGS", "PipelineTask", "stroma_task"]

NodeFunction = Callable[..., Awaitable[Any]]

WORKER_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}
"""Celery settings for at-least-once pipelines: ``app.conf.update(WORKER_SETTINGS)``.

A worker takes one message at a time (a killed worker strands one run, not four) and every task
is acknowledged only after it ran."""

_RETRIED = (RunLeasedError, StoreUnavailableError)  # both pass: the lease lapses, the store returns

_loops = threading.local()


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    # One event loop per worker process (or thread), kept across tasks: a store's async
    # connection pool belongs to the loop that opened it. A forked child makes its own.
    runner: asyncio.Runner | None = getattr(_loops, "runner", None)
    if runner is None or getattr(_loops, "pid", None) != os.getpid():
        runner = _loops.runner = asyncio.Runner()
        _loops.pid = os.getpid()
    return runner.run(coro)


def _first_input(runner: StromaRunner, nodes: Sequence[NodeFunction]) -> tuple[str, type[BaseModel]]:
    """The first node's id and input schema (a parallel group's: its first child's).

    The whole pipeline is checked as ``run`` checks it, so a bad node fails at registration."""
    steps = runner.check_pipeline(nodes)
    schema = runner.input_schema(steps)
    if schema is None:
        raise ConfigurationError("stroma_task() needs at least one node, got an empty pipeline")
    node_id, func, _ = steps[0]
    children = getattr(func, "_stroma_children", None)  # a parallel group: its first child's
    return (children[0]._stroma_node_id if children else node_id), schema


class PipelineTask:
    """A pipeline registered as a Celery task (made by :func:`stroma_task`).

    ``task`` is the Celery task itself; its message is ``(run_id, initial_state_as_json)``.
    """

    def __init__(
        self,
        runner: StromaRunner,
        nodes: Sequence[NodeFunction],
        *,
        retry_delay_s: float,
        return_state: bool,
    ) -> None:
        self.runner = runner
        self.nodes = tuple(nodes)
        self.retry_delay_s = retry_delay_s
        self.return_state = return_state
        self.first_node, self.input_schema = _first_input(runner, nodes)
        self.task: Any = None

    def __repr__(self) -> str:
        return f"PipelineTask({getattr(self.task, 'name', None)!r}, nodes={len(self.nodes)})"

    def state(self, data: Any) -> BaseModel:
        """``data`` validated as the first node's input; ContractViolation when it does not fit."""
        if isinstance(data, self.input_schema):
            return data
        raw = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        try:
            return self.input_schema.model_validate(raw)
        except ValidationError as exc:
            errors = [dict(e) for e in exc.errors(include_url=False, include_input=False)]
            raise ContractViolation(self.first_node, "input", raw, errors) from None

    def start(self, initial_state: Any, *, run_id: str | None = None, **options: Any) -> Any:
        """Send one run: its id (a fresh one unless given) is also the Celery task id.

        ``initial_state`` (a model or a dict) is checked here and sent as JSON; ``options`` go to
        ``apply_async`` (``queue=``, ``countdown=``...). Sending a run id again is safe: the
        run resumes, or returns its stored result. Returns Celery's ``AsyncResult``.
        """
        run_id = check_id("run_id", run_id) if run_id is not None else new_run_id()
        payload = self.state(initial_state).model_dump(mode="json")
        return self.task.apply_async((run_id, payload), task_id=run_id, **options)

    def execute(self, task: Any, run_id: str, initial_state: Any) -> dict[str, Any]:
        """The task body: resume ``run_id`` on this worker, or retry later if it is leased."""
        state = self.state(initial_state)
        base = self.runner
        config = base.config.model_copy(update={"run_id": check_id("run_id", run_id)})
        runner = StromaRunner(base.registry, base.checkpoint_manager, config)
        try:
            result = _run(runner.resume(self.nodes, state))
        except _RETRIED as exc:
            raise task.retry(exc=exc, countdown=self.retry_delay_s) from None
        summary: dict[str, Any] = {
            "run_id": result.run_id,
            "status": result.status.value,
            "total_tokens": result.total_tokens,
            "total_cost_usd": result.total_cost_usd,
        }
        if self.return_state:
            final = result.final_state
            summary["final_state"] = final.model_dump(mode="json") if final is not None else None
        return summary


def stroma_task(
    app: Any,
    runner: StromaRunner,
    nodes: Sequence[NodeFunction],
    *,
    name: str,
    retry_delay_s: float = LEASE_TTL_S / 3,
    max_retries: int | None = 100,
    return_state: bool = False,
    **options: Any,
) -> PipelineTask:
    """Register ``nodes`` as the Celery task ``name`` of ``app`` (a name every worker and
    sender shares, e.g. ``"tasks.summarize_doc"``), run at least once.

    Each delivery resumes the run named in its message (see the module docs), with ``runner``'s
    store, policies, budget, hooks and trace dir. A delivery that finds the run leased by another
    worker, or the store unreachable, is retried after ``retry_delay_s`` seconds, at most
    ``max_retries`` times. The task returns ``{"run_id", "status", "total_tokens",
    "total_cost_usd"}`` (plus ``"final_state"`` with ``return_state=True``: it then goes to the
    result backend); the final state is always in the store. ``options`` go to ``app.task``.
    """
    if not isinstance(runner, StromaRunner):
        raise ConfigurationError(
            f"stroma_task() needs a StromaRunner, got {type(runner).__name__}; e.g. "
            "StromaRunner.quick(store=RedisStore(url))"
        )
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"stroma_task() needs name= as a non-empty string, got {name!r}; every worker and "
            "sender finds the task by it, e.g. name='tasks.summarize_doc'"
        )
    if isinstance(retry_delay_s, bool) or not isinstance(retry_delay_s, int | float) or not (
        retry_delay_s >= 0
    ):
        raise ConfigurationError(
            f"retry_delay_s={retry_delay_s!r} must be a number of seconds >= 0; the default is "
            f"{LEASE_TTL_S / 3:g} (a third of a lease)"
        )
    pipeline = PipelineTask(runner, nodes, retry_delay_s=retry_delay_s, return_state=return_state)

    def run_pipeline(task: Any, run_id: str, initial_state: Any) -> dict[str, Any]:
        return pipeline.execute(task, run_id, initial_state)

    run_pipeline.__doc__ = f"Resume the Stroma run named by run_id ({len(pipeline.nodes)} nodes)."
    settings: dict[str, Any] = {
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "serializer": "json",
        "max_retries": max_retries,
        **options,
        "name": name,
    }
    pipeline.task = app.task(**settings)(run_pipeline)
    return pipeline
