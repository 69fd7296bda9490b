"""SQLite store (placeholder until the durable-stores work lands)."""

from __future__ import annotations

from typing import Any

__all__ = ["SqliteStore"]


class SqliteStore:
    """A durable embedded store in one SQLite file."""

    kind = "sqlite"

    def __init__(self, path: Any) -> None:
        raise NotImplementedError("SqliteStore is not implemented yet")
