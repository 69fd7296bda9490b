"""Checks shared by every configuration object: ids, and typed errors instead of pydantic's.

A configuration model derives from :class:`CheckedModel`, so a bad value raises
:class:`~stroma.errors.ConfigurationError` naming the model, the field and the value at the call
that received it, never a raw pydantic ``ValidationError``.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ValidationError

from stroma.errors import ConfigurationError

__all__ = ["MAX_ID_CHARS", "CheckedModel", "check_id", "check_positive_ms", "shown"]

MAX_ID_CHARS = 256
"""Longest run id or node id (characters). Ids key every store; 256 characters of UTF-8 fit
PostgreSQL's index row limit twice over."""

_HIDDEN_FIELDS = frozenset({"context"})  # may hold credentials: never echoed in a message


def shown(value: object, limit: int = 60) -> str:
    """A short repr of ``value`` for an error message: scalars as they are, containers by type."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return f"a {type(value).__name__}"


def check_id(kind: str, value: object) -> str:
    """``value`` if it can name a run or a node in every store; else ConfigurationError.

    Refused: non-strings, the empty string, more than :data:`MAX_ID_CHARS` characters, NUL, and
    lone surrogates (text that is not valid Unicode and cannot be stored as UTF-8).
    """
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{kind} {shown(value)} must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise ConfigurationError(
            f"{kind} {shown(value)} is {len(value)} characters long; the limit is {MAX_ID_CHARS}. "
            "Use a shorter id (a hash of a long key, for example)"
        )
    if "\x00" in value:
        raise ConfigurationError(f"{kind} {shown(value)} contains a NUL character; remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{kind} {shown(value)} contains a lone surrogate, which no store can keep as UTF-8; "
            "decode the id's bytes properly (or use errors='replace')"
        ) from None
    return value


def check_positive_ms(what: str, value: object) -> float:
    """``value`` as a finite positive number of milliseconds; else ConfigurationError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{what} = {shown(value)}: a timeout is a number of milliseconds")
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(
            f"{what} = {shown(value)}: a timeout is a finite positive number of milliseconds; "
            "leave the node out for no timeout"
        )
    return float(value)


def _message(model: str, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    where = f"{model}.{loc}" if loc else model
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    text = f"{where}: {msg}" if loc in _HIDDEN_FIELDS else f"{where} = {shown(first.get('input'))}: {msg}"
    if len(errors) > 1:
        text += f" (+{len(errors) - 1} more)"
    return text + f"; see help({model}) for the accepted values"


class CheckedModel(BaseModel):
    """A pydantic model whose constructor raises ConfigurationError for bad values."""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigurationError(_message(type(self).__name__, exc)) from None
