"""Resuming: continue after the last committed node, never redo committed work, refuse mismatches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from stroma import (
    AsyncInMemoryStore,
    CheckpointDataError,
    CheckpointMissingError,
    InMemoryStore,
    ResumeMismatchError,
    RunConfig,
    RunLeasedError,
    RunStatus,
    SchemaResolutionError,
    StromaRunner,
    UnknownNodeError,
)
from stroma.checkpoint import _resolve_schema, _schema_ref
from stroma.testing import FakeClock

from .conftest import Count


class Pipeline:
    """Three counting nodes whose runs are counted; ``fail_at`` makes one fail terminally."""

    def __init__(self, runner: StromaRunner, names: tuple[str, ...] = ("a", "b", "c")) -> None:
        self.runs: dict[str, int] = dict.fromkeys(names, 0)
        self.fail_at: str | None = None
        self.nodes: list[Any] = []
        for name in names:
            self.nodes.append(self._node(runner, name))

    def _node(self, runner: StromaRunner, name: str) -> Any:
        @runner.node(name, input=Count, output=Count)
        async def node(state: Count) -> dict[str, int]:
            self.runs[name] += 1
            if self.fail_at == name:
                raise RuntimeError(f"{name} is down")
            return {"n": state.n * 2 + 1}

        return node


def runner_on(store: Any, run_id: str = "job-1", **kwargs: Any) -> StromaRunner:
    """A runner with an explicit run id on a shared store."""
    return StromaRunner.quick(store=store, run_id=run_id, **kwargs)


async def test_resume_continues_after_the_last_committed_node(clock: FakeClock) -> None:
    """A run that failed at 'c' resumes at 'c' without the caller naming it; a and b never rerun."""
    store = AsyncInMemoryStore()
    runner = runner_on(store)
    pipe = Pipeline(runner)
    pipe.fail_at = "c"
    failed = await runner.run(pipe.nodes, Count(n=0))
    assert failed.status is RunStatus.FAILED
    pipe.fail_at = None
    resumed = await runner_on(store).resume(pipe.nodes, Count(n=0))
    assert resumed.status is RunStatus.RESUMED
    assert resumed.final_state == Count(n=7)
    assert pipe.runs == {"a": 1, "b": 1, "c": 2}  # c: 1 call (ambiguous: max_retries=1) + the resume


async def test_resume_with_nothing_committed_runs_from_the_start(clock: FakeClock) -> None:
    """When no node was ever committed, resume() simply runs the pipeline."""
    store = AsyncInMemoryStore()
    pipe = Pipeline(runner_on(store))
    result = await runner_on(store, run_id="fresh").resume(pipe.nodes, Count(n=0))
    assert result.status is RunStatus.COMPLETED
    assert result.final_state == Count(n=7)
    assert pipe.runs == {"a": 1, "b": 1, "c": 1}


async def test_resume_of_a_completed_run_returns_the_stored_result(clock: FakeClock) -> None:
    """Resuming a finished run runs nothing and returns its final state and status."""
    store = AsyncInMemoryStore()
    runner = runner_on(store)
    pipe = Pipeline(runner)
    first = await runner.run(pipe.nodes, Count(n=0))
    again = await runner_on(store).resume(pipe.nodes, Count(n=0))
    assert again.status is RunStatus.COMPLETED
    assert again.final_state == first.final_state
    assert pipe.runs == {"a": 1, "b": 1, "c": 1}
    assert len(again.trace) == 0
    assert [e.kind for e in again.trace.log].count("NodeRestored") == 3


async def test_resume_works_with_a_sync_store(clock: FakeClock) -> None:
    """The sync InMemoryStore is adapted by the manager; resume finds its progress too."""
    store = InMemoryStore()
    runner = runner_on(store)
    pipe = Pipeline(runner)
    pipe.fail_at = "b"
    await runner.run(pipe.nodes, Count(n=0))
    pipe.fail_at = None
    result = await runner_on(store).resume(pipe.nodes, Count(n=0))
    assert result.final_state == Count(n=7)
    assert pipe.runs["a"] == 1


async def test_unknown_resume_from_lists_the_pipeline_nodes(clock: FakeClock) -> None:
    """resume_from naming no node is a KeyError-like error listing the nodes."""
    store = AsyncInMemoryStore()
    pipe = Pipeline(runner_on(store))
    runner = runner_on(store, resume_from="publish")
    with pytest.raises(UnknownNodeError) as info:
        await runner.run(pipe.nodes, Count(n=0))
    assert str(info.value) == "resume_from='publish' is not a node of this pipeline (nodes: a, b, c)"


async def test_resume_from_without_a_checkpoint_says_which_is_missing(clock: FakeClock) -> None:
    """Resuming at 'c' of a run that never committed 'b' names 'b' and what to do."""
    store = AsyncInMemoryStore()
    pipe = Pipeline(runner_on(store))
    with pytest.raises(CheckpointMissingError, match=r"no checkpoint for node 'b'.*resume from an earlier"):
        await runner_on(store, run_id="never-ran", resume_from="c").run(pipe.nodes, Count(n=0))


async def test_a_renamed_node_is_a_resume_mismatch(clock: FakeClock) -> None:
    """If the last committed node no longer exists, resume() says so instead of guessing."""
    store = AsyncInMemoryStore()
    runner = runner_on(store)
    pipe = Pipeline(runner)
    pipe.fail_at = "c"
    await runner.run(pipe.nodes, Count(n=0))
    renamed = Pipeline(runner_on(store), names=("a", "b2", "c"))
    with pytest.raises(ResumeMismatchError, match=r"last committed node 'b'.*renamed or removed"):
        await runner_on(store).resume(renamed.nodes, Count(n=0))


async def test_a_reordered_pipeline_is_a_resume_mismatch(clock: FakeClock) -> None:
    """Nodes before the last committed one changed order: resuming would skip work, so it refuses."""
    store = AsyncInMemoryStore()
    runner = runner_on(store)
    pipe = Pipeline(runner)
    pipe.fail_at = "c"
    await runner.run(pipe.nodes, Count(n=0))
    reordered = [pipe.nodes[1], pipe.nodes[0], pipe.nodes[2]]
    with pytest.raises(ResumeMismatchError, match=r"checkpointed with nodes \['a', 'b'\]"):
        await runner_on(store).resume(reordered, Count(n=0))


async def test_a_checkpoint_that_no_longer_validates_is_a_typed_error(clock: FakeClock) -> None:
    """A node whose output schema changed since the checkpoint cannot silently load it."""

    class Strict(BaseModel):
        """A new schema the old checkpoint does not fit."""

        n: int
        label: str

    store = AsyncInMemoryStore()
    runner = runner_on(store)
    pipe = Pipeline(runner)
    pipe.fail_at = "b"
    await runner.run(pipe.nodes, Count(n=0))
    changed = runner_on(store)

    @changed.node("a", input=Count, output=Strict)
    async def a(state: Count) -> dict[str, Any]:
        return {"n": 1, "label": "x"}

    with pytest.raises(CheckpointDataError, match="no longer validates against Strict"):
        await changed.resume([a, pipe.nodes[1], pipe.nodes[2]], Count(n=0))


async def test_budgets_hold_across_resumes(clock: FakeClock) -> None:
    """Spend recorded before a crash counts against the budget of the resumed run."""
    store = AsyncInMemoryStore()
    runner = runner_on(store, policy_map={}).with_budget(tokens=250)
    calls = {"b": 0}

    @runner.node("a", input=Count, output=Count)
    async def a(state: Count) -> Any:
        return {"n": 1}, 200

    @runner.node("b", input=Count, output=Count)
    async def b(state: Count) -> Any:
        calls["b"] += 1
        if calls["b"] == 1:
            raise RuntimeError("crash")
        return {"n": 2}, 100

    first = await runner.run([a, b], Count(n=0))
    assert first.status is RunStatus.FAILED
    resumed = await runner_on(store).with_budget(tokens=250).resume([a, b], Count(n=0))
    assert resumed.status is RunStatus.PARTIAL
    assert resumed.total_tokens == 300


async def test_two_workers_cannot_resume_the_same_run(clock: FakeClock) -> None:
    """While one resume holds the run's lease, a second gets RunLeasedError."""
    store = AsyncInMemoryStore()
    runner = runner_on(store)
    gate = asyncio.Event()
    inside = asyncio.Event()

    @runner.node("slow", input=Count, output=Count)
    async def slow(state: Count) -> dict[str, int]:
        inside.set()
        await gate.wait()
        return {"n": 1}

    first = asyncio.ensure_future(runner_on(store).resume([slow], Count(n=0)))
    await inside.wait()
    with pytest.raises(RunLeasedError, match="'job-1' is being resumed by another worker"):
        await runner_on(store).resume([slow], Count(n=0))
    gate.set()
    assert (await first).status is RunStatus.COMPLETED
    assert (await runner_on(store).resume([slow], Count(n=0))).status is RunStatus.COMPLETED


def test_stored_schema_names_are_never_imported() -> None:
    """_resolve_schema only knows registered schemas; 'os:system' is a TypeError, not an import."""

    class Registered(BaseModel):
        """A schema named in code."""

        x: int

    ref = _schema_ref(Registered)
    assert _resolve_schema(ref) is Registered
    for hostile in ("os:system", "builtins:eval", "builtins:dict", "subprocess:Popen", "nonsense"):
        with pytest.raises(SchemaResolutionError) as info:
            _resolve_schema(hostile)
        assert isinstance(info.value, TypeError)
        assert repr(hostile) in str(info.value)


async def test_manual_resume_from_still_works_with_run_config(clock: FakeClock) -> None:
    """The published resume_from path loads the checkpoint of the node before it."""
    store = AsyncInMemoryStore()
    pipe = Pipeline(runner_on(store))
    await runner_on(store).run(pipe.nodes, Count(n=0))
    manual = StromaRunner(
        runner_on(store).registry,
        runner_on(store).checkpoint_manager,
        RunConfig(run_id="job-1", resume_from="c"),
    )
    result = await manual.run(pipe.nodes, Count(n=0))
    assert result.status is RunStatus.RESUMED
    assert pipe.runs == {"a": 1, "b": 1, "c": 2}


async def test_a_held_lease_is_renewed_while_the_resume_runs() -> None:
    """The lease is short and renewed by its holder, so a long resume keeps it and a dead one frees it."""
    renewed = asyncio.Event()

    class CountingStore(AsyncInMemoryStore):
        """Sets ``renewed`` when the same owner takes the lease a second time."""

        leases_expire = True  # as a shared store's do: the manager renews them

        def __init__(self) -> None:
            super().__init__()
            self.owners: list[str] = []

        async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> bool:
            self.owners.append(owner)
            if self.owners.count(owner) > 1:
                renewed.set()
            return await super().acquire_lease(run_id, owner, ttl_s)

    store = CountingStore()
    manager = runner_on(store).checkpoint_manager
    async with manager.lease("long-run", ttl_s=0.03):
        await asyncio.wait_for(renewed.wait(), timeout=30)  # hang guard only
        assert store._leases["long-run"] == store.owners[0]
    assert "long-run" not in store._leases  # released on exit
