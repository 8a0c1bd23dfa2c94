"""Which fixes become frames: a pure policy over time, distance, heading and parking.

A moving bus sends a frame every ``moving_interval_s``, sooner if it moved
``distance_m`` or turned ``heading_change_deg`` since the last frame. A
parked bus (ignition off, or slower than ``parked_speed_mps`` for
``parked_after_s``) sends one every ``parked_interval_s``.
"""

from __future__ import annotations

import msgspec

from fleet_agent.fix import Fix
from fleet_schemas.geo import haversine_m


class SamplingPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[sampling] in agent.toml."""

    moving_interval_s: float = 1.0
    parked_interval_s: float = 30.0
    distance_m: float = 50.0
    heading_change_deg: float = 15.0
    heading_min_speed_mps: float = 3.0
    parked_speed_mps: float = 0.5
    parked_after_s: float = 120.0


class SamplerState(msgspec.Struct, frozen=True):
    """What the policy remembers between fixes."""

    last_sent: Fix | None = None
    still_since_ms: int | None = None
    parked: bool = False


def _heading_change(a: float, b: float) -> float:
    return abs((b - a + 180.0) % 360.0 - 180.0)


def sample(policy: SamplingPolicy, state: SamplerState, fix: Fix) -> tuple[SamplerState, bool]:
    """Return the new state and whether ``fix`` becomes a frame."""
    slow = fix.speed_mps is not None and fix.speed_mps < policy.parked_speed_mps
    still_since = (
        (state.still_since_ms if state.still_since_ms is not None else fix.time_ms) if slow else None
    )
    parked = fix.ignition is False or (
        still_since is not None and fix.time_ms - still_since >= policy.parked_after_s * 1000
    )
    last = state.last_sent
    if last is None or fix.time_ms < last.time_ms:
        send = last is None
    else:
        elapsed_s = (fix.time_ms - last.time_ms) / 1000
        interval = policy.parked_interval_s if parked else policy.moving_interval_s
        turned = (
            fix.heading_deg is not None
            and last.heading_deg is not None
            and (fix.speed_mps or 0.0) >= policy.heading_min_speed_mps
            and _heading_change(last.heading_deg, fix.heading_deg) >= policy.heading_change_deg
        )
        send = (
            elapsed_s >= interval
            or (parked != state.parked)
            or (
                not parked
                and (turned or haversine_m(last.lat, last.lon, fix.lat, fix.lon) >= policy.distance_m)
            )
        )
    return SamplerState(last_sent=fix if send else last, still_since_ms=still_since, parked=parked), send
