"""Reconnect delays: exponential with full jitter, reset only after a connection that lasted.

Resetting on every CONNACK let a denied login (or two instances stealing one
session from each other) reconnect many times a second; full jitter keeps
instances that lost the broker together from coming back in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """The wait before each reconnect; ``next_delay`` is told how long the last connection stayed up."""

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 15.0,
        stable_after_s: float = 30.0,
        draw: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._stable_after_s = stable_after_s
        self._draw = draw
        self._attempt = 0

    def next_delay(self, uptime_s: float) -> float:
        """Seconds to wait, drawn from [0, ceiling]; the ceiling doubles unless the connection lasted."""
        if uptime_s >= self._stable_after_s:
            self._attempt = 0
        ceiling = min(self._max_s, self._initial_s * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return self._draw(0.0, ceiling)
