"""Position checks applied to every verified frame: small named rules, each returning a reason code.

As in Traccar's FilterHandler, every rule is one function; unlike Traccar,
a frame that fails is not only logged: ingest stores it in
``rejected_frames`` with the code and counts it. Pure: the caller passes the
clock (``now_ms``) and the bus's track (its last accepted fix).

The teleport rule compares a frame with the bus's last accepted fix: the jump,
less what the two fixes' accuracies allow for, must not imply more than
``max_speed_mps``. A fixed noise floor would let a chain of steps just under it
walk a bus anywhere, so the allowance comes from the fixes' own accuracy. And
since the reference can itself be the outlier (a multipath fix that passed, a
stale position), ``teleport_confirm`` consecutive rejected fixes that agree with
each other overrule it: the last of them is accepted and becomes the reference.
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
    accuracy_sigmas: float = 2.0
    """a jump may be this many times the two fixes' accuracies longer than the speed allows"""
    assumed_accuracy_m: float = 25.0
    """the accuracy of a fix that reports none (a consumer receiver's typical 2-sigma error)"""
    teleport_confirm: int = 3
    """this many consecutive teleport fixes that agree with each other replace the reference"""


class PreviousFix(msgspec.Struct, frozen=True, array_like=True):
    """A fix of a bus remembered from elsewhere (Redis's live position), as far as the checks need it."""

    time_ms: int
    seq: int
    lat: float
    lon: float
    accuracy_m: float | None = None


Fix = PreviousFix | Frame
"""A position the checks compare with: a frame of this batch, or one remembered from before."""


class BusTrack(msgspec.Struct, frozen=True, array_like=True):
    """What the checks remember of a bus: its reference fix and the teleport suspects since."""

    last: Fix
    """the newest accepted fix"""
    suspect: Fix | None = None
    """the newest fix rejected as a teleport, if the ones since agree with it"""
    suspects: int = 0
    """how many consecutive teleport fixes agree with ``suspect``"""


def _future(policy: FilterPolicy, frame: Frame, now_ms: int) -> bool:
    return frame.time_ms > now_ms + policy.future_tolerance_s * 1000


def _too_old(policy: FilterPolicy, frame: Frame, now_ms: int) -> bool:
    return frame.time_ms < now_ms - policy.horizon_s * 1000


def _null_island(_policy: FilterPolicy, frame: Frame, _now: int) -> bool:
    return frame.lat == 0.0 and frame.lon == 0.0


def _inaccurate(policy: FilterPolicy, frame: Frame, _now: int) -> bool:
    return frame.accuracy_m is not None and frame.accuracy_m > policy.max_accuracy_m


def _accuracy(policy: FilterPolicy, value: float | None) -> float:
    return policy.assumed_accuracy_m if value is None else min(value, policy.max_accuracy_m)


def is_jump(policy: FilterPolicy, reference: Fix, frame: Frame) -> bool:
    """Whether going from ``reference`` to ``frame`` implies more than the top speed.

    Either time order: a stale or newer reference is still a true position of the bus.
    """
    distance = haversine_m(reference.lat, reference.lon, frame.lat, frame.lon)
    noise = policy.accuracy_sigmas * (
        _accuracy(policy, reference.accuracy_m) + _accuracy(policy, frame.accuracy_m)
    )
    elapsed_s = abs(frame.time_ms - reference.time_ms) / 1000
    return distance - noise > policy.max_speed_mps * elapsed_s


Rule = Callable[[FilterPolicy, Frame, int], bool]

RULES: tuple[tuple[str, Rule], ...] = (
    ("future", _future),
    ("too_old", _too_old),
    ("null_island", _null_island),
    ("inaccurate", _inaccurate),
)
"""Reason codes of the rules that need no history, checked in this order before ``teleport``."""

REASONS: tuple[str, ...] = (*(code for code, _ in RULES), "teleport")
"""Every reason code :func:`judge` can give."""


def judge(
    policy: FilterPolicy, track: BusTrack | None, frame: Frame, now_ms: int
) -> tuple[BusTrack | None, str | None]:
    """The bus's track after ``frame``, and the reason code of the first rule it breaks (None: accepted)."""
    for code, rule in RULES:
        if rule(policy, frame, now_ms):
            return track, code
    if track is None:
        return BusTrack(frame), None
    last = track.last
    if not is_jump(policy, last, frame):
        newer = (frame.time_ms, frame.seq) > (last.time_ms, last.seq)
        return BusTrack(frame if newer else last), None
    agreeing = track.suspects + 1 if track.suspect and not is_jump(policy, track.suspect, frame) else 1
    if agreeing >= policy.teleport_confirm:
        return BusTrack(frame), None
    return BusTrack(last, frame, agreeing), "teleport"
