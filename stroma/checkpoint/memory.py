"""In-process stores: for tests and the ``StromaRunner.quick()`` default. They lose everything
when the process exits; use :class:`~stroma.SqliteStore` or a server store to survive restarts.

Both keep JSON payloads (not live objects), so a checkpoint cannot change after it was saved and
loads exactly as a durable store would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from stroma._schemas import schema_ref
from stroma.checkpoint._codec import (
    ListMixin,
    RunRecord,
    SyncListMixin,
    decode_payload,
    encode_checkpoint,
    lease_lost,
    matches,
    progress_json,
    run_record,
)
from stroma.errors import SchemaResolutionError

__all__ = ["AsyncInMemoryStore", "InMemoryStore"]


def _as_schema(state: BaseModel, schema: object) -> BaseModel:
    """``state`` validated as ``schema``; a TypeError (SchemaResolutionError) for a non-model."""
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise SchemaResolutionError(
            f"schema must be a BaseModel type, got {schema!r:.60}; pass the pydantic model class"
        )
    return state if isinstance(state, schema) else schema.model_validate(state.model_dump())


class InMemoryStore(SyncListMixin):
    """A synchronous in-process store."""

    kind = "memory"
    blocking = False  # CheckpointManager may call it inline, without a worker thread
    leases_expire = False  # in-process leases live and die with the process: no renewal

    def __init__(self) -> None:
        self._data: dict[str, dict[str, tuple[str, str]]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(runs={len(self._data)})"

    def save(self, run_id: str, node_id: str, state: BaseModel) -> None:
        """Save ``state`` as JSON."""
        self._data.setdefault(run_id, {})[node_id] = (
            encode_checkpoint(node_id, state),
            schema_ref(type(state)),
        )

    def load(self, run_id: str, node_id: str) -> BaseModel | None:
        """Load a checkpoint with its registered schema, or None."""
        item = self._data.get(run_id, {}).get(node_id)
        if item is None:
            return None
        return decode_payload(item[0], item[1], None, run_id, node_id)

    def load_typed(self, run_id: str, node_id: str, schema: type[BaseModel]) -> BaseModel | None:
        """Load a checkpoint validated with ``schema``, or None."""
        item = self._data.get(run_id, {}).get(node_id)
        if item is None:
            return None
        return decode_payload(item[0], item[1], schema, run_id, node_id)

    def save_typed(self, run_id: str, node_id: str, state: BaseModel, schema: type[BaseModel]) -> None:
        """Save ``state`` (validated as ``schema``)."""
        self.save(run_id, node_id, _as_schema(state, schema))

    def delete(self, run_id: str) -> None:
        """Forget every checkpoint of ``run_id``."""
        self._data.pop(run_id, None)

    def _list_runs(
        self, status: str | None, pipeline: str | None, updated_before: float | None, limit: int
    ) -> list[RunRecord]:
        data = self._data
        return _list(data, {}, lambda run: data.get(run, {}), status, pipeline, updated_before, limit)


def _list(
    data: dict[str, Any],
    leases: dict[str, Any],
    read: Callable[[str], Any],
    status: str | None,
    pipeline: str | None,
    updated_before: float | None,
    limit: int,
) -> list[RunRecord]:
    """``list_runs`` of an in-process store: its dict of runs is the index. ``read(run_id)``
    gives a run's ``{node_id: (payload, ref)}`` records."""
    found: list[RunRecord] = []
    for run_id in list(data):
        records = read(run_id)
        progress, manifest = records.get(_PROGRESS_NODE), records.get(_RUN_NODE)
        record = run_record(
            run_id,
            None if progress is None else progress[0],
            None if manifest is None else manifest[0],
            run_id in leases,
        )
        if record is not None and matches(record, status, pipeline, updated_before):
            found.append(record)
    found.sort(key=lambda r: (r.updated_at, r.run_id))
    return found[:limit]


class AsyncInMemoryStore(ListMixin):
    """An asynchronous in-process store (the default of ``StromaRunner.quick()``)."""

    kind = "memory"
    leases_expire = False  # in-process leases live and die with the process: no renewal

    def __init__(self) -> None:
        # Per run, per node: (payload, schema ref). The engine's fast path may instead leave the
        # progress record as the tuple of its fields (_commit_inline), or a record as
        # (render, args, ref) (_save_inline); either is rendered as JSON when read.
        self._data: dict[str, dict[str, tuple[Any, ...]]] = {}
        self._leases: dict[str, str] = {}
        self._fences: dict[str, tuple[str, int]] = {}  # run -> (last owner, fencing token)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(runs={len(self._data)})"

    def _get(self, run_id: str, node_id: str) -> tuple[str, str] | None:
        item = self._data.get(run_id, {}).get(node_id)
        if item is None or len(item) == 2:
            return item
        if len(item) == 3:  # saved by _save_inline
            render, args, ref = item
            return render(*args), ref
        return progress_json(*item), _PROGRESS_REF

    async def save(self, run_id: str, node_id: str, state: BaseModel) -> None:
        """Save ``state`` as JSON."""
        self._data.setdefault(run_id, {})[node_id] = (
            encode_checkpoint(node_id, state),
            schema_ref(type(state)),
        )

    async def load(self, run_id: str, node_id: str) -> BaseModel | None:
        """Load a checkpoint with its registered schema, or None."""
        item = self._get(run_id, node_id)
        if item is None:
            return None
        return decode_payload(item[0], item[1], None, run_id, node_id)

    async def load_typed(self, run_id: str, node_id: str, schema: type[BaseModel]) -> BaseModel | None:
        """Load a checkpoint validated with ``schema``, or None."""
        item = self._get(run_id, node_id)
        if item is None:
            return None
        return decode_payload(item[0], item[1], schema, run_id, node_id)

    async def save_typed(self, run_id: str, node_id: str, state: BaseModel, schema: type[BaseModel]) -> None:
        """Save ``state`` (validated as ``schema``)."""
        await self.save(run_id, node_id, _as_schema(state, schema))

    async def delete(self, run_id: str) -> None:
        """Forget every checkpoint of ``run_id``."""
        self._data.pop(run_id, None)

    async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
        """Save a JSON payload and its schema reference."""
        self._data.setdefault(run_id, {})[node_id] = (payload, ref)

    async def load_raw(self, run_id: str, node_id: str) -> tuple[str, str] | None:
        """The JSON payload and schema reference of a checkpoint, or None."""
        return self._get(run_id, node_id)

    async def commit_raw(
        self,
        run_id: str,
        node_id: str,
        payload: str,
        ref: str,
        progress: str,
        token: int | None = None,
    ) -> None:
        """Save a checkpoint and the run's progress record together (refused with
        LeaseLostError when ``token`` is stale)."""
        self._fence(run_id, token)
        run = self._data.setdefault(run_id, {})
        if node_id != _PROGRESS_NODE:
            run[node_id] = (payload, ref)
        run[_PROGRESS_NODE] = (progress, _PROGRESS_REF)

    def _commit_inline(
        self,
        run_id: str,
        node_id: str,
        payload: str,
        ref: str,
        progress: tuple[Any, ...],
        token: int | None = None,
    ) -> None:
        """:meth:`commit_raw` for the engine's in-process fast path: synchronous (nothing can
        interleave), with the progress record kept as the arguments of ``progress_json``."""
        if token is not None:
            self._fence(run_id, token)
        run = self._run(run_id)
        run[node_id] = (payload, ref)
        run[_PROGRESS_NODE] = progress

    def _fence(self, run_id: str, token: int | None) -> None:
        current = self._fences.get(run_id, ("", 0))[1]
        if token is not None and token != current:
            raise lease_lost(run_id, token, current)

    def _save_inline(
        self, run_id: str, node_id: str, render: Callable[..., str], args: tuple[Any, ...], ref: str
    ) -> None:
        """:meth:`save_raw` for the engine's fast path: the payload is ``render(*args)``, called
        when the record is read (``args`` must be values that no longer change)."""
        self._run(run_id)[node_id] = (render, args, ref)

    def _run(self, run_id: str) -> dict[str, tuple[Any, ...]]:
        run = self._data.get(run_id)
        if run is None:
            run = self._data[run_id] = {}
        return run

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> int:
        """Take the run's lease unless another owner holds it; returns its fencing token (0:
        refused). The token grows by one whenever the lease changes owner."""
        holder = self._leases.get(run_id)
        if holder is not None and holder != owner:
            return 0
        self._leases[run_id] = owner
        last, token = self._fences.get(run_id, ("", 0))
        if last != owner:
            token += 1
            self._fences[run_id] = (owner, token)
        return token

    async def _list_runs(
        self, status: str | None, pipeline: str | None, updated_before: float | None, limit: int
    ) -> list[RunRecord]:
        def read(run_id: str) -> dict[str, Any]:
            return {n: self._get(run_id, n) for n in (_PROGRESS_NODE, _RUN_NODE)}

        return _list(self._data, self._leases, read, status, pipeline, updated_before, limit)

    async def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease back (only its owner can)."""
        if self._leases.get(run_id) == owner:
            del self._leases[run_id]


_PROGRESS_REF = "stroma.checkpoint:RunProgress"
_PROGRESS_NODE = "__stroma_progress__"  # stroma.checkpoint.PROGRESS_NODE (which imports this module)
_RUN_NODE = "__stroma_run__"  # stroma.checkpoint.RUN_NODE
