"""Exponential backoff with full jitter, shared by every retry loop of the agent.

Full jitter (a delay drawn uniformly between 0 and the exponential ceiling)
keeps a fleet that lost the broker together from coming back in lockstep. The
failure count is forgotten only when the caller says an attempt lasted, so a
peer that accepts and then drops us at once (a denied device, two agents
taking one client id from each other) still backs off to the ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random

_MAX_EXPONENT = 32  # 2**32 times any sane initial delay is past any ceiling; avoids float overflow


def jitter_ceiling(initial_s: float, max_s: float, failures: int) -> float:
    """The upper bound of the delay after ``failures`` failures in a row (0 for the first retry)."""
    return min(max_s, math.ldexp(initial_s, min(failures, _MAX_EXPONENT)))


class Backoff:
    """Counts failures in a row and draws the next delay."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next attempt."""
        ceiling = jitter_ceiling(self.initial_s, self.max_s, self.failures)
        self.failures += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        """An attempt succeeded (and, where it matters, lasted): start again from ``initial_s``."""
        self.failures = 0


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
