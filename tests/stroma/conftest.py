"""Shared models and a fake clock for the core runtime tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from stroma.testing import FakeClock, seed_jitter, use_clock


class Doc(BaseModel):
    """A document entering a pipeline."""

    text: str


class Summary(BaseModel):
    """A node's output."""

    summary: str
    word_count: int


class Count(BaseModel):
    """A number flowing through a chain."""

    n: int


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """Runs inside the test use a clock that records sleeps instead of sleeping."""
    seed_jitter(1234)
    fake = FakeClock()
    with use_clock(fake):
        yield fake
