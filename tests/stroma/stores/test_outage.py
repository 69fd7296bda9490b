"""Store outage: a private redis-server is stopped mid-run (from inside a node) and restarted;
the run retries through it or ends PARTIAL and resumes, and nothing committed is lost."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from stroma import (
    CheckpointManager,
    ContractRegistry,
    NodeContract,
    RedisStore,
    RunConfig,
    StoreUnavailableError,
    StromaRunner,
    stroma_node,
)
from stroma.events import AttemptFailed
from stroma.failures import FailureClass, NodeContext, default_policy_map
from stroma.testing import FakeClock, capture_events, use_clock
from stroma.trace import RunStatus
from tests.conftest import PrivateRedis


class Num(BaseModel):
    """The state of the outage pipeline."""

    x: int


def pipeline(server: PrivateRedis, ran: list[str]) -> tuple[ContractRegistry, list[Any]]:
    """a: x+1, b: x*2 (stops the server on its very first attempt), c: x+10."""
    registry = ContractRegistry()
    outage = {"started": False}
    specs = {"a": lambda x: x + 1, "b": lambda x: x * 2, "c": lambda x: x + 10}

    def make(node_id: str, fn: Any) -> Any:
        contract = NodeContract(node_id=node_id, input_schema=Num, output_schema=Num)
        registry.register(contract)

        async def node(state: Num) -> dict[str, int]:
            ran.append(node_id)
            if node_id == "b" and not outage["started"]:
                outage["started"] = True
                server.stop()  # the outage starts while b is in flight: b's commit fails
            return {"x": fn(state.x)}

        return stroma_node(node_id, contract)(node)

    return registry, [make(node_id, fn) for node_id, fn in specs.items()]


EXPECTED = Num(x=(5 + 1) * 2 + 10)


class RestartingClock(FakeClock):
    """A fake clock that restarts the stopped server during the first backoff sleep."""

    def __init__(self, server: PrivateRedis) -> None:
        super().__init__()
        self.server = server

    async def sleep(self, seconds: float) -> None:
        """Record the delay; bring the server back if it is down."""
        await super().sleep(seconds)
        if not self.server.running:
            self.server.start()


async def stored(url: str, prefix: str, run_id: str, node_id: str) -> BaseModel | None:
    """What a fresh store (new connections) finds for a checkpoint."""
    store = RedisStore(url, key_prefix=prefix)
    try:
        return await store.load_typed(run_id, node_id, Num)
    finally:
        await store.aclose()


async def test_outage_during_commit_is_retried_and_the_run_completes(
    private_redis: PrivateRedis, unique: str
) -> None:
    """A commit that fails because Redis went down is RECOVERABLE: the node is retried after the
    server is back and the run completes with every checkpoint in the restarted server."""
    ran: list[str] = []
    registry, nodes = pipeline(private_redis, ran)
    store = RedisStore(private_redis.url, key_prefix=unique)
    config = RunConfig(run_id=f"{unique}-r", policy_map=default_policy_map())
    runner = StromaRunner(registry, CheckpointManager(store), config)
    with use_clock(RestartingClock(private_redis)) as clock, capture_events() as events:
        result = await runner.run(nodes, Num(x=5))
    await store.aclose()

    assert result.status is RunStatus.COMPLETED
    assert result.final_state == EXPECTED
    assert ran == ["a", "b", "b", "c"]  # only b (in flight during the outage) ran twice
    failed = [e for e in events if isinstance(e, AttemptFailed)]
    assert [(e.node_id, e.failure_class) for e in failed] == [("b", "RECOVERABLE")]
    assert "unavailable" in failed[0].message
    assert isinstance(clock, FakeClock)
    assert len(clock.slept) == 1
    for node_id, x in (("a", 6), ("b", 12), ("c", 22)):
        assert await stored(private_redis.url, unique, f"{unique}-r", node_id) == Num(x=x)


async def test_outage_past_retries_ends_partial_then_resume_completes(
    private_redis: PrivateRedis, unique: str
) -> None:
    """With Redis down for every retry the run ends PARTIAL; after the restart the last good
    checkpoint is intact and resume finishes the run without re-running committed nodes."""
    ran: list[str] = []
    registry, nodes = pipeline(private_redis, ran)
    store = RedisStore(private_redis.url, key_prefix=unique)
    run_id = f"{unique}-r"
    config = RunConfig(run_id=run_id, policy_map=default_policy_map())
    runner = StromaRunner(registry, CheckpointManager(store), config)
    with use_clock(FakeClock()) as clock:
        result = await runner.run(nodes, Num(x=5))
    assert result.status is RunStatus.PARTIAL
    assert ran == ["a", "b", "b", "b"]  # 3 calls (max_retries=3), every commit refused
    assert isinstance(clock, FakeClock)
    assert len(clock.slept) == 2
    failures = [e.failure for e in result.trace.events if e.failure is not None]
    assert failures == [FailureClass.RECOVERABLE] * 3

    private_redis.start()
    assert await stored(private_redis.url, unique, run_id, "a") == Num(x=6)  # intact
    assert await stored(private_redis.url, unique, run_id, "b") is None  # never committed

    ran.clear()
    with use_clock(FakeClock()):
        resumed = await runner.resume(nodes, Num(x=5))
    await store.aclose()
    assert resumed.status is RunStatus.RESUMED
    assert resumed.final_state == EXPECTED
    assert ran == ["b", "c"]  # a was committed before the outage: it never runs again


async def test_outage_ending_after_retries_exhausted_still_resumes(
    private_redis: PrivateRedis, unique: str
) -> None:
    """If Redis comes back just after the retries ran out, the PARTIAL run's recorded progress
    still points at the last committed node, so resume re-runs b instead of failing."""
    ran: list[str] = []
    registry, nodes = pipeline(private_redis, ran)
    store = RedisStore(private_redis.url, key_prefix=unique)
    run_id = f"{unique}-r"

    def back_on_last_attempt(exc: Exception, ctx: NodeContext) -> FailureClass | None:
        if isinstance(exc, StoreUnavailableError) and ctx.attempt == 3:
            private_redis.start()  # the outage ends between the last failure and finish_run
        return None

    config = RunConfig(
        run_id=run_id, classifiers=[back_on_last_attempt], policy_map=default_policy_map()
    )
    runner = StromaRunner(registry, CheckpointManager(store), config)
    with use_clock(FakeClock()):
        result = await runner.run(nodes, Num(x=5))
        assert result.status is RunStatus.PARTIAL
        progress = await runner.checkpoint_manager.load_progress(run_id)
        assert progress is not None
        assert progress.last_node == "a"
        ran.clear()
        resumed = await runner.resume(nodes, Num(x=5))
    await store.aclose()
    assert resumed.final_state == EXPECTED
    assert ran == ["b", "c"]
