"""Reconnect backoff: exponential with full jitter, reset only by a connection that lasted."""

from __future__ import annotations

from fleet_ingest.backoff import Backoff


def _ceilings(backoff: Backoff, uptimes: list[float]) -> list[float]:
    return [backoff.next_delay(uptime) for uptime in uptimes]


def _highest(low: float, high: float) -> float:
    return high


def test_delay_ceiling_doubles_up_to_the_maximum_while_connections_do_not_last() -> None:
    backoff = Backoff(initial_s=0.5, max_s=15.0, stable_after_s=30.0, draw=_highest)
    # A denied login never connects (uptime 0); one that CONNACKs and is thrown out at once barely does.
    assert _ceilings(backoff, [0, 0, 5, 0, 29, 0, 0]) == [0.5, 1, 2, 4, 8, 15, 15]


def test_connection_that_stayed_up_resets_the_backoff() -> None:
    backoff = Backoff(initial_s=0.5, max_s=15.0, stable_after_s=30.0, draw=_highest)
    _ceilings(backoff, [0, 0, 0, 0])
    assert _ceilings(backoff, [30, 0]) == [0.5, 1]


def test_delay_is_drawn_from_zero_to_the_ceiling() -> None:
    drawn: list[tuple[float, float]] = []

    def draw(low: float, high: float) -> float:
        drawn.append((low, high))
        return (low + high) / 2

    backoff = Backoff(initial_s=1.0, max_s=60.0, stable_after_s=30.0, draw=draw)
    assert _ceilings(backoff, [0, 0, 0]) == [0.5, 1, 2]
    assert drawn == [(0, 1), (0, 2), (0, 4)]


def test_a_denied_login_waits_far_longer_than_twelve_seconds_for_twenty_attempts() -> None:
    """Reset on every CONNACK, 20 attempts took 12 s; with full jitter the mean wait is half the ceilings."""
    backoff = Backoff(initial_s=0.5, max_s=15.0, stable_after_s=30.0, draw=_highest)
    assert sum(_ceilings(backoff, [0] * 20)) / 2 > 100
