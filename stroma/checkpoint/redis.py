"""Redis stores: ``RedisStore`` (redis.asyncio) and its sync twin ``SyncRedisStore`` (redis-py).

Layout (one hash per run, so a run's checkpoints live under exactly one key)::

    <prefix>:{<run_id percent-encoded>}:ckpt   hash  p:<node_id> -> JSON payload
                                                     r:<node_id> -> schema reference
    <prefix>:{<run_id percent-encoded>}:lease  string owner (PX expiry)
    <prefix>:{<run_id percent-encoded>}:fence  hash  token, owner (the lease's fencing token)
    <prefix>:{<prefix>:runs}:all               zset  run_id -> last update (the run index)
    <prefix>:{<prefix>:runs}:status:<status>   zset  run_id -> last update, per status

- Keys are safe for any run_id: it is percent-encoded (only ``A-Z a-z 0-9 - _ . ~`` stay as
  they are), so glob characters, colons, braces or unicode can never reach another run's key,
  and the braces make it a cluster hash tag (a run's keys share a slot).
- A save is one round trip: one Lua script (``EVALSHA``) that checks the fencing token when one
  is given, then ``HSET`` + ``EXPIRE``, so a checkpoint and (for ``commit_raw``) the run's
  progress record land together or not at all, and never after the run was taken over.
- Leases: a Lua script sets the lease key and, when the lease changes owner, increments the
  run's fencing token (its own key: it outlives the lease key's expiry and ``delete``).
- Every write refreshes the TTL (``ttl_seconds``) of the run's hash, every lease renewal that
  of its fencing token.
- ``delete(run_id)`` is one ``DEL`` of the run's hash (plus its index entries): no ``KEYS``, no
  ``SCAN MATCH``. Leases are left to expire on their own (a live worker may hold one).
- Run index (``list_runs``): sorted sets scored by last update, all in one slot. A manifest
  write (a run or resume starting) and a progress write with a final status update it right
  after the run's own write, in a second script: it is NOT atomic with the commit (on Redis
  Cluster it lives on another node). ``list_runs`` therefore reads each indexed run's own
  progress record and manifest and filters on those, so a stale index entry never shows a
  wrong status; commits of running nodes leave the index alone (their score is a lower bound
  of the run's last update, which is all ``updated_before`` needs). A listing drops the index
  entries of runs whose records expired (``ttl_seconds``) as it meets them.
- Redis Cluster: ``cluster=True`` uses redis-py's ``RedisCluster`` (the URL names any node).
  A run's keys share its hash tag, so every script touches one slot: commits stay atomic.
- Sockets time out after ``socket_timeout`` (5 s) with no retry on a timeout, so a hung server
  fails an attempt within seconds; a refused connection is retried once.
- ``WRONGTYPE`` (a key of Stroma's holding another kind of value) and other data errors raise
  :class:`~stroma.errors.StoreDataError` (TERMINAL) naming the key.
- One connection pool per store (per event loop for the async store), reused by every call.
- The password never leaves the store: repr, log lines and errors show ``redis://:****@host``.
- Connection failures raise :class:`~stroma.errors.StoreUnavailableError` (RECOVERABLE: the node
  is retried, and at worst the run ends PARTIAL with its last good checkpoint intact).

``redis`` is imported when a store is created, never by ``import stroma``; install it with
``pip install 'stroma[redis]'``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from stroma._schemas import schema_ref
from stroma.checkpoint._codec import (
    JsonStoreMixin,
    RunRecord,
    SyncListMixin,
    commit_records,
    decode_payload,
    encode_checkpoint,
    index_fields,
    lease_lost,
    matches,
    run_record,
)
from stroma.errors import (
    CheckpointDataError,
    ConfigurationError,
    MissingExtraError,
    StoreDataError,
    StoreUnavailableError,
)

__all__ = ["RedisStore", "SyncRedisStore", "redact_url"]

logger = logging.getLogger("stroma")

_PROGRESS_NODE = "__stroma_progress__"  # == stroma.checkpoint.PROGRESS_NODE (no import cycle)
_PROGRESS_REF = "stroma.checkpoint:RunProgress"
_RUN_NODE = "__stroma_run__"
_STATUSES = ("running", "COMPLETED", "RESUMED", "FAILED", "PARTIAL", "CANCELLED", "INTERRUPTED")
_DATA_ERRORS = ("WRONGTYPE", "ERR value is not", "ERR hash value is not")
_LOST = "STROMA_LEASE_LOST"

# KEYS[1] run hash, KEYS[2] fence; ARGV[1] fencing token or '', ARGV[2] TTL seconds or '',
# ARGV[3..] fields
_WRITE_LUA = """
if ARGV[1] ~= '' then
  local current = redis.call('HGET', KEYS[2], 'token')
  if current ~= ARGV[1] then
    return redis.error_reply('STROMA_LEASE_LOST ' .. (current or '0'))
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if ARGV[2] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS[1] lease, KEYS[2] fence; ARGV[1] owner, ARGV[2] PX ms, ARGV[3] TTL seconds or ''
_ACQUIRE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local token = tonumber(redis.call('HGET', KEYS[2], 'token') or '0')
if token == 0 or redis.call('HGET', KEYS[2], 'owner') ~= ARGV[1] then
  token = redis.call('HINCRBY', KEYS[2], 'token', 1)
  redis.call('HSET', KEYS[2], 'owner', ARGV[1])
end
if ARGV[3] ~= '' then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
return token
"""

# KEYS[1] all, KEYS[2..] status sets (the run's own first when ARGV[2] ~= ''); ARGV[1] run id,
# ARGV[2] score or '' (remove the run from the index)
_INDEX_LUA = """
local first = 2
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  first = 3
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
for i = first, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
"""

# KEYS every index set; ARGV run id, score pairs: drop each run whose score has not grown since
# a listing found its records gone (expired), so a run started again meanwhile stays indexed
_PRUNE_LUA = """
for i = 1, #ARGV, 2 do
  for k = 1, #KEYS do
    local score = redis.call('ZSCORE', KEYS[k], ARGV[i])
    if score and tonumber(score) <= tonumber(ARGV[i + 1]) then
      redis.call('ZREM', KEYS[k], ARGV[i])
    end
  end
end
return 1
"""

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
    try:
        return urllib.parse.quote(run_id, safe="")
    except UnicodeEncodeError as exc:
        raise StoreDataError(
            f"Redis cannot key the run id {run_id[:80]!r}: it holds a lone surrogate at index "
            f"{exc.start} (not UTF-8 text); use run ids that are valid unicode text",
            key=run_id[:200],
        ) from None


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
    """What the async and sync Redis stores share: keys, TTL, redaction, error mapping, and the
    arguments of every script (the twins only send them)."""

    kind = "redis"

    def __init__(
        self,
        redis_url: str,
        ttl_seconds: int | None,
        key_prefix: str,
        cluster: bool,
        client_kwargs: dict[str, Any],
    ) -> None:
        if not isinstance(redis_url, str) or "://" not in redis_url:
            raise ConfigurationError(
                f"redis_url must be a URL such as 'redis://localhost:6379/0', got "
                f"{redact_url(str(redis_url))!r}"
            )
        if not isinstance(cluster, bool):
            raise ConfigurationError(f"cluster={cluster!r} must be True or False")
        self._redis = _import_redis(type(self).__name__)
        self._url = redis_url
        self.url = redact_url(redis_url)
        """The store's URL with the password redacted (safe to log)."""
        self._secrets = url_secrets(redis_url)
        self.ttl_seconds = _check_ttl(ttl_seconds)
        self.key_prefix = _check_prefix(key_prefix)
        self.cluster = cluster
        """Whether the store talks to a Redis Cluster (redis-py's ``RedisCluster``)."""
        self._client_kwargs = client_kwargs
        self._ttl_arg = "" if self.ttl_seconds is None else str(self.ttl_seconds)

    def __repr__(self) -> str:
        cluster = ", cluster=True" if self.cluster else ""
        return f"{type(self).__name__}({self.url!r}, ttl_seconds={self.ttl_seconds}{cluster})"

    def _pool_kwargs(self, retry_class: Any) -> dict[str, Any]:
        from redis.backoff import NoBackoff  # noqa: PLC0415 - optional dependency

        exceptions = self._redis.exceptions
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": 5.0,
            "socket_timeout": 5.0,
            "max_connections": 64,
            "health_check_interval": 0,
            # one reconnect on a refused/reset connection; a timeout is not retried (a hung
            # server must fail the attempt within socket_timeout), and Stroma retries the node
            "retry": retry_class(NoBackoff(), 1, supported_errors=(exceptions.ConnectionError,)),
        }
        kwargs.update(self._client_kwargs)
        return kwargs

    def _cluster_kwargs(self, retry_class: Any) -> dict[str, Any]:
        kwargs = self._pool_kwargs(retry_class)
        kwargs.pop("health_check_interval", None)
        return kwargs

    def hash_key(self, run_id: str) -> str:
        """The Redis key of the hash holding every checkpoint of ``run_id``."""
        return f"{self.key_prefix}:{{{_encode_run_id(run_id)}}}:ckpt"

    def lease_key(self, run_id: str) -> str:
        """The Redis key of the lease on ``run_id``."""
        return f"{self.key_prefix}:{{{_encode_run_id(run_id)}}}:lease"

    def fence_key(self, run_id: str) -> str:
        """The Redis key of ``run_id``'s fencing token (and the owner it was issued to)."""
        return f"{self.key_prefix}:{{{_encode_run_id(run_id)}}}:fence"

    def index_key(self, status: str | None = None) -> str:
        """The sorted set indexing runs (all of them, or those last seen with ``status``)."""
        tag = f"{self.key_prefix}:{{{self.key_prefix}:runs}}"
        return f"{tag}:all" if status is None else f"{tag}:status:{status}"

    @contextmanager
    def _mapped(self, action: str, key: str = "") -> Iterator[None]:
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
        except UnicodeEncodeError as exc:
            raise StoreDataError(
                f"Redis cannot {action}: {exc.object[:80]!r} holds a lone surrogate at index "
                f"{exc.start} (not UTF-8 text); use ids that are valid unicode text",
                key=key,
            ) from None
        except exceptions.ResponseError as exc:
            message = scrub(str(exc), self._secrets)
            if message.startswith(_DATA_ERRORS):
                raise StoreDataError(
                    f"Redis at {self.url} refused to {action}: key '{key}' holds data Stroma "
                    f"did not write ({message}). Another application uses this key: give "
                    "the store its own key_prefix (or database), or delete the key",
                    key=key,
                ) from None
            raise StoreUnavailableError(
                f"Redis at {self.url} failed to {action} ({type(exc).__name__}: {message})"
            ) from None
        except exceptions.RedisError as exc:
            raise StoreUnavailableError(
                f"Redis at {self.url} failed to {action} "
                f"({type(exc).__name__}: {scrub(str(exc), self._secrets)})"
            ) from None

    def _set_fields(self, node_id: str, payload: str, ref: str) -> list[str]:
        return [f"p:{node_id}", payload, f"r:{node_id}", ref]

    def _write_args(
        self, run_id: str, records: list[tuple[str, str, str]], token: int | None
    ) -> dict[str, list[Any]]:
        """The keys and arguments of ``_WRITE_LUA`` writing ``records`` (node, payload, ref)."""
        args: list[Any] = ["" if token is None else str(token), self._ttl_arg]
        for node_id, payload, ref in records:
            args.extend(self._set_fields(node_id, payload, ref))
        return {"keys": [self.hash_key(run_id), self.fence_key(run_id)], "args": args}

    def _index_args(
        self, run_id: str, records: list[tuple[str, str, str]]
    ) -> tuple[list[str], list[Any]] | None:
        """Keys and arguments of ``_INDEX_LUA`` for a write of ``records``, or None when the
        write leaves the index alone (a running node's commit)."""
        for node_id, payload, _ref in records:
            entry = index_fields(node_id, payload)
            if entry is None or (node_id == _PROGRESS_NODE and entry[1] == "running" and len(records) > 1):
                continue
            status = entry[1]
            keys = [self.index_key(), self.index_key(status)]
            keys += [self.index_key(s) for s in _STATUSES if s != status]
            return keys, [run_id, repr(entry[2])]
        return None

    def _unindex_args(self, run_id: str) -> tuple[list[str], list[Any]]:
        return self._index_keys(), [run_id, ""]

    def _index_keys(self) -> list[str]:
        return [self.index_key(), *(self.index_key(s) for s in _STATUSES)]

    def _lost(self, run_id: str, token: int | None, exc: Exception) -> Exception:
        """LeaseLostError for a write script's refusal, else ``exc`` as it was."""
        text = str(exc)
        if token is not None and text.startswith(_LOST):
            current = text[len(_LOST) :].strip()
            return lease_lost(run_id, token, int(current) if current.isdigit() else current)
        return exc

    def _list_source(self, status: str | None, updated_before: float | None) -> tuple[str, str]:
        """The index key and the exclusive upper score a listing reads."""
        top = "+inf" if updated_before is None else f"({updated_before!r}"
        return self.index_key(status), top

    def _records(
        self,
        page: list[tuple[str, float]],
        got: list[Any],
        filters: tuple[str | None, str | None, float | None],
    ) -> tuple[list[RunRecord], dict[str, list[Any]] | None]:
        """The records of a page of the index (run id, score) from their reads (progress and
        manifest payloads, then whether the lease exists), filtered on what they hold; and the
        call of ``_PRUNE_LUA`` dropping the runs whose records are gone (expired), if any."""
        found: list[RunRecord] = []
        gone: list[Any] = []
        for i, (run_id, score) in enumerate(page):
            (progress, manifest), leased = got[2 * i], got[2 * i + 1]
            if progress is None and manifest is None:
                gone += [run_id, repr(score)]
                continue
            record = run_record(run_id, progress, manifest, bool(leased))
            if record is not None and matches(record, *filters):
                found.append(record)
        return found, ({"keys": self._index_keys(), "args": gone} if gone else None)

    def _read_run(self, pipe: Any, run_id: str) -> None:
        """Queue the reads ``_records`` needs for one run on ``pipe``."""
        pipe.hmget(self.hash_key(run_id), [f"p:{_PROGRESS_NODE}", f"p:{_RUN_NODE}"])
        pipe.exists(self.lease_key(run_id))

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


_SCRIPTS = {
    "write": _WRITE_LUA,
    "acquire": _ACQUIRE_LUA,
    "index": _INDEX_LUA,
    "release": _RELEASE_LUA,
    "prune": _PRUNE_LUA,
}


def _page(members: list[Any]) -> list[tuple[str, float]]:
    """(run id, score) pairs of a ``ZRANGEBYSCORE ... WITHSCORES`` reply."""
    return [
        (m.decode("utf-8", "replace") if isinstance(m, bytes) else str(m), float(score))
        for m, score in members
    ]


def _by_update(records: list[RunRecord], limit: int) -> list[RunRecord]:
    unique = {r.run_id: r for r in records}  # a page re-read after a prune may repeat a run
    return sorted(unique.values(), key=lambda r: (r.updated_at, r.run_id))[:limit]


class RedisStore(_RedisBase, JsonStoreMixin):
    """An async checkpoint store on Redis (``redis.asyncio``).

    ``redis_url`` e.g. ``redis://:password@host:6379/0``; ``ttl_seconds`` is refreshed on every
    write of a run (None: never expire); ``key_prefix`` namespaces the keys; ``cluster=True``
    talks to a Redis Cluster through redis-py's ``RedisCluster`` (``redis_url`` names any of
    its nodes); ``client_kwargs`` go to the connection pool (``max_connections``,
    ``socket_timeout`` ...).
    """

    def __init__(
        self,
        redis_url: str = "redis://localhost:6379",
        ttl_seconds: int | None = 3600,
        *,
        key_prefix: str = "stroma",
        cluster: bool = False,
        **client_kwargs: Any,
    ) -> None:
        super().__init__(redis_url, ttl_seconds, key_prefix, cluster, client_kwargs)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _conn(self) -> tuple[Any, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        got = self._clients.get(loop)
        if got is None:
            from redis.asyncio.retry import Retry  # noqa: PLC0415 - optional dependency

            aio = self._redis.asyncio
            if self.cluster:
                client = aio.RedisCluster.from_url(self._url, **self._cluster_kwargs(Retry))
            else:
                kwargs = self._pool_kwargs(Retry)
                max_connections = kwargs.pop("max_connections")
                pool = aio.BlockingConnectionPool.from_url(
                    self._url, max_connections=max_connections, timeout=10, **kwargs
                )
                client = aio.Redis(connection_pool=pool)
            scripts = {name: client.register_script(lua) for name, lua in _SCRIPTS.items()}
            got = self._clients[loop] = (client, scripts)
        return got

    def client(self) -> Any:
        """The ``redis.asyncio`` client of the running event loop (one pool per loop)."""
        return self._conn()[0]

    async def aclose(self) -> None:
        """Close the connection pool of the running event loop."""
        got = self._clients.pop(asyncio.get_running_loop(), None)
        if got is not None:
            await got[0].aclose()
            pool = getattr(got[0], "connection_pool", None)
            if pool is not None:
                await pool.disconnect()

    async def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
        """Save a JSON payload and its schema reference (one script, one round trip)."""
        await self._write(run_id, commit_records(node_id, payload, ref, None), None, "save a checkpoint")

    async def commit_raw(
        self,
        run_id: str,
        node_id: str,
        payload: str,
        ref: str,
        progress: str,
        token: int | None = None,
    ) -> None:
        """Write a node's checkpoint and the run's progress record atomically (one script);
        with ``token``, refused (LeaseLostError) unless it is the run's current fencing token."""
        records = commit_records(node_id, payload, ref, progress)
        await self._write(run_id, records, token, "commit a checkpoint")

    async def _write(
        self, run_id: str, records: list[tuple[str, str, str]], token: int | None, action: str
    ) -> None:
        key = self.hash_key(run_id)
        _client, scripts = self._conn()
        with self._mapped(action, key):
            try:
                await scripts["write"](**self._write_args(run_id, records, token))
            except self._redis.exceptions.ResponseError as exc:
                raise self._lost(run_id, token, exc) from None
        index = self._index_args(run_id, records)
        if index is not None:
            try:
                with self._mapped("index a run", index[0][0]):
                    await scripts["index"](keys=index[0], args=index[1])
            except StoreUnavailableError as exc:
                logger.warning("run %s: written, but not indexed for list_runs (%s)", run_id, exc)

    async def load_raw(self, run_id: str, node_id: str) -> tuple[str, str] | None:
        """The stored payload and schema reference of a checkpoint, or None (one HMGET)."""
        key = self.hash_key(run_id)
        with self._mapped("load a checkpoint", key):
            got = await self.client().hmget(key, [f"p:{node_id}", f"r:{node_id}"])
        return self._decode(run_id, node_id, got)

    async def ttl_remaining(self, run_id: str) -> float | None:
        """Seconds until ``run_id``'s checkpoints expire; None if they never do or don't exist."""
        with self._mapped("read a TTL"):
            ms = await self.client().pttl(self.hash_key(run_id))
        return None if ms < 0 else ms / 1000.0

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> int:
        """Take the run's lease unless another owner holds it; returns its fencing token (+1
        whenever the lease changes owner), or 0 when refused. One script."""
        keys = [self.lease_key(run_id), self.fence_key(run_id)]
        px = max(1, int(ttl_s * 1000))
        with self._mapped("take a lease", keys[0]):
            got = await self._conn()[1]["acquire"](keys=keys, args=[owner, px, self._ttl_arg])
        return int(got)

    async def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease back: compare-and-delete in one Lua call, so only its owner can."""
        key = self.lease_key(run_id)
        with self._mapped("release a lease", key):
            await self._conn()[1]["release"](keys=[key], args=[owner])

    async def delete(self, run_id: str) -> None:
        """Delete every checkpoint of ``run_id``: one DEL of the run's own hash (and its index
        entries)."""
        key = self.hash_key(run_id)
        client, scripts = self._conn()
        with self._mapped("delete a run", key):
            await client.delete(key)
            keys, args = self._unindex_args(run_id)
            await scripts["index"](keys=keys, args=args)

    async def _list_runs(
        self, status: str | None, pipeline: str | None, updated_before: float | None, limit: int
    ) -> list[RunRecord]:
        client = self.client()
        key, top = self._list_source(status, updated_before)
        found: list[RunRecord] = []
        offset = 0
        with self._mapped("list runs", key):
            while len(found) < limit:
                page = _page(
                    await client.zrangebyscore(key, "-inf", top, start=offset, num=limit, withscores=True)
                )
                if not page:
                    break
                offset += len(page)
                pipe = client.pipeline(transaction=False)
                for run_id, _score in page:
                    self._read_run(pipe, run_id)
                records, prune = self._records(page, await pipe.execute(), (status, pipeline, updated_before))
                found += records
                if prune is not None:
                    await self._conn()[1]["prune"](**prune)
                    offset -= len(prune["args"]) // 2
        return _by_update(found, limit)


class SyncRedisStore(_RedisBase, SyncListMixin):
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
        cluster: bool = False,
        **client_kwargs: Any,
    ) -> None:
        super().__init__(redis_url, ttl_seconds, key_prefix, cluster, client_kwargs)
        from redis.retry import Retry  # noqa: PLC0415 - optional dependency

        if cluster:
            self._client = self._redis.RedisCluster.from_url(redis_url, **self._cluster_kwargs(Retry))
        else:
            kwargs = self._pool_kwargs(Retry)
            max_connections = kwargs.pop("max_connections")
            pool = self._redis.BlockingConnectionPool.from_url(
                redis_url, max_connections=max_connections, timeout=10, **kwargs
            )
            self._client = self._redis.Redis(connection_pool=pool)
        self._scripts = {name: self._client.register_script(lua) for name, lua in _SCRIPTS.items()}

    def __enter__(self) -> SyncRedisStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def client(self) -> Any:
        """The shared ``redis.Redis`` (or ``RedisCluster``) client."""
        return self._client

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()

    def save_raw(self, run_id: str, node_id: str, payload: str, ref: str) -> None:
        """Save a JSON payload and its schema reference (one script, one round trip)."""
        self._write(run_id, commit_records(node_id, payload, ref, None), None, "save a checkpoint")

    def commit_raw(
        self,
        run_id: str,
        node_id: str,
        payload: str,
        ref: str,
        progress: str,
        token: int | None = None,
    ) -> None:
        """Write a node's checkpoint and the run's progress record atomically (one script);
        with ``token``, refused (LeaseLostError) unless it is the run's current fencing token."""
        self._write(run_id, commit_records(node_id, payload, ref, progress), token, "commit a checkpoint")

    def _write(
        self, run_id: str, records: list[tuple[str, str, str]], token: int | None, action: str
    ) -> None:
        key = self.hash_key(run_id)
        with self._mapped(action, key):
            try:
                self._scripts["write"](**self._write_args(run_id, records, token))
            except self._redis.exceptions.ResponseError as exc:
                raise self._lost(run_id, token, exc) from None
        index = self._index_args(run_id, records)
        if index is not None:
            try:
                with self._mapped("index a run", index[0][0]):
                    self._scripts["index"](keys=index[0], args=index[1])
            except StoreUnavailableError as exc:
                logger.warning("run %s: written, but not indexed for list_runs (%s)", run_id, exc)

    def load_raw(self, run_id: str, node_id: str) -> tuple[str, str] | None:
        """The stored payload and schema reference of a checkpoint, or None (one HMGET)."""
        key = self.hash_key(run_id)
        with self._mapped("load a checkpoint", key):
            got = self._client.hmget(key, [f"p:{node_id}", f"r:{node_id}"])
        return self._decode(run_id, node_id, got)

    def ttl_remaining(self, run_id: str) -> float | None:
        """Seconds until ``run_id``'s checkpoints expire; None if they never do or don't exist."""
        with self._mapped("read a TTL"):
            ms = self._client.pttl(self.hash_key(run_id))
        return None if ms < 0 else float(ms) / 1000.0

    def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> int:
        """Take the run's lease unless another owner holds it; returns its fencing token (+1
        whenever the lease changes owner), or 0 when refused. One script."""
        keys = [self.lease_key(run_id), self.fence_key(run_id)]
        px = max(1, int(ttl_s * 1000))
        with self._mapped("take a lease", keys[0]):
            return int(self._scripts["acquire"](keys=keys, args=[owner, px, self._ttl_arg]))

    def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease back: compare-and-delete in one Lua call, so only its owner can."""
        key = self.lease_key(run_id)
        with self._mapped("release a lease", key):
            self._scripts["release"](keys=[key], args=[owner])

    def delete(self, run_id: str) -> None:
        """Delete every checkpoint of ``run_id``: one DEL of the run's own hash (and its index
        entries)."""
        key = self.hash_key(run_id)
        with self._mapped("delete a run", key):
            self._client.delete(key)
            keys, args = self._unindex_args(run_id)
            self._scripts["index"](keys=keys, args=args)

    def _list_runs(
        self, status: str | None, pipeline: str | None, updated_before: float | None, limit: int
    ) -> list[RunRecord]:
        key, top = self._list_source(status, updated_before)
        found: list[RunRecord] = []
        offset = 0
        with self._mapped("list runs", key):
            while len(found) < limit:
                page = _page(
                    self._client.zrangebyscore(key, "-inf", top, start=offset, num=limit, withscores=True)
                )
                if not page:
                    break
                offset += len(page)
                pipe = self._client.pipeline(transaction=False)
                for run_id, _score in page:
                    self._read_run(pipe, run_id)
                records, prune = self._records(page, pipe.execute(), (status, pipeline, updated_before))
                found += records
                if prune is not None:
                    self._scripts["prune"](**prune)
                    offset -= len(prune["args"]) // 2
        return _by_update(found, limit)

    def save(self, run_id: str, node_id: str, state: BaseModel) -> None:
        """Save ``state`` as JSON with its schema reference."""
        self.save_raw(run_id, node_id, encode_checkpoint(node_id, state), schema_ref(type(state)))

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
