"""The checkpoint-store conformance suite (public through :mod:`stroma.testing`).

Every store Stroma ships passes it; run it on your own store to know it keeps the same promises:
round-trips of every pydantic field type, missing → None, run isolation, latest write wins,
delete removes exactly one run (whatever characters its id holds), commit writes a checkpoint and
the run's progress together, the TTL is applied where the store has one, concurrent saves never
corrupt, leases are exclusive, a stale fencing token is refused, secrets round-trip, runs are
listed, and hostile payloads are refused with typed errors.

Works with sync and async stores. Each check uses fresh random run ids, so a shared store (or a
shared server) is fine. From pytest::

    import pytest
    from stroma.testing import CONFORMANCE_CHECKS, check_store, run_conformance_check

    async def test_my_store_conforms():
        await check_store(MyStore())                 # every check, fails on the first problem

    @pytest.mark.parametrize("check", sorted(CONFORMANCE_CHECKS))
    async def test_my_store(check):
        await run_conformance_check(check, MyStore())   # one test per check

``write_raw(run_id, node_id, payload, ref)`` (sync or async) writes a payload (``str`` or
``bytes``) and a schema reference straight into the store's storage, bypassing the store, for the
hostile-payload check; without it, the store's own ``save_raw`` is used when it has one (raise
``NotImplementedError`` from it for ``bytes`` if the storage cannot hold bytes). ``ttl_of(run_id)``
returns the seconds left before a run's checkpoints expire (default: the store's
``ttl_remaining``), used when the store has a ``ttl_seconds``.
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, SecretStr

from stroma._schemas import schema_ref
from stroma.errors import CheckpointDataError, LeaseLostError, SchemaResolutionError

__all__ = [
    "CONFORMANCE_CHECKS",
    "ConformanceError",
    "ConformanceState",
    "ConformanceTarget",
    "check_store",
    "run_conformance_check",
]


class ConformanceError(AssertionError):
    """A store broke one of the checkpoint-store promises; the message says which and how."""


RawWriter = Callable[[str, str, "str | bytes", str], Any]
TtlProbe = Callable[[str], Any]


@dataclass
class ConformanceTarget:
    """The store under test and the optional helpers some checks use."""

    store: Any
    write_raw: RawWriter | None = None
    ttl_of: TtlProbe | None = None


StoreCheck = Callable[[ConformanceTarget], Awaitable[None]]


# -- models covering the pydantic field types -----------------------------------------------


class ConformanceColor(StrEnum):
    """An enum field."""

    RED = "red"
    GREEN = "grün"


class ConformanceInner(BaseModel):
    """A nested model."""

    name: str
    tags: list[str] = []
    at: datetime | None = None


class ConformanceState(BaseModel):
    """A model with one field of every common pydantic type (bytes travel as base64)."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    text: str
    number: int
    big: int
    ratio: float
    flag: bool
    nothing: None = None
    amount: Decimal
    blob: bytes
    when: datetime
    when_utc: datetime
    day: date
    clock: time
    span: timedelta
    ident: UUID
    color: ConformanceColor
    mode: Literal["fast", "slow"]
    inner: ConformanceInner
    inners: list[ConformanceInner]
    by_name: dict[str, ConformanceInner]
    matrix: list[list[float]]
    pair: tuple[int, str]
    members: frozenset[int]
    maybe: int | None
    either: int | str
    nested_opt: ConformanceInner | None
    address: IPv4Address
    mapping: dict[str, list[int | None]]


class ConformanceSmall(BaseModel):
    """A small model for bulk checks."""

    run: str
    node: str
    seq: int


schema_ref(ConformanceState)
schema_ref(ConformanceSmall)
schema_ref(ConformanceInner)

# run ids that a careless key scheme would confuse with each other or with a glob pattern
TRICKY_RUN_IDS = (
    "run",
    "run*",
    "run?",
    "run[ab]",
    "run:node",
    "run:",
    "{run}",
    "run\\*",
    "run%",
    "run_",
    "run ",
    "rün-ünïcødé-🌍",
    "r",
    "run/../x",
    "run'; DROP TABLE x; --",
)


def sample_state(seed: int = 1) -> ConformanceState:
    """A ConformanceState with awkward values in every field."""
    ist = timezone(timedelta(hours=5, minutes=30))
    return ConformanceState(
        text=f"héllo wörld — 你好 🌍 \u2028 'q' \"dq\" \\ \x00 tab\t #{seed}",
        number=-(2**31) + seed,
        big=2**70 + seed,
        ratio=0.1 + seed,
        flag=bool(seed % 2),
        amount=Decimal("12345678901234567890.123456789") + seed,
        blob=bytes(range(256)) + seed.to_bytes(2, "big"),
        when=datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=ist),
        when_utc=datetime(1999, 12, 31, 12, 0, seed % 60, tzinfo=UTC),
        day=date(2000, 1, 1),
        clock=time(13, 37, 0, 123),
        span=timedelta(days=3, seconds=7, microseconds=11),
        ident=UUID(int=seed),
        color=ConformanceColor.GREEN,
        mode="slow",
        inner=ConformanceInner(name="ïnner", tags=["a", "b"], at=datetime(2020, 1, 1, tzinfo=UTC)),
        inners=[ConformanceInner(name=str(i)) for i in range(3)],
        by_name={"ключ": ConformanceInner(name="v"), "": ConformanceInner(name="empty key")},
        matrix=[[1.5, -2.25], [], [1e300]],
        pair=(seed, "two"),
        members=frozenset({3, 1, 2}),
        maybe=None,
        either="str-branch",
        nested_opt=None,
        address=IPv4Address("10.0.0.1"),
        mapping={"x": [1, None, 3], "y": []},
    )


# -- helpers -------------------------------------------------------------------------------


async def _call(func: Callable[..., Any], *args: Any) -> Any:
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _fail(check: str, store: Any, message: str) -> ConformanceError:
    return ConformanceError(f"[{check}] {type(store).__name__}: {message}")


def _run_id(tag: str) -> str:
    return f"conformance-{tag}-{uuid.uuid4().hex[:10]}"


def _manager(store: Any) -> Any:
    from stroma.checkpoint import CheckpointManager  # noqa: PLC0415 - import cycle

    return CheckpointManager(store)


async def _load(store: Any, run_id: str, node_id: str) -> Any:
    return await _call(store.load, run_id, node_id)


# -- the checks ----------------------------------------------------------------------------


async def check_roundtrip_field_types(target: ConformanceTarget) -> None:
    """Every field type survives save → load unchanged, through the store and the manager."""
    store, name = target.store, "roundtrip_field_types"
    run_id = _run_id("roundtrip")
    original = sample_state(7)
    await _call(store.save, run_id, "node", original)
    loaded = await _load(store, run_id, "node")
    if not isinstance(loaded, ConformanceState):
        raise _fail(name, store, f"load() returned {type(loaded).__name__}, not ConformanceState")
    if loaded != original:
        diff = [f for f in type(original).model_fields if getattr(loaded, f) != getattr(original, f)]
        raise _fail(name, store, f"fields changed in the round trip: {diff}")
    if loaded.when.utcoffset() != original.when.utcoffset():
        raise _fail(name, store, "an aware datetime lost its UTC offset")
    if loaded.amount.as_tuple() != original.amount.as_tuple():
        raise _fail(name, store, "a Decimal lost precision")
    if hasattr(store, "load_typed"):
        typed = await _call(store.load_typed, run_id, "node", ConformanceState)
        if typed != original:
            raise _fail(name, store, "load_typed() did not return the saved state")
    manager = _manager(store)
    await manager.checkpoint(run_id, "via-manager", original)
    resumed = await manager.resume(run_id, "via-manager", ConformanceState)
    if resumed != original:
        raise _fail(name, store, "CheckpointManager.checkpoint → resume changed the state")
    untyped = await manager.resume(run_id, "via-manager")
    if untyped != original:
        raise _fail(name, store, "CheckpointManager.resume without a schema changed the state")
    await _call(store.delete, run_id)


async def check_missing_is_none(target: ConformanceTarget) -> None:
    """Loading a checkpoint that was never saved returns None (unknown run or unknown node)."""
    store, name = target.store, "missing_is_none"
    run_id = _run_id("missing")
    if await _load(store, run_id, "node") is not None:
        raise _fail(name, store, "load() of an unknown run did not return None")
    await _call(store.save, run_id, "present", ConformanceSmall(run=run_id, node="present", seq=1))
    if await _load(store, run_id, "absent") is not None:
        raise _fail(name, store, "load() of an unknown node in a known run did not return None")
    if hasattr(store, "load_typed") and (
        await _call(store.load_typed, run_id, "absent", ConformanceSmall) is not None
    ):
        raise _fail(name, store, "load_typed() of an unknown node did not return None")
    if await _manager(store).resume(run_id, "absent", ConformanceSmall) is not None:
        raise _fail(name, store, "CheckpointManager.resume of an unknown node did not return None")
    await _call(store.delete, run_id)
    await _call(store.delete, run_id)  # deleting an absent run is a no-op, not an error


async def check_run_isolation(target: ConformanceTarget) -> None:
    """Two runs with the same node ids never see each other's checkpoints."""
    store, name = target.store, "run_isolation"
    runs = [_run_id("iso-a"), _run_id("iso-b")]
    nodes = ["n1", "p:n1", "n1:r", "ñ-🌍", "__stroma_progress__x"]
    for run in runs:
        for seq, node in enumerate(nodes):
            await _call(store.save, run, node, ConformanceSmall(run=run, node=node, seq=seq))
    for run in runs:
        for seq, node in enumerate(nodes):
            got = await _load(store, run, node)
            if got != ConformanceSmall(run=run, node=node, seq=seq):
                raise _fail(name, store, f"run {run!r} node {node!r} loaded {got!r}")
    for run in runs:
        await _call(store.delete, run)


async def check_latest_write_wins(target: ConformanceTarget) -> None:
    """Saving a node twice keeps the second state."""
    store, name = target.store, "latest_write_wins"
    run_id = _run_id("overwrite")
    for seq in range(3):
        await _call(store.save, run_id, "node", ConformanceSmall(run=run_id, node="node", seq=seq))
    got = await _load(store, run_id, "node")
    if got != ConformanceSmall(run=run_id, node="node", seq=2):
        raise _fail(name, store, f"after three saves load() returned {got!r}, not the last one")
    await _call(store.delete, run_id)


async def check_delete_removes_exactly_one_run(target: ConformanceTarget) -> None:
    """delete(run_id) removes that run's checkpoints and nothing else, whatever the id holds."""
    store, name = target.store, "delete_removes_exactly_one_run"
    tag = uuid.uuid4().hex[:8]
    runs = [f"{tag}-{suffix}" for suffix in TRICKY_RUN_IDS] + [tag]
    for run in runs:
        for node in ("a", "b"):
            await _call(store.save, run, node, ConformanceSmall(run=run, node=node, seq=1))
    alive = list(runs)
    for victim in runs:
        await _call(store.delete, victim)
        alive.remove(victim)
        for node in ("a", "b"):
            if await _load(store, victim, node) is not None:
                raise _fail(name, store, f"delete({victim!r}) left node {node!r} behind")
        for run in alive:
            got = await _load(store, run, "a")
            if got != ConformanceSmall(run=run, node="a", seq=1):
                raise _fail(name, store, f"delete({victim!r}) also removed or changed run {run!r}")


async def check_commit_writes_progress(target: ConformanceTarget) -> None:
    """CheckpointManager.commit leaves both the node's checkpoint and the run's progress."""
    from stroma.checkpoint import RunProgress  # noqa: PLC0415 - import cycle

    store, name = target.store, "commit_writes_progress"
    manager = _manager(store)
    run_id = _run_id("commit")
    for seq, node in enumerate(["a", "b"], start=1):
        state = ConformanceSmall(run=run_id, node=node, seq=seq)
        progress = RunProgress(run_id=run_id, last_node=node, committed=seq, tokens=10 * seq)
        await manager.commit(run_id, node, state, progress)
    if await manager.resume(run_id, "a", ConformanceSmall) != ConformanceSmall(run=run_id, node="a", seq=1):
        raise _fail(name, store, "the first committed checkpoint did not load back")
    got = await manager.load_progress(run_id)
    if got is None or (got.last_node, got.committed, got.tokens) != ("b", 2, 20):
        raise _fail(name, store, f"progress after two commits is {got!r}, not node b / 2 / 20")
    await _call(store.delete, run_id)


async def check_ttl_applied(target: ConformanceTarget) -> None:
    """A store with ttl_seconds puts an expiry of at most ttl_seconds on what it writes."""
    store, name = target.store, "ttl_applied"
    ttl = getattr(store, "ttl_seconds", None)
    if ttl is None:
        return  # the store does not expire data: nothing to check
    probe = target.ttl_of or getattr(store, "ttl_remaining", None)
    if probe is None:
        raise _fail(
            name,
            store,
            "it has ttl_seconds but no ttl_remaining(run_id); pass ttl_of= to the "
            "conformance suite so the TTL can be checked",
        )
    from stroma.checkpoint import RunProgress  # noqa: PLC0415 - import cycle

    run_id = _run_id("ttl")
    await _call(store.save, run_id, "a", ConformanceSmall(run=run_id, node="a", seq=1))
    left = await _call(probe, run_id)
    if left is None or not 0 < left <= ttl:
        raise _fail(name, store, f"after save the TTL is {left!r}, not in (0, {ttl}]")
    await _manager(store).commit(
        run_id, "b", ConformanceSmall(run=run_id, node="b", seq=2), RunProgress(run_id=run_id)
    )
    left = await _call(probe, run_id)
    if left is None or not 0 < left <= ttl:
        raise _fail(name, store, f"after commit the TTL is {left!r}, not in (0, {ttl}]")
    await _call(store.delete, run_id)


async def check_concurrent_saves_never_corrupt(target: ConformanceTarget) -> None:
    """Many concurrent saves (distinct nodes and one contended node) all load back whole."""
    store, name = target.store, "concurrent_saves_never_corrupt"
    manager = _manager(store)
    run_id = _run_id("concurrent")
    distinct = [
        manager.checkpoint(run_id, f"n{i}", ConformanceSmall(run=run_id, node=f"n{i}", seq=i))
        for i in range(100)
    ]
    contended_states = [sample_state(i) for i in range(40)]
    contended = [manager.checkpoint(run_id, "hot", s) for s in contended_states]
    await asyncio.gather(*distinct, *contended)
    for i in range(100):
        got = await manager.resume(run_id, f"n{i}", ConformanceSmall)
        if got != ConformanceSmall(run=run_id, node=f"n{i}", seq=i):
            raise _fail(name, store, f"node n{i} loaded {got!r} after concurrent saves")
    hot = await manager.resume(run_id, "hot", ConformanceState)
    if hot not in contended_states:
        raise _fail(name, store, "the contended node loaded a state nobody saved (torn write)")
    await _call(store.delete, run_id)


async def check_lease_is_exclusive(target: ConformanceTarget) -> None:
    """A run's lease has one owner at a time; only the owner can release it."""
    store, name = target.store, "lease_is_exclusive"
    if not hasattr(store, "acquire_lease"):
        return  # the store has no leases: CheckpointManager grants them unconditionally
    run_id = _run_id("lease")
    if not await _call(store.acquire_lease, run_id, "owner-1", 60.0):
        raise _fail(name, store, "a free lease was refused")
    if await _call(store.acquire_lease, run_id, "owner-2", 60.0):
        raise _fail(name, store, "a second owner took a lease that was held")
    if not await _call(store.acquire_lease, run_id, "owner-1", 60.0):
        raise _fail(name, store, "the owner could not renew its own lease")
    await _call(store.release_lease, run_id, "owner-2")  # not the owner: no effect
    if await _call(store.acquire_lease, run_id, "owner-2", 60.0):
        raise _fail(name, store, "a release by a non-owner freed the lease")
    await _call(store.release_lease, run_id, "owner-1")
    if not await _call(store.acquire_lease, run_id, "owner-2", 60.0):
        raise _fail(name, store, "the lease was not free after its owner released it")
    await _call(store.release_lease, run_id, "owner-2")
    other = _run_id("lease-other")
    if not await _call(store.acquire_lease, other, "owner-1", 60.0):
        raise _fail(name, store, "leases of different runs interfered")
    await _call(store.release_lease, other, "owner-1")


async def check_stale_fencing_token_refused(target: ConformanceTarget) -> None:
    """A store whose leases return fencing tokens refuses a commit carrying a stale one with
    LeaseLostError and writes nothing of it; the new owner's token commits."""
    from stroma.checkpoint import RunProgress  # noqa: PLC0415 - import cycle

    store, name = target.store, "stale_fencing_token_refused"
    if not hasattr(store, "acquire_lease"):
        return  # no leases: nothing to fence
    run_id = _run_id("fence")
    first = await _call(store.acquire_lease, run_id, "owner-1", 60.0)
    if first is True or not first:
        return  # leases without fencing tokens (True/False): the store does not fence
    manager = _manager(store)
    state = ConformanceSmall(run=run_id, node="a", seq=1)
    await manager.commit(run_id, "a", state, RunProgress(run_id=run_id, last_node="a"), token=first)
    if await _call(store.acquire_lease, run_id, "owner-1", 60.0) != first:
        raise _fail(name, store, "renewing a lease by its owner changed its fencing token")
    await _call(store.release_lease, run_id, "owner-1")
    second = await _call(store.acquire_lease, run_id, "owner-2", 60.0)
    if not isinstance(second, int) or second <= first:
        raise _fail(name, store, f"a new owner got token {second!r}, not one above {first}")
    stale = ConformanceSmall(run=run_id, node="b", seq=99)
    try:
        await manager.commit(run_id, "b", stale, RunProgress(run_id=run_id, last_node="b"),
                             token=first)
    except LeaseLostError:
        pass
    else:
        raise _fail(name, store, "a commit with the previous owner's token was accepted")
    progress = await manager.load_progress(run_id)
    if await manager.resume(run_id, "b", ConformanceSmall) is not None or (
        progress is None or progress.last_node != "a"
    ):
        raise _fail(name, store, "a refused commit left its checkpoint or progress behind")
    await manager.commit(run_id, "b", stale, RunProgress(run_id=run_id, last_node="b"),
                         token=second)
    await _call(store.release_lease, run_id, "owner-2")
    await _call(store.delete, run_id)


class ConformanceSecret(BaseModel):
    """A state holding a secret."""

    api_key: SecretStr
    nested: list[SecretStr] = []


async def check_secrets_round_trip(target: ConformanceTarget) -> None:
    """A SecretStr committed through CheckpointManager resumes with its real value (the store
    is the user's own storage; events and run files keep the mask). Checked on stores with the
    raw protocol (``save_raw``), whose payloads the manager encodes; a store that serializes
    states itself should write ``stroma.checkpoint.encode_checkpoint(node_id, state)``."""
    from stroma.checkpoint import RunProgress  # noqa: PLC0415 - import cycle

    store, name = target.store, "secrets_round_trip"
    if not hasattr(store, "save_raw") and not hasattr(store, "list_runs"):
        return
    manager = _manager(store)
    run_id = _run_id("secret")
    state = ConformanceSecret(api_key=SecretStr("sk-real"), nested=[SecretStr("n-real")])
    await manager.commit(run_id, "a", state, RunProgress(run_id=run_id, last_node="a"))
    got = await manager.resume(run_id, "a", ConformanceSecret)
    if not isinstance(got, ConformanceSecret) or (
        got.api_key.get_secret_value(), [s.get_secret_value() for s in got.nested]
    ) != ("sk-real", ["n-real"]):
        raise _fail(name, store, f"a committed SecretStr resumed as {got!r}, not its real value")
    await _call(store.delete, run_id)


async def check_runs_listed(target: ConformanceTarget) -> None:
    """list_runs finds runs by pipeline, status and last update, with their progress, and
    whether a lease is held."""
    from stroma.checkpoint import RunManifest, RunProgress  # noqa: PLC0415 - import cycle

    store, name = target.store, "runs_listed"
    if not hasattr(store, "list_runs"):
        return  # the store cannot list (CheckpointManager.list_runs says so)
    manager = _manager(store)
    pipeline = f"conformance-{uuid.uuid4().hex[:10]}"
    runs = [_run_id(f"list{i}") for i in range(3)]
    for i, run_id in enumerate(runs):
        await manager.save_manifest(
            RunManifest(run_id=run_id, pipeline=["a", "b"], pipeline_name=pipeline,
                        started_at=1000.0 + i)
        )
    await manager.commit(runs[0], "a", ConformanceSmall(run=runs[0], node="a", seq=1),
                         RunProgress(run_id=runs[0], last_node="a", committed=1, tokens=7,
                                     cost_usd=0.5, updated_at=1010.0))
    await manager.save_progress(RunProgress(run_id=runs[1], last_node="b", committed=2,
                                            status="COMPLETED", updated_at=1020.0))
    owner = "conformance-owner"
    leased = hasattr(store, "acquire_lease") and await _call(store.acquire_lease, runs[2], owner, 60.0)
    listed = {r.run_id: r for r in await manager.list_runs(pipeline=pipeline)}
    if sorted(listed) != sorted(runs):
        raise _fail(name, store, f"list_runs(pipeline=...) found {sorted(listed)}, not {runs}")
    first = listed[runs[0]]
    if (first.status, first.last_node, first.committed, first.tokens, first.cost_usd,
            first.updated_at) != ("running", "a", 1, 7, 0.5, 1010.0):
        raise _fail(name, store, f"the committed run was listed as {first!r}")
    if (leased and not listed[runs[2]].lease_held) or listed[runs[0]].lease_held:
        raise _fail(name, store, "lease_held does not say which run's lease is held")
    running = {r.run_id for r in await manager.list_runs(status="running", pipeline=pipeline)}
    done = [r.run_id for r in await manager.list_runs(status="COMPLETED", pipeline=pipeline)]
    if running != {runs[0], runs[2]} or done != [runs[1]]:
        raise _fail(name, store, f"status filters found running={running}, COMPLETED={done}")
    old = [r.run_id for r in await manager.list_runs(pipeline=pipeline, updated_before=1005.0)]
    if old != [runs[2]]:
        raise _fail(name, store, f"updated_before=1005 found {old}, not only the idle run")
    if len(await manager.list_runs(pipeline=pipeline, limit=2)) != 2:
        raise _fail(name, store, "limit=2 did not return 2 runs")
    if leased:
        await _call(store.release_lease, runs[2], owner)
    for run_id in runs:
        await _call(store.delete, run_id)
    if await manager.list_runs(pipeline=pipeline):
        raise _fail(name, store, "deleted runs are still listed")


DEEP_JSON = "[" * (512 * 1024) + "]" * (512 * 1024)
"""1 MiB of nested JSON arrays."""


async def check_hostile_payloads_refused(target: ConformanceTarget) -> None:
    """Stored data naming os:system / builtins:eval, pickle, non-JSON or 1 MiB of nesting is
    refused with SchemaResolutionError or CheckpointDataError (never imported or executed)."""
    store, name = target.store, "hostile_payloads_refused"
    writer = target.write_raw or getattr(store, "save_raw", None)
    if writer is None:
        raise _fail(
            name,
            store,
            "it has no save_raw; pass write_raw= to the conformance suite so "
            "hostile payloads can be planted in its storage",
        )
    good_ref = schema_ref(ConformanceSmall)
    valid = ConformanceSmall(run="r", node="n", seq=1).model_dump_json()
    cases: list[tuple[str, str | bytes, str, type[Exception]]] = [
        ("os:system", valid, "os:system", SchemaResolutionError),
        ("builtins:eval", valid, "builtins:eval", SchemaResolutionError),
        ("builtins:dict", valid, "builtins:dict", SchemaResolutionError),
        ("no colon", valid, "ConformanceSmall", SchemaResolutionError),
        ("pickle text", pickle.dumps({"a": 1}, protocol=0).decode("ascii"), good_ref, CheckpointDataError),
        (
            "pickle bytes",
            pickle.dumps(ConformanceSmall(run="r", node="n", seq=1), protocol=5),
            good_ref,
            CheckpointDataError,
        ),
        ("not json", "{not json", good_ref, CheckpointDataError),
        ("deep json", DEEP_JSON, good_ref, CheckpointDataError),
        ("wrong shape", '{"run": 5}', good_ref, CheckpointDataError),
    ]
    run_id = _run_id("hostile")
    manager = _manager(store)
    for label, payload, ref, expected in cases:
        node = f"hostile-{label.replace(' ', '-')}"
        try:
            await _call(writer, run_id, node, payload, ref)
        except NotImplementedError:
            if isinstance(payload, bytes):
                continue  # the storage cannot hold bytes at all
            raise
        for how, load in (
            ("store.load", lambda n=node: _load(store, run_id, n)),
            ("CheckpointManager.resume", lambda n=node: manager.resume(run_id, n)),
        ):
            try:
                got = await load()
            except expected:
                continue
            except Exception as exc:
                raise _fail(
                    name,
                    store,
                    f"{how} of a {label} payload raised {type(exc).__name__}: {exc}, not {expected.__name__}",
                ) from exc
            raise _fail(name, store, f"{how} of a {label} payload returned {got!r}")
    await _call(store.delete, run_id)


CONFORMANCE_CHECKS: dict[str, StoreCheck] = {
    "roundtrip_field_types": check_roundtrip_field_types,
    "missing_is_none": check_missing_is_none,
    "run_isolation": check_run_isolation,
    "latest_write_wins": check_latest_write_wins,
    "delete_removes_exactly_one_run": check_delete_removes_exactly_one_run,
    "commit_writes_progress": check_commit_writes_progress,
    "ttl_applied": check_ttl_applied,
    "concurrent_saves_never_corrupt": check_concurrent_saves_never_corrupt,
    "lease_is_exclusive": check_lease_is_exclusive,
    "stale_fencing_token_refused": check_stale_fencing_token_refused,
    "secrets_round_trip": check_secrets_round_trip,
    "runs_listed": check_runs_listed,
    "hostile_payloads_refused": check_hostile_payloads_refused,
}
"""Every check by name (sorted names make a stable pytest parametrization)."""


async def run_conformance_check(
    name: str,
    store: Any,
    *,
    write_raw: RawWriter | None = None,
    ttl_of: TtlProbe | None = None,
) -> None:
    """Run one named check on ``store``; raises ConformanceError (an AssertionError) on failure."""
    check = CONFORMANCE_CHECKS.get(name)
    if check is None:
        raise KeyError(f"no conformance check named {name!r}; the checks are {sorted(CONFORMANCE_CHECKS)}")
    await check(ConformanceTarget(store, write_raw, ttl_of))


async def check_store(
    store: Any,
    *,
    write_raw: RawWriter | None = None,
    ttl_of: TtlProbe | None = None,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
) -> None:
    """Run every conformance check (or ``only`` those, minus ``skip``) on ``store``.

    ``store`` may also be a zero-argument factory (sync or async) returning the store. Raises
    ConformanceError (an AssertionError) naming the first check that failed.
    """
    if not hasattr(store, "save") and callable(store):
        store = await _call(store)
    names = list(only) if only is not None else list(CONFORMANCE_CHECKS)
    for name in names:
        if name not in skip:
            await run_conformance_check(name, store, write_raw=write_raw, ttl_of=ttl_of)
