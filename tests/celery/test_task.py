"""stroma.celery in one process: Celery's eager mode runs each delivery of a message in place.

A second ``apply`` of the same message is what a redelivery is to the worker; the broker-backed
proof (three workers, one killed) is in test_workers.py.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from stroma import (
    ConfigurationError,
    ContractViolation,
    RunLeasedError,
    SqliteStore,
    StromaRunner,
    parallel,
)
from stroma.runfile import load_run

celery = pytest.importorskip("celery")

from stroma.celery import WORKER_SETTINGS, PipelineTask, stroma_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class Count(BaseModel):
    """The state every node reads and writes."""

    n: int


class Boom(Exception):
    """A node failure the default policy does not retry."""


class CountingStore(SqliteStore):
    """A SqliteStore that counts lease requests (one per delivery that reaches resume)."""

    lease_requests = 0

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> bool:
        """Count, then take the lease as SqliteStore does."""
        self.lease_requests += 1
        return await super().acquire_lease(run_id, owner, ttl_s)


def _app() -> Any:
    app = celery.Celery("stroma-tests", broker="memory://")
    app.conf.update(WORKER_SETTINGS, task_always_eager=True)
    return app


def _pipeline(tmp_path: Path, ledger: list[str], fail_once: set[str], **kwargs: Any) -> PipelineTask:
    runner = StromaRunner.quick(store=CountingStore(str(tmp_path / "runs.db"))).with_trace_dir(
        tmp_path / "runs"
    )

    def make(node_id: str) -> Any:
        @runner.node(node_id, input=Count, output=Count)
        async def step(state: Count) -> dict[str, int]:
            ledger.append(node_id)
            if node_id in fail_once:
                fail_once.discard(node_id)
                raise Boom(f"{node_id} failed")
            return {"n": state.n + 1}

        return step

    return stroma_task(
        _app(), runner, [make("one"), make("two"), make("three")], name="tests.count", **kwargs
    )


def test_redelivered_message_resumes_after_the_last_committed_node(tmp_path: Path) -> None:
    """A second delivery of a run's message runs only the nodes after its last commit."""
    ledger: list[str] = []
    pipeline = _pipeline(tmp_path, ledger, {"two"}, return_state=True)
    first = pipeline.start({"n": 0}, run_id="doc-1")
    assert first.result["status"] == "FAILED"
    again = pipeline.task.apply(("doc-1", {"n": 0}))
    assert again.result == {
        "run_id": "doc-1", "status": "RESUMED", "total_tokens": 0, "total_cost_usd": 0.0,
        "final_state": {"n": 3},
    }
    assert ledger == ["one", "two", "two", "three"]
    resumed = [load_run(p).header.resumed_from for p in sorted((tmp_path / "runs").iterdir())]
    assert sorted(resumed, key=str) == [None, "two"]  # the first delivery's run, then the resume


def test_finished_run_returns_its_stored_result_without_running(tmp_path: Path) -> None:
    """A delivery of a run that already completed runs no node and reports the stored status."""
    ledger: list[str] = []
    pipeline = _pipeline(tmp_path, ledger, set(), return_state=True)
    pipeline.start(Count(n=5), run_id="doc-2")
    again = pipeline.start(Count(n=100), run_id="doc-2")
    assert again.result["status"] == "COMPLETED"
    assert again.result["final_state"] == {"n": 8}
    assert ledger == ["one", "two", "three"]


def test_leased_run_is_retried_then_fails_with_run_leased_error(tmp_path: Path) -> None:
    """While another worker holds the run's lease the task retries, and runs no node."""
    ledger: list[str] = []
    pipeline = _pipeline(tmp_path, ledger, set(), retry_delay_s=0, max_retries=2)
    store = pipeline.runner.checkpoint_manager.store
    assert isinstance(store, CountingStore)
    assert asyncio.run(store.acquire_lease("doc-3", "another-worker", 60.0))
    result = pipeline.task.apply(("doc-3", {"n": 0}))
    assert result.state == "FAILURE"
    assert isinstance(result.result, RunLeasedError)
    assert store.lease_requests == 1 + 1 + 2  # ours above, the delivery, two retries
    assert ledger == []


def test_summary_leaves_the_state_out_unless_asked(tmp_path: Path) -> None:
    """By default the task's result (what a result backend stores) carries no state."""
    pipeline = _pipeline(tmp_path, [], set())
    assert pipeline.start({"n": 1}, run_id="doc-4").result == {
        "run_id": "doc-4", "status": "COMPLETED", "total_tokens": 0, "total_cost_usd": 0.0,
    }


def test_bad_initial_state_is_a_contract_violation_on_both_sides(tmp_path: Path) -> None:
    """An initial state that does not fit the first node is refused by start() and by the worker."""
    ledger: list[str] = []
    pipeline = _pipeline(tmp_path, ledger, set())
    with pytest.raises(ContractViolation, match=r"'one' \(input\): n: Input should be a valid integer"):
        pipeline.start({"n": "many"})
    on_worker = pipeline.task.apply(("doc-5", {"n": "many"}))
    assert isinstance(on_worker.result, ContractViolation)
    assert on_worker.result.field_paths == ("n",)
    assert ledger == []


def test_task_is_acked_late_json_and_requeued_on_a_lost_worker(tmp_path: Path) -> None:
    """The registered task carries the at-least-once options whatever the app's defaults."""
    task = _pipeline(tmp_path, [], set()).task
    assert (task.name, task.acks_late, task.reject_on_worker_lost, task.serializer) == (
        "tests.count", True, True, "json",
    )
    assert WORKER_SETTINGS["worker_prefetch_multiplier"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "needs name= as a non-empty string"),
        ({"retry_delay_s": -1}, "retry_delay_s=-1 must be a number of seconds >= 0"),
        ({"runner": "runner"}, "needs a StromaRunner, got str"),
        ({"nodes": []}, "needs at least one node"),
        ({"nodes": [print]}, "print has no contract"),
    ],
)
def test_bad_arguments_are_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    """Each bad argument of stroma_task raises ConfigurationError naming it."""
    runner = StromaRunner.quick()

    @runner.node("one", input=Count, output=Count)
    async def one(state: Count) -> dict[str, int]:
        return {"n": state.n}

    arguments: dict[str, Any] = {"runner": runner, "nodes": [one], "name": "tests.bad", **kwargs}
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        stroma_task(_app(), **arguments)


def test_bad_run_id_is_refused_by_start(tmp_path: Path) -> None:
    """start() checks the run id before anything is sent."""
    with pytest.raises(ConfigurationError, match="run_id"):
        _pipeline(tmp_path, [], set()).start({"n": 1}, run_id="")


def test_parallel_group_first_takes_its_first_childs_input(tmp_path: Path) -> None:
    """With a parallel group first, the initial state is checked against its first child's input."""
    runner = StromaRunner.quick(store=SqliteStore(str(tmp_path / "runs.db")))

    @runner.node("left", input=Count, output=Count)
    async def left(state: Count) -> dict[str, int]:
        return {"n": state.n + 1}

    @runner.node("right", input=Count, output=Count)
    async def right(state: Count) -> dict[str, int]:
        return {"n": state.n + 1}

    pipeline = stroma_task(_app(), runner, [parallel(left, right)], name="tests.group")
    assert (pipeline.first_node, pipeline.input_schema) == ("left", Count)
    assert pipeline.start({"n": 1}, run_id="doc-6").result["status"] == "COMPLETED"
