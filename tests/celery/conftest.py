"""Fixtures for the Celery tests.

- ``rabbitmq_url``: ``CELERY_BROKER_URL``, else the RabbitMQ on 127.0.0.1:5672 (guest/guest) if
  it accepts an AMQP connection; else a skip naming what is missing, or a failure when
  ``STROMA_REQUIRE_SERVICES`` (comma-separated, set by ``.ci/run``) lists ``rabbitmq``, so CI
  cannot pass by skipping.
"""

from __future__ import annotations

import os

import pytest

LOCAL_BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def _required(service: str) -> bool:
    return service in {s.strip() for s in os.environ.get("STROMA_REQUIRE_SERVICES", "").split(",")}


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """A broker that accepts an AMQP connection, or a skip (a failure where CI requires it)."""
    kombu = pytest.importorskip("kombu")
    url = os.environ.get("CELERY_BROKER_URL") or LOCAL_BROKER
    try:
        with kombu.Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        reason = (
            f"no RabbitMQ: {url.split('@')[-1]} refused an AMQP connection ({type(exc).__name__}); "
            "start one with `rabbitmq-server -detached` or set CELERY_BROKER_URL"
        )
        if _required("rabbitmq"):
            pytest.fail(reason + " (STROMA_REQUIRE_SERVICES lists rabbitmq)")
        pytest.skip(reason)
    return url
