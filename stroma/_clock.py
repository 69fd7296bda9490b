"""The clock every run reads: wall time for timestamps, monotonic time for durations, and sleep.

Tests swap it for :class:`stroma.testing.FakeClock` (``stroma.testing.use_clock``) so backoff and
latency budgets are checked without sleeping.
"""

from __future__ import annotations

import asyncio
import random
import time as _time
from typing import Protocol


class Clock(Protocol):
    """What the engine needs of time."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for durations."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.perf_counter)

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(seconds)


_current: Clock = SystemClock()
_rng = random.Random()


def current_clock() -> Clock:
    """The clock runs use now."""
    return _current


def set_clock(clock: Clock) -> Clock:
    """Install ``clock``; returns the previous one."""
    global _current
    previous, _current = _current, clock
    return previous


def jitter_rng() -> random.Random:
    """The random source of backoff jitter (seedable by tests)."""
    return _rng
