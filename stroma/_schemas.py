"""The registry of schemas this process has named in code.

A checkpoint stores ``module:qualname`` beside its JSON. That reference is only ever looked up
here, among schemas that code already handed to Stroma (in a contract, a save, or
``_schema_ref``); it is never imported. This is what makes stored data unable to make Stroma import
or execute anything.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel

from stroma.errors import SchemaResolutionError

_lock = threading.Lock()
_by_ref: dict[str, type[BaseModel]] = {}


_ref_of: dict[type[BaseModel], str] = {}


def schema_ref(schema: type[BaseModel]) -> str:
    """``module:qualname`` of ``schema``; remembers the schema so it can be resolved later."""
    ref = _ref_of.get(schema)
    if ref is not None:
        return ref
    ref = f"{schema.__module__}:{schema.__qualname__}"
    with _lock:
        _by_ref[ref] = schema
        _ref_of[schema] = ref
    return ref


def remember_schema(schema: type[BaseModel]) -> None:
    """Mark ``schema`` as safe to resolve from storage."""
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise SchemaResolutionError(
            f"{schema!r} is not a pydantic model class; contracts and checkpoints take "
            "subclasses of pydantic.BaseModel"
        )
    schema_ref(schema)


def resolve_schema(ref: object) -> type[BaseModel]:
    """The registered schema named by ``ref``. Imports nothing; unknown names raise."""
    if not isinstance(ref, str) or ":" not in ref:
        raise SchemaResolutionError(f"schema reference {ref!r} is not of the form 'module:qualname'")
    schema = _by_ref.get(ref)
    if schema is None:
        raise SchemaResolutionError(
            f"schema reference {ref!r}: resolved schema is not a BaseModel registered in this "
            "process; Stroma never imports names read from storage. Register the schema by "
            "using it in a NodeContract (or call stroma.checkpoint._schema_ref(YourModel)) "
            "before loading"
        )
    return schema
