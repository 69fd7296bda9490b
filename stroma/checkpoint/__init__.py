"""Checkpoint stores and the manager the runner talks to.

A store is structural: ``save(run_id, node_id, state)``, ``load(run_id, node_id)``,
``delete(run_id)``, all async (:class:`AsyncCheckpointStore`) or all sync (:class:`CheckpointStore`).
:class:`CheckpointManager` adapts either. Stores shipped here also implement the raw protocol
(:class:`RawCheckpointStore`): JSON payloads plus a schema reference, an atomic ``commit_raw``
that writes a node's checkpoint and the run's progress record together, and a lease.

Payloads are JSON. The schema a payload is loaded with comes from the node's contract; a stored
``module:qualname`` is only resolved among schemas registered in code (:func:`_resolve_schema`),
never imported.

Example::

    from stroma import CheckpointManager, SqliteStore
    manager = CheckpointManager(SqliteStore("runs.db"))
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from stroma._schemas import resolve_schema, schema_ref
from stroma.checkpoint._codec import (
    MAX_PAYLOAD_BYTES,
    ListMixin,
    RunRecord,
    decode_payload,
    encode_checkpoint,
    lease_owner,
    no_longer_valid,
)
from stroma.checkpoint.memory import AsyncInMemoryStore, InMemoryStore
from stroma.checkpoint.postgres import PostgresStore
from stroma.checkpoint.redis import RedisStore, SyncRedisStore
from stroma.checkpoint.sqlite import SqliteStore
from stroma.errors import ConfigurationError, RunLeasedError, StoreUnavailableError

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PROGRESS_NODE",
    "RUN_NODE",
    "AsyncCheckpointStore",
    "AsyncInMemoryStore",
    "CheckpointKey",
    "CheckpointManager",
    "CheckpointStore",
    "InMemoryStore",
    "Lease",
    "PostgresStore",
    "RawCheckpointStore",
    "RedisStore",
    "RunManifest",
    "RunProgress",
    "RunRecord",
    "SqliteStore",
    "SyncRedisStore",
    "_resolve_schema",
    "_schema_ref",
    "decode_payload",
    "encode_checkpoint",
]

logger = logging.getLogger("stroma")

RUN_NODE = "__stroma_run__"
"""Reserved node id of a run's manifest (pipeline, trace-context carrier)."""
PROGRESS_NODE = "__stroma_progress__"
"""Reserved node id of a run's progress record (last committed node, spend, status)."""

LEASE_TTL_S = 30.0
RELEASE_TIMEOUT_S = 2.0
"""At most this long is spent giving a lease back: after an outage the lease expires anyway."""


def _schema_ref(schema: type[BaseModel]) -> str:
    """``module:qualname`` of ``schema`` (and registers it as resolvable)."""
    return schema_ref(schema)


def _resolve_schema(ref: str) -> type[BaseModel]:
    """The registered schema named ``ref``. Imports nothing: an unregistered name (``os:system``,
    ``builtins:eval``) raises :class:`~stroma.errors.SchemaResolutionError`, a TypeError."""
    return resolve_schema(ref)


class CheckpointKey(NamedTuple):
    """Address of one checkpoint."""

    run_id: str
    node_id: str


@runtime_checkable
class CheckpointStore(Protocol):
    """A synchronous store."""

    def save(self, run_id: str, node_id: str, state: BaseModel) -> None: ...
    def load(self, run_id: str, node_id: str) -> BaseModel | None: ...
    def delete(self, run_id: str) -> None: ...


@runtime_checkable
class AsyncCheckpointStore(Protocol):
    """An asynchronous store."""

    async def save(self, run_id: str, node_id: str, state: BaseModel) -> None: ...
    async def load(self, run_id: str, node_id: str) -> BaseModel | None: ...
    async def delete(self, run_id: str) -> None: ...


@runtime_checkable
class RawCheckpointStore(Protocol):
    """The optional fast path Stroma's own stores implement (all async).

    - ``save_raw`` / ``load_raw``: a JSON payload and its schema reference;
    - ``commit_raw``: a node's checkpoint and the run's progress record, atomically;
    - ``acquire_lease`` / ``release_lease``: at most one worker per run. ``acquire_lease``
      returns the lease's fencing token (an int > 0, the same while one owner keeps renewing,
      larger for every new owner) or 0 when another owner holds the lease; a store may return
      plain ``True`` / ``False`` instead (no fencing).
    - ``commit_raw(..., token=n)``: refuse the write atomically with
      :class:`~stroma.errors.LeaseLostError` when ``n`` is no longer the run's current token.
    - ``list_runs(status, pipeline, updated_before, limit)``: :class:`RunRecord` s from an index.
    """

    kind: str

    async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None: ...
    async def load_raw(self, run_id: str, node_id: str) -> tuple[str, str] | None: ...
    async def commit_raw(
        self,
        run_id: str,
        node_id: str,
        payload: str,
        ref: str,
        progress: str,
        token: int | None = None,
    ) -> None: ...
    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> int | bool: ...
    async def release_lease(self, run_id: str, owner: str) -> None: ...


class RunManifest(BaseModel):
    """Written once when a run (or a resume of it) starts.

    ``initial_input`` is the JSON of the run's initial state (as its store keeps checkpoints:
    secrets included) and ``initial_input_ref`` its schema reference, so a worker that never saw
    the run start can resume it (:meth:`CheckpointManager.load_initial_input`).
    """

    run_id: str
    pipeline: list[str]
    pipeline_name: str = "pipeline"
    carrier: dict[str, str] = {}
    started_at: float = 0.0
    initial_input: str | None = None
    initial_input_ref: str | None = None


@dataclass
class Lease:
    """A worker's hold on a run, yielded by :meth:`CheckpointManager.lease`.

    ``token`` is the fencing token to pass to every commit (None when the store has no fencing:
    custom stores). ``lost`` turns True when the renewer finds another worker took the run, or
    could not renew it for a whole TTL (an outage: the lease may have lapsed); the engine stops
    before its next node. ``reason`` says why.
    """

    run_id: str
    owner: str
    token: int | None = None
    lost: bool = False
    reason: str = ""
    _give_back: Callable[[], Awaitable[None]] | None = field(default=None, repr=False, compare=False)

    async def release(self) -> None:
        """Give the lease back now, before its block ends (which then gives back nothing more).
        The engine calls it right after a run's final progress is recorded, so the store I/O
        stays inside the run."""
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            await give_back()


class RunProgress(BaseModel):
    """Rewritten with every committed node (constant size, whatever the run's length)."""

    run_id: str
    last_node: str | None = None
    committed: int = 0
    status: str = "running"
    tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    updated_at: float = 0.0


MANIFEST_REF = schema_ref(RunManifest)


def manifest_json(
    run_id: str,
    pipeline: tuple[str, ...],
    pipeline_name: str,
    carrier: dict[str, str] | None,
    started_at: float,
    initial_input: str | None = None,
    initial_input_ref: str | None = None,
) -> str:
    """The JSON of a RunManifest (for a record the in-process store renders when read)."""
    return RunManifest(
        run_id=run_id,
        pipeline=list(pipeline),
        pipeline_name=pipeline_name,
        carrier=carrier or {},
        started_at=started_at,
        initial_input=initial_input,
        initial_input_ref=initial_input_ref,
    ).model_dump_json()


PROGRESS_REF = schema_ref(RunProgress)  # memory.py spells it out (it is imported before this)
_NO_STATE = RunProgress(run_id="")  # the ``state`` of a progress-only commit (never written)


def store_kind(store: object) -> str:
    """A short name for the store ("memory", "sqlite", "redis", "postgres", or the class name)."""
    kind = getattr(store, "kind", None)
    return kind if isinstance(kind, str) else type(store).__name__


class CheckpointManager(ListMixin):
    """Saves and loads checkpoints through any store, sync or async."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.kind = store_kind(store)
        self._unreleased: dict[str, str] = {}  # run id -> owner of a lease not given back
        self._is_async: dict[str, bool] = {}  # store method name -> whether it is a coroutine
        save = getattr(store, "save", None)
        if save is None or not callable(save):
            raise TypeError(
                f"{type(store).__name__} is not a checkpoint store: it needs save(run_id, "
                "node_id, state), load(run_id, node_id) and delete(run_id)"
            )
        self._async = inspect.iscoroutinefunction(save)
        # A sync store that says it never blocks (the in-memory one) is called inline;
        # any other sync store runs in a worker thread so it cannot stall the event loop.
        self._inline = bool(getattr(store, "blocking", True) is False)
        # In-process leases (``leases_expire = False``) live and die with this process: no
        # renewer, and giving one back (a dict entry here) cannot hang, so it needs no timer.
        self._leases_expire = getattr(store, "leases_expire", True)
        raw = [getattr(store, m, None) for m in ("save_raw", "load_raw", "commit_raw")]
        self._raw = all(callable(m) for m in raw)
        # Async raw methods are awaited directly (the hot path); sync ones (SyncRedisStore) run
        # through _call, in a worker thread, so they stay atomic without blocking the loop.
        self._raw_async = self._raw and all(inspect.iscoroutinefunction(m) for m in raw)
        # The in-process store's synchronous writes (the engine's fast path), unless a subclass
        # changed how records are written or read.
        inline = getattr(store, "_commit_inline", None)
        overridden = any(
            getattr(type(store), name, None) is not getattr(AsyncInMemoryStore, name)
            for name in ("commit_raw", "save_raw", "load_raw")
        )
        # commit_inline(run_id, node_id, payload, ref, progress_fields, token=None)
        self.commit_inline: Callable[..., None] | None = (
            None if overridden or not callable(inline) else inline
        )
        save = getattr(store, "_save_inline", None)
        self.save_inline: Callable[[str, str, Callable[..., str], tuple[Any, ...], str], None] | None = (
            None if overridden or not callable(save) else save
        )

    def __repr__(self) -> str:
        return f"CheckpointManager({self.store!r})"

    async def _call(self, name: str, *args: Any) -> Any:
        method = getattr(self.store, name)
        is_async = self._is_async.get(name)
        if is_async is None:
            is_async = self._is_async[name] = inspect.iscoroutinefunction(method)
        if is_async:
            return await method(*args)
        if self._inline:
            return method(*args)
        return await asyncio.to_thread(method, *args)

    async def _call_raw(self, name: str, *args: Any) -> Any:
        if self._raw_async:
            return await getattr(self.store, name)(*args)
        return await self._call(name, *args)

    # -- the published API -------------------------------------------------------------------

    async def checkpoint(self, run_id: str, node_id: str, state: BaseModel) -> None:
        """Save ``state`` as the checkpoint of ``node_id`` (checked: :func:`encode_checkpoint`)."""
        payload = encode_checkpoint(node_id, state)
        if self._raw:
            await self._call_raw("save_raw", run_id, node_id, payload, schema_ref(type(state)))
        else:
            await self._call("save", run_id, node_id, state)

    async def resume(
        self, run_id: str, node_id: str, schema: type[BaseModel] | None = None
    ) -> BaseModel | None:
        """Load the checkpoint of ``node_id``, validated with ``schema`` when given."""
        if self._raw:
            raw = await self._call_raw("load_raw", run_id, node_id)
            if raw is None:
                return None
            return decode_payload(raw[0], raw[1], schema, run_id, node_id)
        if schema is not None and hasattr(self.store, "load_typed"):
            loaded: BaseModel | None = await self._call("load_typed", run_id, node_id, schema)
            return loaded
        state = await self._call("load", run_id, node_id)
        if state is None:
            return None
        if schema is not None and not isinstance(state, schema):
            try:
                return schema.model_validate(state.model_dump())
            except ValidationError as exc:
                raise no_longer_valid(run_id, node_id, schema, exc) from None
        return state  # type: ignore[no-any-return]

    async def clear(self, run_id: str) -> None:
        """Delete every checkpoint of ``run_id``."""
        await self._call("delete", run_id)

    # -- beyond the published API -------------------------------------------------------------

    async def commit(
        self,
        run_id: str,
        node_id: str,
        state: BaseModel,
        progress: RunProgress,
        token: int | None = None,
    ) -> int:
        """Save the checkpoint of ``node_id`` and the run's progress; returns payload bytes.

        Stores with ``commit_raw`` write both atomically; others write the checkpoint first, so a
        crash in between leaves the node uncommitted (it may run again) but never half-written.
        ``token`` is the run's fencing token (:attr:`Lease.token`): a store with fencing refuses
        the commit with :class:`~stroma.errors.LeaseLostError` once another worker took the run.
        """
        payload = encode_checkpoint(node_id, state)
        await self._commit(
            run_id,
            node_id,
            state,
            payload,
            schema_ref(type(state)),
            progress.model_dump_json(),
            token,
        )
        return len(payload) if self._raw else 0

    async def commit_json(
        self,
        run_id: str,
        node_id: str,
        state: BaseModel,
        payload: str,
        ref: str,
        progress: str,
        token: int | None = None,
    ) -> None:
        """:meth:`commit` for a caller that already has the JSON of ``state`` (its
        ``model_dump_json()``) and of the progress record (the engine's hot path). The payload
        goes through :func:`encode_checkpoint` (a few substring scans when it is clean)."""
        if node_id != PROGRESS_NODE:
            payload = encode_checkpoint(node_id, state, payload)
        await self._commit(run_id, node_id, state, payload, ref, progress, token)

    async def _commit(
        self,
        run_id: str,
        node_id: str,
        state: BaseModel,
        payload: str,
        ref: str,
        progress: str,
        token: int | None,
    ) -> None:
        if self._raw:
            args = (run_id, node_id, payload, ref, progress)
            if self._raw_async:
                await (
                    self.store.commit_raw(*args, token=token)
                    if token is not None
                    else self.store.commit_raw(*args)
                )
            elif token is not None:
                await self._call("commit_raw", *args, token)
            else:
                await self._call("commit_raw", *args)
        else:
            await self._call("save", run_id, node_id, state)
            await self._call("save", run_id, PROGRESS_NODE, RunProgress.model_validate_json(progress))

    async def save_manifest(self, manifest: RunManifest) -> None:
        """Record the pipeline and trace context of a run that is starting."""
        await self.checkpoint(manifest.run_id, RUN_NODE, manifest)

    async def load_manifest(self, run_id: str) -> RunManifest | None:
        """The manifest of ``run_id``, if any."""
        loaded = await self.resume(run_id, RUN_NODE, RunManifest)
        return loaded if isinstance(loaded, RunManifest) else None

    async def load_initial_input(
        self, run_id: str, schema: type[BaseModel] | None = None
    ) -> BaseModel | None:
        """The initial state ``run_id`` started with (from its manifest), validated with
        ``schema`` when given; None when the manifest does not hold it."""
        manifest = await self.load_manifest(run_id)
        if manifest is None or manifest.initial_input is None:
            return None
        return decode_payload(
            manifest.initial_input, manifest.initial_input_ref or "", schema, run_id, RUN_NODE
        )

    async def save_progress_json(self, run_id: str, progress: str, token: int | None = None) -> None:
        """Record the run's progress from its JSON (the engine builds it by hand, once).
        With ``token``, fenced like a commit (a worker that lost the run cannot overwrite its
        final status)."""
        if token is not None and self._raw:
            await self.commit_json(
                run_id, PROGRESS_NODE, _NO_STATE, progress, PROGRESS_REF, progress, token=token
            )
        elif self._raw:
            await self._call_raw("save_raw", run_id, PROGRESS_NODE, progress, PROGRESS_REF)
        else:
            await self._call("save", run_id, PROGRESS_NODE, RunProgress.model_validate_json(progress))

    async def save_progress(self, progress: RunProgress) -> None:
        """Record the run's progress (used when a run ends without committing a node)."""
        await self.checkpoint(progress.run_id, PROGRESS_NODE, progress)

    async def load_progress(self, run_id: str) -> RunProgress | None:
        """The progress record of ``run_id``, if any."""
        loaded = await self.resume(run_id, PROGRESS_NODE, RunProgress)
        return loaded if isinstance(loaded, RunProgress) else None

    async def _list_runs(
        self, status: str | None, pipeline: str | None, updated_before: float | None, limit: int
    ) -> list[RunRecord]:
        # list_runs (ListMixin) checked the arguments
        if getattr(self.store, "list_runs", None) is None:
            raise ConfigurationError(
                f"{type(self.store).__name__} cannot list runs: it has no list_runs(status, "
                "pipeline, updated_before, limit); use one of Stroma's stores or add it"
            )
        records: list[RunRecord] = await self._call("list_runs", status, pipeline, updated_before, limit)
        return records

    @contextlib.asynccontextmanager
    async def lease(self, run_id: str, ttl_s: float = LEASE_TTL_S) -> AsyncIterator[Lease]:
        """Hold the run's lease for the block, yielding a :class:`Lease`; raise RunLeasedError
        if another worker has it.

        The lease is short (``ttl_s``) and renewed every ``ttl_s / 3`` while the block runs, so a
        worker killed mid-run blocks a resume of its run for at most ``ttl_s``, and a long run
        keeps its lease. When a renewal finds the run taken over (or none succeeded for
        ``ttl_s``), ``lease.lost`` turns True. Pass ``lease.token`` to every commit. Giving the
        lease back takes at most :data:`RELEASE_TIMEOUT_S` (after an outage it expires anyway).
        Stores without leases (custom ones) grant it unconditionally, with no token.
        """
        owner = lease_owner()
        held = Lease(run_id, owner)
        if getattr(self.store, "acquire_lease", None) is None:
            yield held
            return
        stale = self._unreleased.pop(run_id, None)
        if stale is not None:  # this process's own lease, not given back during an outage
            await self._release(run_id, stale, ttl_s)
        got = await self._call("acquire_lease", run_id, owner, ttl_s)
        if not got:
            raise RunLeasedError(
                f"run '{run_id}' is being resumed by another worker (its lease is held); "
                f"wait for it to finish, or retry after the lease expires (at most {ttl_s:g} s "
                "after that worker stopped)"
            )
        held.token = None if got is True else int(got)
        # a store whose leases never lapse (in-process: they live and die with this process)
        # needs no renewer task
        renewer = asyncio.ensure_future(self._renew(held, ttl_s)) if self._leases_expire else None

        async def give_back() -> None:
            if renewer is not None:
                renewer.cancel()
                await asyncio.gather(renewer, return_exceptions=True)
            await self._release(run_id, owner, ttl_s)

        held._give_back = give_back
        try:
            yield held
        finally:
            await held.release()

    async def _release(self, run_id: str, owner: str, ttl_s: float) -> None:
        """Give a lease back, waiting at most RELEASE_TIMEOUT_S; one that could not be given back
        is remembered and given back before this manager next leases the run."""
        limit = RELEASE_TIMEOUT_S if self._leases_expire else None  # one timer per run adds up
        try:
            async with asyncio.timeout(limit):
                await self._call("release_lease", run_id, owner)
        except (StoreUnavailableError, TimeoutError) as exc:
            self._unreleased[run_id] = owner
            logger.warning(
                "run %s: could not give its lease back (%s); it expires in at most %g s",
                run_id,
                exc or "timed out",
                ttl_s,
            )

    async def _renew(self, lease: Lease, ttl_s: float) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while not lease.lost:
            await asyncio.sleep(ttl_s / 3)  # real time: a lease is about other processes
            if await self.renew_lease(lease, ttl_s, failing_for=loop.time() - renewed):
                renewed = loop.time()

    async def renew_lease(self, lease: Lease, ttl_s: float = LEASE_TTL_S, failing_for: float = 0.0) -> bool:
        """Renew ``lease`` once (what the renewer of :meth:`lease` does every ``ttl_s / 3``);
        True when it is still held. Sets ``lease.lost`` when another worker took the run, or
        when the store stays unreachable and renewals have failed for ``failing_for >= ttl_s``
        seconds (the lease may have lapsed and been taken)."""
        try:
            got = await self._call("acquire_lease", lease.run_id, lease.owner, ttl_s)
        except StoreUnavailableError as exc:
            if failing_for < ttl_s:
                logger.warning("run %s: could not renew its lease (%s); retrying", lease.run_id, exc)
                return False
            got, why = 0, f"its lease could not be renewed for {ttl_s:g} s ({exc})"
        else:
            why = "its lease was taken by another worker"
        if got and (got is True or lease.token is None or int(got) == lease.token):
            return True
        lease.lost, lease.reason = True, why
        logger.warning("run %s: %s; it stops before its next node", lease.run_id, why)
        return False
