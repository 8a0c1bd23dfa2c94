"""Backoff doubles its ceiling per failure up to the maximum, jitters below it, and starts over on reset."""

from __future__ import annotations

import random

from fleet_agent.backoff import Backoff, jitter_ceiling


def test_ceiling_doubles_per_failure_and_stops_at_the_maximum() -> None:
    assert [jitter_ceiling(1.0, 60.0, n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert jitter_ceiling(1.0, 60.0, 10_000) == 60.0


def test_every_delay_is_full_jitter_below_its_ceiling() -> None:
    backoff = Backoff(0.5, 10.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    ceilings = [jitter_ceiling(0.5, 10.0, n) for n in range(200)]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert min(delays[10:]) < 2.0 < max(delays[10:]), "spread over the whole range, not a fixed delay"
    assert backoff.failures == 200


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(1.0, 60.0, random.Random(1))
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() <= 1.0
