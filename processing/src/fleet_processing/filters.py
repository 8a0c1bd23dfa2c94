"""Position checks applied to every verified frame: small named rules, each returning a reason code.

As in Traccar's FilterHandler, every rule is one function; unlike Traccar,
a frame that fails is not only logged: ingest stores it in
``rejected_frames`` with the code and counts it. Pure: the caller passes the
clock (``now_ms``) and the bus's previous accepted fix.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from fleet_schemas import Frame
from fleet_schemas.geo import haversine_m


class FilterPolicy(msgspec.Struct, frozen=True):
    """Thresholds of the checks (FLEET_INGEST_* settings)."""

    future_tolerance_s: float = 120.0
    """a fix time further ahead of the server clock is rejected"""
    horizon_s: float = 30 * 86_400.0
    """a fix older than this is rejected (outboxes hold about 55 h; replays need more)"""
    max_accuracy_m: float = 500.0
    max_speed_mps: float = 55.0
    """about 200 km/h: no bus is faster; a jump implying more is a teleport"""
    teleport_min_m: float = 1_000.0
    """jumps shorter than this are GPS noise at short intervals, not teleports"""


class PreviousFix(msgspec.Struct, frozen=True, array_like=True):
    """The last accepted fix of a bus, as far as this process knows it."""

    time_ms: int
    seq: int
    lat: float
    lon: float


def _future(policy: FilterPolicy, frame: Frame, now_ms: int, _: PreviousFix | None) -> bool:
    return frame.time_ms > now_ms + policy.future_tolerance_s * 1000


def _too_old(policy: FilterPolicy, frame: Frame, now_ms: int, _: PreviousFix | None) -> bool:
    return frame.time_ms < now_ms - policy.horizon_s * 1000


def _null_island(_policy: FilterPolicy, frame: Frame, _now: int, _prev: PreviousFix | None) -> bool:
    return frame.lat == 0.0 and frame.lon == 0.0


def _inaccurate(policy: FilterPolicy, frame: Frame, _now: int, _prev: PreviousFix | None) -> bool:
    return frame.accuracy_m is not None and frame.accuracy_m > policy.max_accuracy_m


def _teleport(policy: FilterPolicy, frame: Frame, _now: int, previous: PreviousFix | None) -> bool:
    """Compared in either time order: a stale or newer previous fix is still a true position of the bus."""
    if previous is None:
        return False
    distance = haversine_m(previous.lat, previous.lon, frame.lat, frame.lon)
    if distance < policy.teleport_min_m:
        return False
    elapsed_s = abs(frame.time_ms - previous.time_ms) / 1000
    return elapsed_s == 0 or distance / elapsed_s > policy.max_speed_mps


Rule = Callable[[FilterPolicy, Frame, int, PreviousFix | None], bool]

RULES: tuple[tuple[str, Rule], ...] = (
    ("future", _future),
    ("too_old", _too_old),
    ("null_island", _null_island),
    ("inaccurate", _inaccurate),
    ("teleport", _teleport),
)
"""Reason codes, checked in this order; the first that fires is the frame's rejection reason."""


def check_frame(policy: FilterPolicy, frame: Frame, now_ms: int, previous: PreviousFix | None) -> str | None:
    """The reason code of the first rule ``frame`` breaks, or None if it passes them all."""
    for code, rule in RULES:
        if rule(policy, frame, now_ms, previous):
            return code
    return None
