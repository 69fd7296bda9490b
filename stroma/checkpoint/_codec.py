"""Decoding stored checkpoint payloads: JSON only, against a schema named in code."""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from stroma._schemas import resolve_schema, schema_ref
from stroma.errors import CheckpointDataError

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "JsonStoreMixin",
    "decode_payload",
    "json_string",
    "no_longer_valid",
    "progress_json",
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


class JsonStoreMixin:
    """The published structural API (``save`` / ``load`` and their typed forms) of an async store,
    built on its raw JSON methods ``save_raw`` / ``load_raw``."""

    async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
        """Store a JSON payload and its schema reference (implemented by each store)."""
        raise NotImplementedError

    async def load_raw(self, run_id: str, node_id: str) -> tuple[str | bytes, str] | None:
        """The stored payload and schema reference, or None (implemented by each store)."""
        raise NotImplementedError

    async def save(self, run_id: str, node_id: str, state: BaseModel) -> None:
        """Save ``state`` as JSON with its schema reference."""
        await self.save_raw(run_id, node_id, state.model_dump_json(), schema_ref(type(state)))

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
