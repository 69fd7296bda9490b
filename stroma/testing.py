"""Test support that ships with Stroma: a fake clock, event capture, and the store conformance suite.

Example::

    from stroma.testing import FakeClock, capture_events, use_clock

    with use_clock(FakeClock()) as clock, capture_events() as events:
        result = await runner.run([flaky], State(x=1))
    assert clock.slept  # the backoff delays, without sleeping
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

from stroma import events as ev
from stroma._clock import Clock, jitter_rng, set_clock
from stroma.hooks import NodeHooks, register_hooks, unregister_hooks

__all__ = ["CapturedEvents", "FakeClock", "capture_events", "seed_jitter", "use_clock"]


class FakeClock:
    """A clock that never sleeps: ``sleep`` advances time and records the delay.

    ``advance(s)`` moves time forward (simulate a slow node); ``slept`` lists every sleep.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0
        self.slept: list[float] = []

    def time(self) -> float:
        """Wall-clock seconds."""
        return self._wall

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        self._wall += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        """Record ``seconds`` and advance time by it, without waiting."""
        self.slept.append(seconds)
        self.advance(seconds)


@contextlib.contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Make runs started inside the block use ``clock``."""
    previous = set_clock(clock)
    try:
        yield clock
    finally:
        set_clock(previous)


def seed_jitter(seed: int) -> None:
    """Make backoff jitter reproducible."""
    rng: random.Random = jitter_rng()
    rng.seed(seed)


class CapturedEvents(list[ev.LifecycleEvent]):
    """Events captured by :func:`capture_events`, with helpers to query them."""

    def of(self, kind: type[ev.LifecycleEvent]) -> list[ev.LifecycleEvent]:
        """Events of one type, in order."""
        return [e for e in self if isinstance(e, kind)]

    def kinds(self) -> list[str]:
        """The event type names, in order."""
        return [e.kind for e in self]


@contextlib.contextmanager
def capture_events() -> Iterator[CapturedEvents]:
    """Capture every lifecycle event of every run started inside the block."""
    captured = CapturedEvents()
    hooks = NodeHooks(on_event=captured.append)
    register_hooks(hooks)
    try:
        yield captured
    finally:
        unregister_hooks(hooks)


# -- the store conformance suite (stroma._conformance) ------------------------------------------

from stroma._conformance import (  # noqa: E402 - appended re-export block
    CONFORMANCE_CHECKS,
    ConformanceError,
    ConformanceState,
    ConformanceTarget,
    check_store,
    run_conformance_check,
)

__all__ += [
    "CONFORMANCE_CHECKS",
    "ConformanceError",
    "ConformanceState",
    "ConformanceTarget",
    "check_store",
    "run_conformance_check",
]
