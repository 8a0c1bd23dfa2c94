"""Exponential backoff with full jitter: the one retry policy of the agent and of the servers.

Full jitter (each delay drawn uniformly between 0 and a ceiling that doubles
per failure) keeps a fleet that lost the broker together from coming back in
lockstep. The failure count is forgotten only when an attempt lasted
(``next_delay(uptime_s)`` with ``uptime_s >= stable_after_s``) or when the
caller says it succeeded (``reset``): resetting on every CONNACK let a denied
login, or two processes taking one client id from each other, reconnect many
times a second.

It lives here because both the agent and the server packages depend on
fleet_schemas, and the agent may not import a server package. No clock is
read: the caller measures how long an attempt stayed up and passes it in.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable

_MAX_EXPONENT = 32  # 2**32 times any sane initial delay is past any ceiling; avoids float overflow


def jitter_ceiling(initial_s: float, max_s: float, failures: int) -> float:
    """The upper bound of the delay after ``failures`` failures in a row (0 for the first retry)."""
    return min(max_s, math.ldexp(initial_s, min(failures, _MAX_EXPONENT)))


class Backoff:
    """Counts failures in a row and draws the wait before the next attempt.

    Example::

        backoff = Backoff(0.5, 15.0, stable_after_s=30.0)
        while True:
            up_since = time.monotonic()
            try:
                await connect_and_consume()
            except ConnectionError:
                await asyncio.sleep(backoff.next_delay(time.monotonic() - up_since))
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        stable_after_s: float = math.inf,
        draw: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < initial_s <= max_s or stable_after_s <= 0:
            raise ValueError(
                f"backoff needs 0 < initial_s <= max_s and stable_after_s > 0,"
                f" got {initial_s}, {max_s} and {stable_after_s}"
            )
        self.initial_s = initial_s
        self.max_s = max_s
        self.stable_after_s = stable_after_s
        self.failures = 0
        self._draw = draw

    def next_delay(self, uptime_s: float = 0.0) -> float:
        """Record a failure after an attempt that stayed up ``uptime_s``; return the seconds to wait.

        The wait is drawn from [0, ceiling]. An attempt that lasted
        ``stable_after_s`` or more first starts the count again.
        """
        if uptime_s >= self.stable_after_s:
            self.reset()
        ceiling = jitter_ceiling(self.initial_s, self.max_s, self.failures)
        self.failures += 1
        return self._draw(0.0, ceiling)

    def reset(self) -> None:
        """An attempt succeeded: the next delay is drawn below ``initial_s`` again."""
        self.failures = 0


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
