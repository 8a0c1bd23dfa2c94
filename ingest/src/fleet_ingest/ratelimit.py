"""Per-device request rate limits for the HTTP front: a token bucket per device, in memory.

Each process limits what it receives; behind a load balancer spreading one
phone over N processes a phone may send up to N times the rate, which still
bounds what one misbehaving app costs. The burst lets an app that was offline
empty its queue (Traccar Client sends its buffered fixes one request after
another). The buckets of the least recently seen devices are dropped past
``size``: such a device starts again with a full bucket.
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    """``rate_per_s`` requests a second per device, ``burst`` at once."""

    def __init__(self, rate_per_s: float, burst: float, size: int = 100_000) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._size = size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait_s(self, device: str, now: float) -> float:
        """0 and one request counted if ``device`` may send now, else the seconds until it may."""
        tokens, seen = self._buckets.pop(device, (self._burst, now))
        tokens = min(self._burst, tokens + (now - seen) * self._rate)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate
        self._buckets[device] = (tokens - 1.0 if wait == 0.0 else tokens, now)
        while len(self._buckets) > self._size:
            self._buckets.popitem(last=False)
        return wait
