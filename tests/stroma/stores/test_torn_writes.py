"""Torn writes: a connection cut at any byte of a commit leaves the old checkpoint or the new one."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stroma import PostgresStore, RedisStore, StoreUnavailableError
from stroma.checkpoint import PROGRESS_NODE

from ._relay import RoundTripRelay

REF = "tests.torn:State"
OLD = ('{"v":"old"}', '{"run_id":"r","last_node":"a","committed":1,"status":"running"}')
NEW = ('{"v":"new","more":[1,2,3]}', '{"run_id":"r","last_node":"a","committed":2,"status":"running"}')
CUTS = 12  # cut points spread over the bytes of one commit, then one commit left uncut


def _via(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    netloc_new = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc_new))


@contextlib.asynccontextmanager
async def stores(kind: str, url: str, unique: str) -> AsyncIterator[tuple[Any, Any, RoundTripRelay]]:
    """The store under test (through a cutting relay) and a direct one to read what landed."""
    parts = urllib.parse.urlsplit(url)
    relay = RoundTripRelay(parts.hostname or "127.0.0.1", parts.port or (6379 if kind == "redis" else 5432))
    port = await relay.start()
    if kind == "redis":
        cut: Any = RedisStore(_via(url, port), key_prefix=f"torn-{unique}")
        direct: Any = RedisStore(url, key_prefix=f"torn-{unique}")
    else:
        table = f"torn_{unique}"
        cut = PostgresStore(_via(url, port), table=table, min_size=1, max_size=2)
        direct = PostgresStore(url, table=table, min_size=1, max_size=2)
    try:
        yield cut, direct, relay
    finally:
        if kind == "postgres":
            pool = await direct.pool()
            async with pool.acquire() as conn:
                await conn.execute(
                    f"DROP TABLE IF EXISTS torn_{unique}, torn_{unique}_leases, torn_{unique}_runs"
                )
        await cut.aclose()
        await direct.aclose()
        await relay.close()


async def _state(direct: Any, run_id: str) -> tuple[str, str]:
    checkpoint = await direct.load_raw(run_id, "a")
    progress = await direct.load_raw(run_id, PROGRESS_NODE)
    assert checkpoint is not None
    assert progress is not None
    return (_text(checkpoint[0]), _text(progress[0]))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_commit_cut_at_any_byte_is_all_or_nothing(
    kind: str, request: pytest.FixtureRequest, unique: str
) -> None:
    """Dropping the connection after k bytes of a commit, for k across the whole request, always leaves
    the checkpoint and the progress record both old or both new."""
    fixture = "redis_url" if kind == "redis" else "postgres_dsn"
    server = request.getfixturevalue(fixture)
    async with stores(kind, server, unique) as (store, direct, relay):
        run_id = f"torn-run-{unique}"
        await store.commit_raw(run_id, "a", OLD[0], REF, OLD[1])  # connections are set up now
        before = relay.bytes_sent
        await store.commit_raw(run_id, "a", NEW[0], REF, NEW[1])
        size = relay.bytes_sent - before
        assert size > len(NEW[0]) + len(NEW[1])
        outcomes: dict[str, int] = {"old": 0, "new": 0}
        for i in range(CUTS + 1):
            await direct.commit_raw(run_id, "a", OLD[0], REF, OLD[1])
            relay.cut_after(size * i // CUTS if i < CUTS else None)  # the last one is not cut
            with contextlib.suppress(StoreUnavailableError):
                await store.commit_raw(run_id, "a", NEW[0], REF, NEW[1])
            relay.cut_after(None)
            landed = await _state(direct, run_id)
            assert landed in (OLD, NEW), f"torn at byte {size * i // CUTS} of {size}: {landed}"
            outcomes["old" if landed == OLD else "new"] += 1
        assert outcomes["old"] >= 1  # a cut early in the request left the old state
        assert landed == NEW  # and the uncut commit landed whole
