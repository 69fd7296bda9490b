"""PostgreSQL store (placeholder until the durable-stores work lands)."""

from __future__ import annotations

__all__ = ["PostgresStore"]


class PostgresStore:
    """A PostgreSQL store on asyncpg."""

    kind = "postgres"

    def __init__(self, dsn: str) -> None:
        raise NotImplementedError("PostgresStore is not implemented yet")
