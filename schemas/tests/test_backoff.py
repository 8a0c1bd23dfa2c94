"""One retry policy: full jitter below a ceiling doubling per failure, reset only after an attempt lasted."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_schemas.backoff import Backoff, jitter_ceiling, sleep_unless_stopped

initial_delays = st.floats(min_value=1e-3, max_value=10.0)
growth = st.floats(min_value=1.0, max_value=1e4)
uptimes = st.lists(st.floats(min_value=0.0, max_value=120.0), max_size=60)


def _highest(low: float, high: float) -> float:
    return high


@given(initial_delays, growth, st.integers(min_value=0, max_value=200), st.integers(min_value=0))
def test_every_delay_is_drawn_between_zero_and_its_ceiling_never_past_the_cap(
    initial_s: float, factor: float, attempts: int, seed: int
) -> None:
    max_s = initial_s * factor
    backoff = Backoff(initial_s, max_s, draw=random.Random(seed).uniform)
    for failures in range(attempts):
        assert 0.0 <= backoff.next_delay() <= jitter_ceiling(initial_s, max_s, failures) <= max_s


@given(initial_delays, growth, st.integers(min_value=0, max_value=100))
def test_the_ceiling_doubles_per_failure_until_the_cap(
    initial_s: float, factor: float, failures: int
) -> None:
    max_s = initial_s * factor
    backoff = Backoff(initial_s, max_s, stable_after_s=30.0, draw=_highest)
    delays = [backoff.next_delay(uptime_s=0.0) for _ in range(failures + 2)]
    for before, after in itertools.pairwise(delays):
        assert after == min(max_s, before * 2)
    assert backoff.failures == failures + 2


@given(uptimes, st.floats(min_value=1e-3, max_value=100.0))
def test_the_count_starts_again_only_after_an_attempt_that_stayed_up(
    attempts: list[float], stable_after_s: float
) -> None:
    backoff = Backoff(1.0, 1e6, stable_after_s=stable_after_s, draw=_highest)
    in_a_row = 0
    for uptime_s in attempts:
        in_a_row = 0 if uptime_s >= stable_after_s else in_a_row
        assert backoff.next_delay(uptime_s) == jitter_ceiling(1.0, 1e6, in_a_row)
        in_a_row += 1
        assert backoff.failures == in_a_row


def test_a_connection_dropped_at_once_does_not_reset_and_one_that_lasted_does() -> None:
    backoff = Backoff(0.5, 15.0, stable_after_s=30.0, draw=_highest)
    # A denied login never connects (uptime 0); one that CONNACKs and is thrown out at once barely does.
    assert [backoff.next_delay(uptime) for uptime in [0, 0, 5, 0, 29, 0, 0]] == [0.5, 1, 2, 4, 8, 15, 15]
    assert [backoff.next_delay(uptime) for uptime in [30, 0]] == [0.5, 1]


def test_reset_after_a_success_starts_again_below_the_initial_delay() -> None:
    backoff = Backoff(1.0, 60.0, draw=_highest)
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 1.0


def test_without_a_stable_time_only_reset_starts_the_count_again() -> None:
    backoff = Backoff(1.0, 60.0, draw=_highest)
    assert [backoff.next_delay(uptime_s=1e9) for _ in range(4)] == [1, 2, 4, 8]


def test_delays_spread_over_the_whole_range_not_a_fixed_wait() -> None:
    backoff = Backoff(0.5, 10.0, draw=random.Random(7).uniform)
    delays = [backoff.next_delay() for _ in range(200)]
    assert min(delays[10:]) < 2.0 < max(delays[10:])


def test_a_denied_login_waits_far_longer_than_twelve_seconds_for_twenty_attempts() -> None:
    """Reset on every CONNACK, 20 attempts took 12 s; with full jitter the mean wait is half the ceilings."""
    backoff = Backoff(0.5, 15.0, stable_after_s=30.0, draw=_highest)
    assert sum(backoff.next_delay(0.0) for _ in range(20)) / 2 > 100


def test_a_huge_failure_count_stays_at_the_cap() -> None:
    assert jitter_ceiling(1.0, 60.0, 10_000) == 60.0
    assert [jitter_ceiling(1.0, 60.0, n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


REFUSED = [(0.0, 1.0, 1.0), (-1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (1.0, 2.0, 0.0)]


@pytest.mark.parametrize(("initial_s", "max_s", "stable_after_s"), REFUSED)
def test_a_policy_that_cannot_back_off_is_refused(
    initial_s: float, max_s: float, stable_after_s: float
) -> None:
    """A stable time of 0 would let an attempt that never came up (uptime 0) reset the count."""
    with pytest.raises(ValueError, match="0 < initial_s <= max_s and stable_after_s > 0"):
        Backoff(initial_s, max_s, stable_after_s=stable_after_s)


def test_the_wait_ends_as_soon_as_stop_is_set() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        started = loop.time()
        sleeping = asyncio.create_task(sleep_unless_stopped(stop, 3_600.0))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(sleeping, timeout=600)  # a guard: a broken wait fails, not hangs for an hour
        return loop.time() - started

    assert asyncio.run(scenario()) < 3_600.0
