"""Redis stores (placeholder until the durable-stores work lands)."""

from __future__ import annotations

__all__ = ["RedisStore", "SyncRedisStore"]


class RedisStore:
    """An async Redis store on redis.asyncio."""

    kind = "redis"

    def __init__(self, redis_url: str = "redis://localhost:6379", ttl_seconds: int = 3600) -> None:
        raise NotImplementedError("RedisStore is not implemented yet")


class SyncRedisStore:
    """A synchronous Redis store on redis-py."""

    kind = "redis"

    def __init__(self, redis_url: str = "redis://localhost:6379", ttl_seconds: int = 3600) -> None:
        raise NotImplementedError("SyncRedisStore is not implemented yet")
