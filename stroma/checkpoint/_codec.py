"""Encoding and decoding checkpoint payloads (JSON only, against a schema named in code), and
the run records every store lists.

Commit-time checks (:func:`encode_checkpoint`): a payload that could not be loaded back is
refused when it is written, not when a resume needs it: NaN/inf floats (JSON has no such
numbers: pydantic writes them as ``null``), payloads over :data:`MAX_PAYLOAD_BYTES` (the load
limit) and values JSON cannot carry (bytes that are not UTF-8, lone surrogates) raise
:class:`~stroma.errors.CheckpointEncodeError` naming the node, the field and the reason.

``SecretStr`` / ``SecretBytes`` policy: the store is the user's own storage, so a checkpoint
keeps the real secret value and a resumed run gets it back; everything else (events, run files,
telemetry, ``ExecutionResult``) keeps pydantic's ``**********`` mask.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr, ValidationError
from pydantic_core import PydanticSerializationError, to_json

from stroma._schemas import resolve_schema, schema_ref
from stroma.errors import (
    CheckpointDataError,
    CheckpointEncodeError,
    ConfigurationError,
    LeaseLostError,
)

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "JsonStoreMixin",
    "ListMixin",
    "RunRecord",
    "SyncListMixin",
    "check_list_args",
    "commit_records",
    "decode_payload",
    "encode_checkpoint",
    "index_fields",
    "json_string",
    "lease_lost",
    "matches",
    "no_longer_valid",
    "output_json",
    "progress_json",
    "run_record",
]


def no_longer_valid(
    run_id: str, node_id: str, schema: type[BaseModel], exc: ValidationError
) -> CheckpointDataError:
    first = exc.errors(include_url=False)[:3]
    fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or '__root__'}: {e['msg']}" for e in first)
    return CheckpointDataError(
        f"checkpoint of node '{node_id}' in run '{run_id}' no longer validates against "
        f"{schema.__name__} ({fields}); the schema changed since it was written. Re-run the "
        "node (resume from it) or migrate the stored data"
    )


MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


_json_strings: dict[str, str] = {}


def json_string(value: str) -> str:
    """``json.dumps(value)`` for a string, cached (run and node ids repeat)."""
    cached = _json_strings.get(value)
    if cached is None:
        if len(_json_strings) > 100_000:
            _json_strings.clear()
        cached = _json_strings[value] = json.dumps(value)
    return cached


def progress_json(
    run_id: str,
    last_node: str | None,
    committed: int,
    status: str,
    tokens: int,
    cost_usd: float,
    latency_ms: float,
    updated_at: float,
) -> str:
    """The JSON of a run's progress record (a ``RunProgress``), built by hand: it is written with
    every committed node, so it costs no model."""
    return (
        f'{{"run_id":{json.dumps(run_id)},'
        f'"last_node":{"null" if last_node is None else json_string(last_node)},'
        f'"committed":{committed},"status":{json_string(status)},"tokens":{tokens},'
        f'"cost_usd":{float(cost_usd)!r},"latency_ms":{float(latency_ms)!r},'
        f'"updated_at":{float(updated_at)!r}}}'
    )


def decode_payload(
    payload: str | bytes,
    ref: str,
    schema: type[BaseModel] | None,
    run_id: str,
    node_id: str,
) -> BaseModel:
    """Validate a stored JSON payload. ``schema`` (from the contract) wins over ``ref``.

    Only JSON is accepted: pickle bytes or anything not JSON raise CheckpointDataError, and
    ``ref`` is resolved among registered schemas only.
    """
    if isinstance(payload, bytes | bytearray):
        if payload[:1] == b"\x80":
            raise CheckpointDataError(
                f"checkpoint of node '{node_id}' in run '{run_id}' holds pickle data; Stroma "
                "only loads JSON checkpoints and never unpickles"
            )
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointDataError(
                f"checkpoint of node '{node_id}' in run '{run_id}' is not UTF-8 JSON"
            ) from None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CheckpointDataError(
            f"checkpoint of node '{node_id}' in run '{run_id}' is {len(payload)} bytes, over "
            f"the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    target = schema if schema is not None else resolve_schema(ref)
    try:
        return target.model_validate_json(payload)
    except ValidationError as exc:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            raise CheckpointDataError(
                f"checkpoint of node '{node_id}' in run '{run_id}' is not valid JSON "
                f"({exc.errors()[0].get('msg', '')}); Stroma only loads JSON checkpoints"
            ) from None
        raise no_longer_valid(run_id, node_id, target, exc) from None
    except RecursionError:
        raise CheckpointDataError(
            f"checkpoint of node '{node_id}' in run '{run_id}' is nested too deeply to load"
        ) from None


# -- commit-time checks ----------------------------------------------------------------------

_RUN_NODE = "__stroma_run__"  # == stroma.checkpoint.RUN_NODE (no import cycle)
_PROGRESS_NODE = "__stroma_progress__"  # == stroma.checkpoint.PROGRESS_NODE
_MASK = "**********"  # pydantic's rendering of a SecretStr / SecretBytes


def _leaves(value: Any, keys: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every leaf value of a model's data with its path (field names, dict keys, list indexes)."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _leaves(getattr(value, name, None), (*keys, name))
        for name, extra in (value.model_extra or {}).items():
            yield from _leaves(extra, (*keys, name))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*keys, key))
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield from _leaves(item, (*keys, index))
    else:
        yield keys, value


def _dotted(keys: tuple[Any, ...]) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".") or "<root>"


def _non_finite(value: Any) -> str | None:
    """Why ``value`` is not a JSON number (NaN, inf), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r}, which is not a JSON number (it would be stored as null)"
    return None


def _unstorable(value: Any) -> str | None:
    """Why pydantic could not serialize ``value`` as JSON, or None."""
    if isinstance(value, SecretStr | SecretBytes):
        value = value.get_secret_value()
    if isinstance(value, bytes | bytearray):
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"bytes that are not UTF-8 ({exc.reason} at byte {exc.start})"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"a string with a lone surrogate at index {exc.start}"
    return None


def _maybe_non_finite(model: BaseModel) -> bool:
    """Whether ``model`` may hold a NaN/inf float (a quick test in Rust: its data rendered with
    NaN/Infinity as literals; a string holding that text only costs the exact walk)."""
    rendered = to_json(
        model.model_dump(), inf_nan_mode="constants", bytes_mode="base64", serialize_unknown=True
    )
    return b"NaN" in rendered or b"Infinity" in rendered


def _refuse(node_id: str, field: str, reason: str) -> CheckpointEncodeError:
    return CheckpointEncodeError(
        f"node '{node_id}' returned output that cannot be checkpointed: field '{field}' is "
        f"{reason}. Nothing was committed; fix the node's output (or its contract) so it holds "
        "only values JSON can carry",
        node_id=node_id,
        field=field,
        reason=reason,
    )


def _first_unstorable(
    node_id: str, model: BaseModel, why: Callable[[Any], str | None]
) -> CheckpointEncodeError | None:
    for keys, value in _leaves(model, ()):
        reason = why(value)
        if reason is not None:
            return _refuse(node_id, _dotted(keys), reason)
    return None


def output_json(node_id: str, model: BaseModel) -> str:
    """``model.model_dump_json()`` (secrets masked: for events and run files), with a typed
    :class:`~stroma.errors.CheckpointEncodeError` naming the field when pydantic cannot
    serialize it."""
    try:
        return model.model_dump_json()
    except PydanticSerializationError as exc:
        found = _first_unstorable(node_id, model, _unstorable)
        raise found or _refuse(node_id, "<unknown>", f"not serializable ({exc})") from None


def _reveal(payload: str, model: BaseModel) -> str:
    """``payload`` with every masked SecretStr / SecretBytes replaced by its real value."""
    secrets = [(k, v) for k, v in _leaves(model, ()) if isinstance(v, SecretStr | SecretBytes)]
    if not secrets:
        return payload
    data = json.loads(payload)
    for keys, secret in secrets:
        parent = data
        try:
            for key in keys[:-1]:
                parent = parent[key]
            if parent[keys[-1]] == _MASK:
                real = secret.get_secret_value()
                parent[keys[-1]] = real.decode("utf-8") if isinstance(real, bytes) else real
        except (KeyError, IndexError, TypeError):
            continue  # serialized under another name (an alias, a custom serializer): stays masked
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_checkpoint(node_id: str, model: BaseModel, payload: str | None = None) -> str:
    """The JSON a store keeps for ``model`` (a node's output), refused at commit time when it
    could not be loaded back: raises :class:`~stroma.errors.CheckpointEncodeError` (TERMINAL)
    naming ``node_id``, the field and the reason.

    ``payload`` is ``model.model_dump_json()`` when the caller has it already (it is then only
    checked, not serialized again). The result holds the real values of ``SecretStr`` fields
    (the store is the user's own storage); ``payload`` itself, masked, is what events and run
    files show. Costs a few substring scans unless the payload holds ``null``, a mask or a
    non-finite literal.
    """
    if payload is None:
        payload = output_json(node_id, model)
    if ("null" in payload or "NaN" in payload or "Infinity" in payload) and _maybe_non_finite(model):
        found = _first_unstorable(node_id, model, _non_finite)
        if found is not None:
            raise found
    if _MASK in payload:
        payload = _reveal(payload, model)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _refuse(
            node_id,
            "<whole output>",
            f"{len(payload)} characters of JSON, over the {MAX_PAYLOAD_BYTES}-character load "
            "limit (it could never be resumed); keep large data outside the state (a file or "
            "object store) and checkpoint its reference",
        )
    return payload


# -- run records (list_runs) -----------------------------------------------------------------


class RunRecord(BaseModel):
    """One run as ``list_runs`` reports it (from the run's progress record and manifest).

    ``status`` is the stored status: ``running`` while a run is in flight (or its worker died),
    else the final one (``COMPLETED``, ``RESUMED``, ``FAILED``, ``PARTIAL``, ``CANCELLED``,
    ``INTERRUPTED`` ...). ``lease_held``: a worker holds the run's lease right now.
    """

    model_config = ConfigDict(frozen=True)

    run_id: str
    pipeline: str | None = None
    status: str = "running"
    last_node: str | None = None
    committed: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    updated_at: float = 0.0
    lease_held: bool = False


def run_record(
    run_id: str, progress: str | bytes | None, manifest: str | bytes | None, lease_held: bool
) -> RunRecord | None:
    """The record of a run from the JSON of its progress record and manifest (either may be
    missing: a run that has not committed yet has only its manifest); None when both are, or
    they are not Stroma's."""
    fields: dict[str, Any] = {"run_id": run_id, "lease_held": lease_held}
    try:
        if manifest is not None:
            data = json.loads(manifest)
            fields["pipeline"] = data.get("pipeline_name")
            fields["updated_at"] = float(data.get("started_at") or 0.0)
        if progress is not None:
            data = json.loads(progress)
            fields.update(
                {k: data[k] for k in ("status", "last_node", "committed", "tokens", "cost_usd") if k in data}
            )
            # the latest activity: a resume rewrites the manifest before its first commit
            fields["updated_at"] = max(float(data.get("updated_at") or 0.0), fields.get("updated_at", 0.0))
        elif manifest is None:
            return None
        return RunRecord.model_validate(fields)
    except (ValueError, TypeError, AttributeError):
        return None  # not written by Stroma: not a run


def commit_records(node_id: str, payload: str, ref: str, progress: str | None) -> list[tuple[str, str, str]]:
    """The ``(node_id, payload, ref)`` records a write stores: the node's checkpoint, and for a
    commit (``progress`` given) the run's progress record (alone when ``node_id`` is the
    progress record's own)."""
    records = [] if node_id == _PROGRESS_NODE and progress is not None else [(node_id, payload, ref)]
    if progress is not None:
        records.append((_PROGRESS_NODE, progress, "stroma.checkpoint:RunProgress"))
    return records


def index_fields(node_id: str, payload: str) -> tuple[str | None, str, float] | None:
    """What a write of ``node_id`` puts in a store's run index: ``(pipeline, status,
    updated_at)`` for a manifest (pipeline known, status ``running``) or a progress record
    (pipeline None: unchanged), None for a node's checkpoint (or data that is not Stroma's)."""
    if node_id not in (_RUN_NODE, _PROGRESS_NODE):
        return None
    try:
        data = json.loads(payload)
        if node_id == _RUN_NODE:
            return str(data.get("pipeline_name")), "running", float(data.get("started_at") or 0.0)
        return None, str(data["status"]), float(data.get("updated_at") or 0.0)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def check_list_args(
    status: str | None, pipeline: str | None, updated_before: float | None, limit: int
) -> None:
    """Typed errors for bad ``list_runs`` arguments (the same on every store)."""
    for name, value in (("status", status), ("pipeline", pipeline)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"list_runs({name}={value!r}) must be a str or None")
    if updated_before is not None and (
        isinstance(updated_before, bool)
        or not isinstance(updated_before, int | float)
        or math.isnan(updated_before)
    ):
        raise ConfigurationError(
            f"list_runs(updated_before={updated_before!r}) must be a timestamp in seconds (a "
            "float, e.g. time.time() - 60) or None"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ConfigurationError(f"list_runs(limit={limit!r}) must be a whole number from 1 to 10000")


def matches(
    record: RunRecord, status: str | None, pipeline: str | None, updated_before: float | None
) -> bool:
    """Whether ``record`` passes the ``list_runs`` filters (every store applies them to the
    records it read, so a stale index entry never shows a wrong run)."""
    return (
        (status is None or record.status == status)
        and (pipeline is None or record.pipeline == pipeline)
        and (updated_before is None or record.updated_at < updated_before)
    )


def lease_lost(run_id: str, token: int, current: object) -> LeaseLostError:
    """The error every store raises for a commit carrying a stale fencing token."""
    return LeaseLostError(
        f"run '{run_id}': this worker's lease was taken over by another worker (its fencing "
        f"token {token} is stale; the run's is now {current}); the commit was refused and this "
        "worker must stop. The other worker continues the run",
        run_id=run_id,
        token=token,
        current=current if isinstance(current, int) else None,
    )


_LIST_DOC = """The store's runs, oldest update first: ``status`` (``"running"``, or a final one such
as ``"COMPLETED"``), ``pipeline`` (its name) and ``updated_before`` (seconds, exclusive) filter
them; at most ``limit``. Read from the store's run index, never a scan of its keys or rows."""


class SyncListMixin:
    """``list_runs`` of a sync store: checks the arguments, then calls its ``_list_runs``."""

    def list_runs(
        self,
        status: str | None = None,
        pipeline: str | None = None,
        updated_before: float | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        check_list_args(status, pipeline, updated_before, limit)
        return self._list_runs(status, pipeline, updated_before, limit)

    list_runs.__doc__ = _LIST_DOC

    def _list_runs(
        self, status: str | None, pipeline: str | None, updated_before: float | None, limit: int
    ) -> list[RunRecord]:
        raise NotImplementedError


class ListMixin:
    """``list_runs`` of an async store: checks the arguments, then awaits its ``_list_runs``."""

    async def list_runs(
        self,
        status: str | None = None,
        pipeline: str | None = None,
        updated_before: float | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        check_list_args(status, pipeline, updated_before, limit)
        return await self._list_runs(status, pipeline, updated_before, limit)

    list_runs.__doc__ = _LIST_DOC

    async def _list_runs(
        self, status: str | None, pipeline: str | None, updated_before: float | None, limit: int
    ) -> list[RunRecord]:
        raise NotImplementedError


class JsonStoreMixin(ListMixin):
    """The published structural API (``save`` / ``load`` and their typed forms) of an async store,
    built on its raw JSON methods ``save_raw`` / ``load_raw``, and ``list_runs``."""

    async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
        """Store a JSON payload and its schema reference (implemented by each store)."""
        raise NotImplementedError

    async def load_raw(self, run_id: str, node_id: str) -> tuple[str | bytes, str] | None:
        """The stored payload and schema reference, or None (implemented by each store)."""
        raise NotImplementedError

    async def save(self, run_id: str, node_id: str, state: BaseModel) -> None:
        """Save ``state`` as JSON with its schema reference."""
        await self.save_raw(run_id, node_id, encode_checkpoint(node_id, state), schema_ref(type(state)))

    async def save_typed(self, run_id: str, node_id: str, state: BaseModel, schema: type[BaseModel]) -> None:
        """Save ``state`` validated as ``schema``."""
        await self.save(run_id, node_id, schema.model_validate(state.model_dump()))

    async def load(self, run_id: str, node_id: str) -> BaseModel | None:
        """Load a checkpoint with its registered schema, or None (hostile data raises)."""
        return await self.load_typed(run_id, node_id, None)

    async def load_typed(self, run_id: str, node_id: str, schema: type[BaseModel] | None) -> BaseModel | None:
        """Load a checkpoint validated with ``schema`` (or its registered schema), or None."""
        raw = await self.load_raw(run_id, node_id)
        if raw is None:
            return None
        return decode_payload(raw[0], raw[1], schema, run_id, node_id)


# -- lease owners ------------------------------------------------------------------------------

_HOST = socket.gethostname()


class _Owners:
    """This process's lease owner ids: one random nonce (renewed in a forked child, so a worker
    never repeats its parent's ids even when its pid is reused) and a counter."""

    nonce = uuid.uuid4().hex
    count = itertools.count(1)

    @classmethod
    def renew(cls) -> None:
        cls.nonce = uuid.uuid4().hex


os.register_at_fork(after_in_child=_Owners.renew)


def lease_owner() -> str:
    """A new lease owner: ``host:pid:nonce-n``, unique per lease, so a store on one machine can
    tell a holder that is gone (see :func:`holder_is_gone`). One random nonce per process and a
    counter, not a random id per lease (which costs a system call on every run)."""
    return f"{_HOST}:{os.getpid()}:{_Owners.nonce}-{next(_Owners.count)}"


def holder_is_gone(owner: str) -> bool:
    """Whether ``owner`` names a process on this host that no longer exists (killed, crashed).
    Owners from another host, or not in ``host:pid:random`` form, are never judged gone: their
    lease lapses by its TTL."""
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False
