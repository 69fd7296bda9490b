"""Store promises under faults (issue 16, store side): fencing tokens, bounded lease release,
commit-time checks, typed data errors, a hung Redis; and the run listing / manifest (issue 15)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

import stroma.checkpoint._codec as codec
from stroma import CheckpointManager, RedisStore, SqliteStore, SyncRedisStore, checkpoint
from stroma.checkpoint import Lease, RunManifest, RunProgress, encode_checkpoint
from stroma.checkpoint._codec import output_json
from stroma.errors import (
    CheckpointEncodeError,
    ConfigurationError,
    LeaseLostError,
    StoreDataError,
    StoreUnavailableError,
)
from stroma.failures import FailureClass, NodeContext, classify
from tests.conftest import PrivateRedis
from tests.stroma.stores.conftest import StoreKit, redis_admin

MakeStore = Callable[..., Awaitable[StoreKit]]
LEASED_KINDS = ["async_memory", "sqlite", "redis", "sync_redis", "postgres"]


class Doc(BaseModel):
    """A small state."""

    text: str = ""


class Inner(BaseModel):
    """A nested model with floats."""

    values: list[float] = []


class Output(BaseModel):
    """A node output with nested fields, bytes and a secret."""

    inner: Inner = Inner()
    blob: bytes = b""
    note: str = ""
    key: SecretStr = SecretStr("")


def terminal(exc: Exception) -> bool:
    """Whether the built-in rules classify ``exc`` TERMINAL (never retried)."""
    return classify(exc, NodeContext("n", 1, "r")) is FailureClass.TERMINAL


# -- fencing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LEASED_KINDS)
async def test_a_worker_whose_lease_was_taken_over_cannot_commit(
    kind: str, make_store: MakeStore, unique: str
) -> None:
    """Once a second worker takes a lapsed lease, the first worker's commit (and final status)
    is refused with LeaseLostError, its renewal marks the lease lost, and the store keeps only
    the new owner's writes."""
    store = (await make_store(kind)).store
    old, new = CheckpointManager(store), CheckpointManager(store)
    run_id = f"{unique}-fence"
    async with old.lease(run_id) as lease:
        assert isinstance(lease, Lease)
        assert isinstance(lease.token, int)
        assert not lease.lost
        await old.commit(run_id, "a", Doc(text="old"), RunProgress(run_id=run_id, last_node="a"),
                         token=lease.token)
        released = store.release_lease(run_id, lease.owner)  # what its expiry would do
        if inspect.isawaitable(released):
            await released
        async with new.lease(run_id) as taken:  # the old lease lapsed: a new worker takes it
            assert taken.token is not None
            assert taken.token > lease.token
            with pytest.raises(LeaseLostError, match="taken over") as caught:
                await old.commit(run_id, "b", Doc(text="stale"),
                                 RunProgress(run_id=run_id, last_node="b"), token=lease.token)
            assert (caught.value.token, caught.value.current) == (lease.token, taken.token)
            with pytest.raises(LeaseLostError):
                await old.save_progress_json(
                    run_id, RunProgress(run_id=run_id, status="COMPLETED").model_dump_json(),
                    token=lease.token,
                )
            assert not await old.renew_lease(lease)
            assert lease.lost
            assert "taken by another worker" in lease.reason
            await new.commit(run_id, "b", Doc(text="new"),
                             RunProgress(run_id=run_id, last_node="b"), token=taken.token)
    assert await new.resume(run_id, "b", Doc) == Doc(text="new")
    progress = await new.load_progress(run_id)
    assert progress is not None
    assert (progress.last_node, progress.status) == ("b", "running")
    await new.clear(run_id)


async def test_stores_without_leases_or_tokens_keep_working() -> None:
    """A custom store without leases grants one with no token; a store whose acquire_lease
    returns True (0.3.2 style) and whose commit_raw takes no token commits unconditionally."""

    class Plain:
        def __init__(self) -> None:
            self.data: dict[tuple[str, str], BaseModel] = {}

        async def save(self, run_id: str, node_id: str, state: BaseModel) -> None:
            self.data[(run_id, node_id)] = state

        async def load(self, run_id: str, node_id: str) -> BaseModel | None:
            return self.data.get((run_id, node_id))

        async def delete(self, run_id: str) -> None:
            self.data.clear()

    class OldRaw(Plain):
        raw: dict[tuple[str, str], tuple[str, str]]

        async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
            self.raw[(run_id, node_id)] = (payload, ref)

        async def load_raw(self, run_id: str, node_id: str) -> tuple[str, str] | None:
            return self.raw.get((run_id, node_id))

        async def commit_raw(self, run_id: str, node_id: str, payload: str, ref: str,
                             progress: str) -> None:
            self.raw[(run_id, node_id)] = (payload, ref)

        async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> bool:
            return True

        async def release_lease(self, run_id: str, owner: str) -> None:
            return None

    plain = CheckpointManager(Plain())
    async with plain.lease("r") as lease:
        assert lease.token is None
        assert not lease.lost
        await plain.commit("r", "a", Doc(text="x"), RunProgress(run_id="r"), token=lease.token)
    old = OldRaw()
    old.raw = {}
    manager = CheckpointManager(old)
    async with manager.lease("r") as lease:
        assert lease.token is None
        await manager.commit("r", "a", Doc(text="y"), RunProgress(run_id="r"), token=lease.token)
        assert await manager.renew_lease(lease)
        assert not lease.lost
    assert await manager.resume("r", "a", Doc) == Doc(text="y")


async def test_giving_a_lease_back_is_bounded_when_the_store_hangs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A release that never answers (a store after an outage) is abandoned after
    RELEASE_TIMEOUT_S with one warning; the lease expires on its own."""
    monkeypatch.setattr(checkpoint, "RELEASE_TIMEOUT_S", 0.05)

    class Hung(checkpoint.AsyncInMemoryStore):
        leases_expire = True  # leases kept elsewhere (a server): giving one back can hang

        async def release_lease(self, run_id: str, owner: str) -> None:
            await asyncio.Event().wait()

    manager = CheckpointManager(Hung())
    with caplog.at_level(logging.WARNING, logger="stroma"):
        async with asyncio.timeout(5):
            async with manager.lease("r"):
                pass
    assert "could not give its lease back" in caplog.text


async def test_a_lease_unrenewable_for_a_whole_ttl_is_marked_lost() -> None:
    """Renewals failing on an unreachable store keep the lease while under one TTL, and mark
    it lost once they have failed for a whole TTL (it may have lapsed and been taken)."""

    class Flaky(checkpoint.AsyncInMemoryStore):
        down = False

        async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> int:
            if self.down:
                raise StoreUnavailableError("down")
            return await super().acquire_lease(run_id, owner, ttl_s)

    store = Flaky()
    manager = CheckpointManager(store)
    async with manager.lease("r", ttl_s=30.0) as lease:
        store.down = True
        assert not await manager.renew_lease(lease, 30.0, failing_for=10.0)
        assert not lease.lost
        assert not await manager.renew_lease(lease, 30.0, failing_for=30.0)
        assert lease.lost
        assert "could not be renewed" in lease.reason
        store.down = False


def test_an_old_sqlite_file_gains_fencing_tokens(tmp_path: Path) -> None:
    """A file written by 0.3.2 (a lease table without tokens) gets the column on first use."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE stroma_leases (run_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
        "expires_at REAL NOT NULL) WITHOUT ROWID; "
        "INSERT INTO stroma_leases VALUES ('r', 'gone', 0);"
    )
    conn.close()

    async def take() -> int:
        store = SqliteStore(path)
        try:
            return await store.acquire_lease("r", "me", 30.0)
        finally:
            await store.aclose()

    assert asyncio.run(take()) == 1


# -- commit-time checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "field", "reason"),
    [
        (Output(inner=Inner(values=[1.0, float("nan")])), "inner.values[1]", "nan"),
        (Output(inner=Inner(values=[float("-inf")])), "inner.values[0]", "inf"),
        (Output(blob=b"\xff\xfe"), "blob", "not UTF-8"),
        (Output(note="ok \ud800"), "note", "lone surrogate"),
    ],
)
async def test_unstorable_output_is_refused_at_commit_naming_node_and_field(
    output: Output, field: str, reason: str
) -> None:
    """NaN/inf, non-UTF-8 bytes and lone surrogates are refused when committed, with a
    TERMINAL CheckpointEncodeError naming the node and the field; nothing is written."""
    manager = CheckpointManager(checkpoint.AsyncInMemoryStore())
    with pytest.raises(CheckpointEncodeError) as caught:
        await manager.commit("r", "summarize", output, RunProgress(run_id="r", last_node="x"))
    err = caught.value
    assert (err.node_id, err.field) == ("summarize", field)
    assert reason in err.reason
    assert "node 'summarize'" in str(err)
    assert f"field '{field}'" in str(err)
    assert terminal(err)
    assert await manager.load_progress("r") is None
    with pytest.raises(CheckpointEncodeError):
        output_json("summarize", output) if reason in ("not UTF-8", "lone surrogate") else (
            encode_checkpoint("summarize", output)
        )


def test_output_over_the_load_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """An output whose JSON is over the load limit is refused when encoded (it could never be
    resumed); one just under it encodes."""
    monkeypatch.setattr(codec, "MAX_PAYLOAD_BYTES", 100)
    assert encode_checkpoint("n", Doc(text="x" * 80)) == Doc(text="x" * 80).model_dump_json()
    with pytest.raises(CheckpointEncodeError, match="over the 100-character load limit") as caught:
        encode_checkpoint("big", Doc(text="x" * 200))
    assert caught.value.node_id == "big"
    assert terminal(caught.value)


def test_secrets_are_stored_real_and_shown_masked() -> None:
    """encode_checkpoint keeps the real SecretStr value (for the store) while output_json, what
    events and run files show, keeps the mask."""
    out = Output(key=SecretStr("sk-live-123"))
    assert "sk-live-123" in encode_checkpoint("n", out)
    shown = output_json("n", out)
    assert "sk-live-123" not in shown
    assert "**********" in shown
    assert Output.model_validate_json(encode_checkpoint("n", out, shown)).key.get_secret_value() == (
        "sk-live-123"
    )


# -- data errors and a hung server -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "sync_redis"])
async def test_redis_wrongtype_is_a_terminal_error_naming_the_key(
    kind: str, make_store: MakeStore, unique: str
) -> None:
    """A run key holding another kind of value (WRONGTYPE) raises StoreDataError naming the
    key, classified TERMINAL (not retried as if Redis were down)."""
    kit = await make_store(kind)
    key = kit.store.hash_key(f"{unique}-wt")
    admin = redis_admin(kit.url)
    admin.set(key, "not a hash")
    manager = CheckpointManager(kit.store)
    try:
        for call in (
            manager.resume(f"{unique}-wt", "a", Doc),
            manager.commit(f"{unique}-wt", "a", Doc(), RunProgress(run_id="r")),
        ):
            with pytest.raises(StoreDataError, match="WRONGTYPE") as caught:
                await call
            assert key in str(caught.value)
            assert caught.value.key == key
            assert terminal(caught.value)
    finally:
        admin.delete(key)
        admin.close()


async def test_postgres_unstorable_ids_are_terminal_store_data_errors(
    make_store: MakeStore, unique: str
) -> None:
    """A NUL byte, a lone surrogate or a very long incompressible id gives StoreDataError
    (TERMINAL), not a raw asyncpg error retried as AMBIGUOUS."""
    manager = CheckpointManager((await make_store("postgres")).store)
    for run_id in (f"{unique}\x00nul", f"{unique}\ud800", secrets.token_urlsafe(12_000)):
        with pytest.raises(StoreDataError) as caught:
            await manager.commit(run_id, "a", Doc(), RunProgress(run_id="r"))
        assert terminal(caught.value)


@pytest.mark.parametrize("cls", [RedisStore, SyncRedisStore])
async def test_a_hung_redis_fails_the_attempt_within_seconds(cls: type[Any]) -> None:
    """A server that accepts connections and never answers fails a commit with
    StoreUnavailableError within the 5 s socket timeout (no retry on a timeout)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # never answers

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    manager = CheckpointManager(cls(f"redis://127.0.0.1:{port}/0"))
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="unavailable"):
        await manager.commit("r", "a", Doc(), RunProgress(run_id="r"))
    assert time.monotonic() - started < 8.0
    for writer in held:
        writer.close()
    server.close()
    if cls is RedisStore:
        await manager.store.aclose()
    else:
        manager.store.close()


# -- listing and the manifest ------------------------------------------------------------------


async def test_list_runs_arguments_are_checked_and_custom_stores_say_they_cannot_list() -> None:
    """Bad list_runs arguments raise ConfigurationError naming the argument; a store without
    list_runs says so instead of failing later."""
    manager = CheckpointManager(checkpoint.AsyncInMemoryStore())
    for kwargs in ({"limit": 0}, {"limit": True}, {"status": 5}, {"updated_before": float("nan")}):
        with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
            await manager.list_runs(**kwargs)

    class NoList:
        async def save(self, run_id: str, node_id: str, state: BaseModel) -> None: ...
        async def load(self, run_id: str, node_id: str) -> BaseModel | None: ...
        async def delete(self, run_id: str) -> None: ...

    with pytest.raises(ConfigurationError, match="cannot list runs"):
        await CheckpointManager(NoList()).list_runs()


@pytest.mark.parametrize("kind", ["async_memory", "sqlite", "redis", "postgres"])
async def test_a_run_can_be_resumed_from_its_manifest_alone(
    kind: str, make_store: MakeStore, unique: str
) -> None:
    """The manifest keeps the run's initial input (secrets included), so a worker that never
    saw the run start loads it, and the listing names the run's pipeline."""
    manager = CheckpointManager((await make_store(kind)).store)
    run_id = f"{unique}-manifest"
    initial = Output(note="start", key=SecretStr("sk-1"))
    await manager.save_manifest(RunManifest(
        run_id=run_id, pipeline=["a"], pipeline_name=f"p-{unique}", started_at=5.0,
        initial_input=encode_checkpoint(checkpoint.RUN_NODE, initial),
        initial_input_ref=checkpoint._schema_ref(Output),
    ))
    got = await manager.load_initial_input(run_id, Output)
    assert got == initial
    assert isinstance(got, Output)
    assert got.key.get_secret_value() == "sk-1"
    listed = await manager.list_runs(pipeline=f"p-{unique}")
    assert [(r.run_id, r.status, r.committed) for r in listed] == [(run_id, "running", 0)]
    assert await manager.load_initial_input(f"{unique}-none") is None
    await manager.clear(run_id)


async def test_giving_a_lease_back_during_a_redis_outage_does_not_block(
    private_redis: PrivateRedis, unique: str
) -> None:
    """Redis going away while a run holds its lease: leaving the lease block takes at most
    RELEASE_TIMEOUT_S (plus a second), and the lease expires on its own."""
    store = RedisStore(private_redis.url, key_prefix=unique)
    manager = CheckpointManager(store)
    async with manager.lease(f"{unique}-r") as lease:
        assert lease.token == 1
        private_redis.stop()
        started = time.monotonic()
    assert time.monotonic() - started < checkpoint.RELEASE_TIMEOUT_S + 1.0
    await store.aclose()


@pytest.mark.parametrize("kind", LEASED_KINDS)
async def test_clearing_a_run_keeps_its_fencing_token(
    kind: str, make_store: MakeStore, unique: str
) -> None:
    """Clearing a run (as a fresh start of a finished run id may) while holding its lease keeps
    the fencing token: the holder still commits, and the next owner gets a higher token."""
    store = (await make_store(kind)).store
    manager = CheckpointManager(store)
    run_id = f"{unique}-clear"
    async with manager.lease(run_id) as lease:
        await manager.clear(run_id)
        await manager.commit(run_id, "a", Doc(text="x"), RunProgress(run_id=run_id),
                             token=lease.token)
    async with manager.lease(run_id) as later:
        assert later.token is not None
        assert lease.token is not None
        assert later.token > lease.token
    await manager.clear(run_id)


@pytest.mark.parametrize("kind", ["redis", "sync_redis"])
async def test_listing_drops_runs_whose_records_expired_from_the_redis_index(
    kind: str, make_store: MakeStore, unique: str
) -> None:
    """A run whose hash expired (its TTL) is not listed, and the listing removes it from the
    index so the index does not grow with expired runs; live runs are still listed."""
    kit = await make_store(kind)
    manager = CheckpointManager(kit.store)
    runs = [f"{unique}-live", f"{unique}-expired"]
    for run_id in runs:
        await manager.save_manifest(RunManifest(run_id=run_id, pipeline=["a"],
                                                pipeline_name=f"p-{unique}", started_at=1.0))
    admin = redis_admin(kit.url)
    try:
        admin.delete(kit.store.hash_key(runs[1]))  # what its TTL does
        listed = await manager.list_runs(pipeline=f"p-{unique}")
        assert [r.run_id for r in listed] == [runs[0]]
        assert admin.zscore(kit.store.index_key(), runs[1]) is None
        assert admin.zscore(kit.store.index_key("running"), runs[1]) is None
        assert admin.zscore(kit.store.index_key(), runs[0]) == 1.0
    finally:
        admin.close()
    await manager.clear(runs[0])
