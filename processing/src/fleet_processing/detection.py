"""What every detector reads and how it words an event: the observation of one fix, the thresholds.

The detectors (``fleet_processing.geofences``, ``fleet_processing.trip_events``,
combined by ``fleet_processing.detect``) are pure functions
``(state, observation) -> (state, events)``, as Traccar's
``session/state/*Processor`` classes: an explicit state object, a thin
handler. They read no clock: an event's time is its fix's time, so the same
fixes give the same events live, replayed, or split differently between
batches and processes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from fleet_processing.plan import TripInstance
from fleet_processing.progress import TripAt
from fleet_schemas.events import Event, EventKind


class Observation(msgspec.Struct, frozen=True, gc=False):
    """One accepted fix of a bus, and where progress put it on its trip."""

    bus: str
    time_ms: int
    seq: int
    lat: float
    lon: float
    speed_mps: float | None = None
    trip: TripAt | None = None
    """None when the bus's operator has no active feed (no trip detectors then)"""


class DetectorPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the detectors (the lead maps them to FLEET_INGEST_* settings).

    Distances in metres, times in seconds, speeds in m/s.
    """

    deviation_leave_m: float = 2_000.0
    """a bus further than this from its trip's line is leaving its corridor"""
    deviation_return_m: float = 1_500.0
    """and is back in it under this (hysteresis, so noise around the threshold raises nothing)"""
    deviation_min_s: float = 60.0
    """it must stay out this long for ``deviation_started``"""
    deviation_by_route: dict[str, tuple[float, float]] = msgspec.field(default_factory=dict)
    """route_id -> (leave_m, return_m), overriding the two above"""
    delay_bands_s: tuple[float, float, float, float] = (-120.0, 300.0, 900.0, 1_800.0)
    """lower limits of ``on_time``, ``late_5``, ``late_15`` and ``late_30``; below the first: ``early``"""
    delay_hysteresis_s: float = 60.0
    """a band is left downwards only this far below its lower limit, so a delay wavering on a limit
    changes band once"""
    overspeed_min_s: float = 5.0
    """above a fence's speed limit this long raises ``overspeed``"""
    offline_s: float = 600.0
    """a bus silent this long is offline (Traccar's default timeout, 600 s)"""

    def deviation_limits(self, route_id: str | None) -> tuple[float, float]:
        """(leave_m, return_m) for a route."""
        if route_id is not None:
            limits = self.deviation_by_route.get(route_id)
            if limits is not None:
                return limits
        return (self.deviation_leave_m, self.deviation_return_m)


def make_event(
    operator: str,
    obs: Observation,
    kind: EventKind,
    subject: str = "",
    details: dict[str, Any] | None = None,
    *,
    time_ms: int | None = None,
    instance: TripInstance | None = None,
) -> Event:
    """An event caused by ``obs`` (at its time unless ``time_ms``), on a trip instance if given."""
    return Event(
        operator=operator,
        bus=obs.bus,
        kind=kind,
        time_ms=obs.time_ms if time_ms is None else time_ms,
        cause_ms=obs.time_ms,
        cause_seq=obs.seq,
        subject=subject,
        lat=obs.lat,
        lon=obs.lon,
        trip_id=instance.plan.trip_id if instance is not None else None,
        start_date=instance.start_date if instance is not None else None,
        start_time=instance.start_time if instance is not None else None,
        route_id=instance.plan.route_id if instance is not None else None,
        details=details or {},
    )
