"""Redis stores: ``RedisStore`` (redis.asyncio) and its sync twin ``SyncRedisStore`` (redis-py).

Layout (one hash per run, so a run's checkpoints live under exactly one key)::

    <prefix>:{<run_id percent-encoded>}:ckpt   hash  p:<node_id> -> JSON payload
                                                     r:<node_id> -> schema reference
    <prefix>:{<run_id percent-encoded>}:lease  string owner (SET NX PX)

- Keys are safe for any run_id: it is percent-encoded (only ``A-Z a-z 0-9 - _ . ~`` stay as
  they are), so glob characters, colons, braces or unicode can never reach another run's key,
  and the braces make it a cluster hash tag (a run's keys share a slot).
- A save is one round trip: ``MULTI; HSET; EXPIRE; EXEC`` sent as one pipelined transaction, so a
  checkpoint and (for ``commit_raw``) the run's progress record land together or not at all.
- Every write refreshes the TTL (``ttl_seconds``) of the run's hash; the lease has its own.
- ``delete(run_id)`` is one ``DEL`` of the run's hash: no ``KEYS``, no ``SCAN MATCH``.
  Leases are left to expire on their own (a live worker may hold one).
- One connection pool per store (per event loop for the async store), reused by every call.
- The password never leaves the store: repr, log lines and errors show ``redis://:****@host``.
- Connection failures raise :class:`~stroma.errors.StoreUnavailableError` (RECOVERABLE: the node
  is retried, and at worst the run ends PARTIAL with its last good checkpoint intact).

``redis`` is imported when a store is created, never by ``import stroma``; install it with
``pip install 'stroma[redis]'``.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from stroma._schemas import schema_ref
from stroma.checkpoint._codec import JsonStoreMixin, decode_payload
from stroma.errors import (
    CheckpointDataError,
    ConfigurationError,
    MissingExtraError,
    StoreUnavailableError,
)

__all__ = ["RedisStore", "SyncRedisStore", "redact_url"]

_PROGRESS_NODE = "__stroma_progress__"  # == stroma.checkpoint.PROGRESS_NODE (no import cycle)
_PROGRESS_REF = "stroma.checkpoint:RunProgress"

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_SECRET_PARAM = re.compile(r"(?i)((?:password|passwd|pwd)=)[^&;\s]*")


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo or ``password=`` parameter) replaced by ``****``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:****@{hostport}" if sep else f"{userinfo}@{hostport}"
    query = _SECRET_PARAM.sub(r"\1****", parts.query)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The secret strings in ``url`` (raw and percent-decoded), to scrub from messages."""
    found: list[str] = []
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password:
            found += [parts.password, urllib.parse.unquote(parts.password)]
    except ValueError:
        pass
    for match in re.finditer(r"(?i)(?:password|passwd|pwd)=([^&;\s]*)", url):
        found += [match.group(1), urllib.parse.unquote(match.group(1))]
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``****``."""
    for secret in secrets:
        text = text.replace(secret, "****")
    return text


def _encode_run_id(run_id: str) -> str:
    if not isinstance(run_id, str):
        raise ConfigurationError(f"run_id must be a str, got {type(run_id).__name__}")
    return urllib.parse.quote(run_id, safe="")


def _check_ttl(ttl_seconds: int | None) -> int | None:
    if ttl_seconds is None:
        return None
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise ConfigurationError(
            f"ttl_seconds={ttl_seconds!r} must be a positive whole number of seconds (or None "
            "for checkpoints that never expire); e.g. ttl_seconds=3600"
        )
    return ttl_seconds


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"key_prefix={prefix!r} must be a non-empty string without braces; e.g. 'stroma'"
        )
    return prefix


def _import_redis(store: str) -> Any:
    try:
        import redis  # noqa: PLC0415 - optional dependency, imported on use
        import redis.asyncio  # noqa: PLC0415
    except ImportError:
        raise MissingExtraError(
            f"redis is required for {store}; install it with pip install 'stroma[redis]'"
        ) from None
    return redis


def _text(value: Any, what: str, run_id: str, node_id: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointDataError(
                f"checkpoint of node '{node_id}' in run '{run_id}' has a {what} that is not "
                "UTF-8 text; it was not written by Stroma"
            ) from None
    return str(value)


class _RedisBase:
    """What the async and sync Redis stores share: keys, TTL, redaction, error mapping."""

    kind = "redis"

    def __init__(
        self,
        redis_url: str,
        ttl_seconds: int | None,
        key_prefix: str,
        client_kwargs: dict[str, Any],
    ) -> None:
        if not isinstance(redis_url, str) or "://" not in redis_url:
            raise ConfigurationError(
                f"redis_url must be a URL such as 'redis://localhost:6379/0', got "
                f"{redact_url(str(redis_url))!r}"
            )
        self._redis = _import_redis(type(self).__name__)
        self._url = redis_url
        self.url = redact_url(redis_url)
        """The store's URL with the password redacted (safe to log)."""
        self._secrets = url_secrets(redis_url)
        self.ttl_seconds = _check_ttl(ttl_seconds)
        self.key_prefix = _check_prefix(key_prefix)
        self._client_kwargs = client_kwargs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, ttl_seconds={self.ttl_seconds})"

    def _pool_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": 5.0,
            "socket_timeout": 10.0,
            "max_connections": 64,
            "health_check_interval": 0,
        }
        kwargs.update(self._client_kwargs)
        return kwargs

    def hash_key(self, run_id: str) -> str:
        """The Redis key of the hash holding every checkpoint of ``run_id``."""
        return f"{self.key_prefix}:{{{_encode_run_id(run_id)}}}:ckpt"

    def lease_key(self, run_id: str) -> str:
        """The Redis key of the lease on ``run_id``."""
        return f"{self.key_prefix}:{{{_encode_run_id(run_id)}}}:lease"

    @contextmanager
    def _mapped(self, action: str) -> Iterator[None]:
        """Turn redis/socket failures into typed Stroma errors with a redacted message."""
        exceptions = self._redis.exceptions
        try:
            yield
        except exceptions.AuthenticationError as exc:
            raise ConfigurationError(
                f"Redis at {self.url} refused the credentials while trying to {action} "
                f"({scrub(str(exc), self._secrets)}); check the user and password in the URL"
            ) from None
        except (exceptions.ConnectionError, exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailableError(
                f"Redis at {self.url} is unavailable, could not {action} "
                f"({type(exc).__name__}: {scrub(str(exc), self._secrets)}); the node is "
                "retried. Check that the server is running and reachable"
            ) from None
        except exceptions.RedisError as exc:
            raise StoreUnavailableError(
                f"Redis at {self.url} failed to {action} "
                f"({type(exc).__name__}: {scrub(str(exc), self._secrets)})"
            ) from None

    def _set_fields(self, node_id: str, payload: str, ref: str) -> dict[str, str]:
        return {f"p:{node_id}": payload, f"r:{node_id}": ref}

    def _decode(self, run_id: str, node_id: str, got: list[Any]) -> tuple[Any, str] | None:
        payload, ref = got
        if payload is None:
            return None
        if ref is None:
            raise CheckpointDataError(
                f"checkpoint of node '{node_id}' in run '{run_id}' has no schema reference; "
                "it was not written by Stroma"
            )
        # bytes payloads go to decode_payload as they are (it refuses pickle and non-UTF-8)
        text_ref = _text(ref, "schema reference", run_id, node_id)
        return (payload if isinstance(payload, bytes) else str(payload)), text_ref


class RedisStore(_RedisBase, JsonStoreMixin):
    """An async checkpoint store on Redis (``redis.asyncio``).

    ``redis_url`` e.g. ``redis://:password@host:6379/0``; ``ttl_seconds`` is refreshed on every
    write of a run (None: never expire); ``key_prefix`` namespaces the keys; ``client_kwargs``
    go to the connection pool (``max_connections``, ``socket_timeout``, ``ssl`` ...).
    """

    def __init__(
        self,
        redis_url: str = "redis://localhost:6379",
        ttl_seconds: int | None = 3600,
        *,
        key_prefix: str = "stroma",
        **client_kwargs: Any,
    ) -> None:
        super().__init__(redis_url, ttl_seconds, key_prefix, client_kwargs)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._release_sha: str | None = None

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def client(self) -> Any:
        """The ``redis.asyncio.Redis`` client of the running event loop (one pool per loop)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            redis = self._redis
            from redis.asyncio.retry import Retry  # noqa: PLC0415 - optional dependency
            from redis.backoff import NoBackoff  # noqa: PLC0415

            kwargs = self._pool_kwargs()
            kwargs.setdefault("retry", Retry(NoBackoff(), 1))  # one reconnect; Stroma retries
            max_connections = kwargs.pop("max_connections")
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self._url, max_connections=max_connections, timeout=30, **kwargs
            )
            client = redis.asyncio.Redis(connection_pool=pool)
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the connection pool of the running event loop."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
            await client.connection_pool.disconnect()

    async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
        """Save a JSON payload and its schema reference (one MULTI/EXEC round trip)."""
        await self._write(run_id, self._set_fields(node_id, payload, ref), "save a checkpoint")

    async def commit_raw(self, run_id: str, node_id: str, payload: str, ref: str, progress: str) -> None:
        """Write a node's checkpoint and the run's progress record atomically (MULTI/EXEC)."""
        fields = {} if node_id == _PROGRESS_NODE else self._set_fields(node_id, payload, ref)
        fields.update(self._set_fields(_PROGRESS_NODE, progress, _PROGRESS_REF))
        await self._write(run_id, fields, "commit a checkpoint")

    async def _write(self, run_id: str, fields: dict[str, str], action: str) -> None:
        key = self.hash_key(run_id)
        with self._mapped(action):
            async with self.client().pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                if self.ttl_seconds is not None:
                    pipe.expire(key, self.ttl_seconds)
                await pipe.execute()

    async def load_raw(self, run_id: str, node_id: str) -> tuple[str, str] | None:
        """The stored payload and schema reference of a checkpoint, or None (one HMGET)."""
        with self._mapped("load a checkpoint"):
            got = await self.client().hmget(self.hash_key(run_id), [f"p:{node_id}", f"r:{node_id}"])
        return self._decode(run_id, node_id, got)

    async def ttl_remaining(self, run_id: str) -> float | None:
        """Seconds until ``run_id``'s checkpoints expire; None if they never do or don't exist."""
        with self._mapped("read a TTL"):
            ms = await self.client().pttl(self.hash_key(run_id))
        return None if ms < 0 else ms / 1000.0

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> bool:
        """Take the run's lease (``SET NX PX``) unless another owner holds it."""
        key = self.lease_key(run_id)
        px = max(1, int(ttl_s * 1000))
        with self._mapped("take a lease"):
            client = self.client()
            if await client.set(key, owner, nx=True, px=px):
                return True
            # re-entrant for the same owner (refresh its expiry)
            current = await client.get(key)
            if current is not None and _text(current, "lease", run_id, "") == owner:
                await client.pexpire(key, px)
                return True
            return False

    async def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease back: compare-and-delete in one Lua call, so only its owner can."""
        with self._mapped("release a lease"):
            await self.client().eval(_RELEASE_LUA, 1, self.lease_key(run_id), owner)

    async def delete(self, run_id: str) -> None:
        """Delete every checkpoint of ``run_id``: one DEL of the run's own hash."""
        with self._mapped("delete a run"):
            await self.client().delete(self.hash_key(run_id))


class SyncRedisStore(_RedisBase):
    """The synchronous twin of :class:`RedisStore` on redis-py (same keys, same guarantees).

    Thread-safe (redis-py's pool); :class:`~stroma.checkpoint.CheckpointManager` calls it from a
    worker thread so it never blocks the event loop.
    """

    def __init__(
        self,
        redis_url: str = "redis://localhost:6379",
        ttl_seconds: int | None = 3600,
        *,
        key_prefix: str = "stroma",
        **client_kwargs: Any,
    ) -> None:
        super().__init__(redis_url, ttl_seconds, key_prefix, client_kwargs)
        from redis.backoff import NoBackoff  # noqa: PLC0415 - optional dependency
        from redis.retry import Retry  # noqa: PLC0415

        kwargs = self._pool_kwargs()
        kwargs.setdefault("retry", Retry(NoBackoff(), 1))
        max_connections = kwargs.pop("max_connections")
        pool = self._redis.BlockingConnectionPool.from_url(
            redis_url, max_connections=max_connections, timeout=30, **kwargs
        )
        self._client = self._redis.Redis(connection_pool=pool)

    def __enter__(self) -> SyncRedisStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def client(self) -> Any:
        """The shared ``redis.Redis`` client."""
        return self._client

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
        self._client.connection_pool.disconnect()

    def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
        """Save a JSON payload and its schema reference (one MULTI/EXEC round trip)."""
        self._write(run_id, self._set_fields(node_id, payload, ref), "save a checkpoint")

    def commit_raw(self, run_id: str, node_id: str, payload: str, ref: str, progress: str) -> None:
        """Write a node's checkpoint and the run's progress record atomically (MULTI/EXEC)."""
        fields = {} if node_id == _PROGRESS_NODE else self._set_fields(node_id, payload, ref)
        fields.update(self._set_fields(_PROGRESS_NODE, progress, _PROGRESS_REF))
        self._write(run_id, fields, "commit a checkpoint")

    def _write(self, run_id: str, fields: dict[str, str], action: str) -> None:
        key = self.hash_key(run_id)
        with self._mapped(action), self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            if self.ttl_seconds is not None:
                pipe.expire(key, self.ttl_seconds)
            pipe.execute()

    def load_raw(self, run_id: str, node_id: str) -> tuple[str, str] | None:
        """The stored payload and schema reference of a checkpoint, or None (one HMGET)."""
        with self._mapped("load a checkpoint"):
            got = self._client.hmget(self.hash_key(run_id), [f"p:{node_id}", f"r:{node_id}"])
        return self._decode(run_id, node_id, got)

    def ttl_remaining(self, run_id: str) -> float | None:
        """Seconds until ``run_id``'s checkpoints expire; None if they never do or don't exist."""
        with self._mapped("read a TTL"):
            ms = self._client.pttl(self.hash_key(run_id))
        return None if ms < 0 else float(ms) / 1000.0

    def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> bool:
        """Take the run's lease (``SET NX PX``) unless another owner holds it."""
        key = self.lease_key(run_id)
        px = max(1, int(ttl_s * 1000))
        with self._mapped("take a lease"):
            if self._client.set(key, owner, nx=True, px=px):
                return True
            current = self._client.get(key)
            if current is not None and _text(current, "lease", run_id, "") == owner:
                self._client.pexpire(key, px)
                return True
            return False

    def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease back: compare-and-delete in one Lua call, so only its owner can."""
        with self._mapped("release a lease"):
            self._client.eval(_RELEASE_LUA, 1, self.lease_key(run_id), owner)

    def delete(self, run_id: str) -> None:
        """Delete every checkpoint of ``run_id``: one DEL of the run's own hash."""
        with self._mapped("delete a run"):
            self._client.delete(self.hash_key(run_id))

    def save(self, run_id: str, node_id: str, state: BaseModel) -> None:
        """Save ``state`` as JSON with its schema reference."""
        self.save_raw(run_id, node_id, state.model_dump_json(), schema_ref(type(state)))

    def save_typed(self, run_id: str, node_id: str, state: BaseModel, schema: type[BaseModel]) -> None:
        """Save ``state`` validated as ``schema``."""
        self.save(run_id, node_id, schema.model_validate(state.model_dump()))

    def load(self, run_id: str, node_id: str) -> BaseModel | None:
        """Load a checkpoint with its registered schema, or None (hostile data raises)."""
        return self.load_typed(run_id, node_id, None)

    def load_typed(self, run_id: str, node_id: str, schema: type[BaseModel] | None) -> BaseModel | None:
        """Load a checkpoint validated with ``schema`` (or its registered schema), or None."""
        raw = self.load_raw(run_id, node_id)
        if raw is None:
            return None
        return decode_payload(raw[0], raw[1], schema, run_id, node_id)
