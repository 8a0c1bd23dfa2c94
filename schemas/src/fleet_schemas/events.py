"""What the detectors tell managers: one record per event, as stored in PostgreSQL and sent live.

JSON, like the live position: serve forwards events to browsers and the
booking platform unchanged. Times are epoch milliseconds (UTC), distances
metres, speeds m/s, delays seconds (positive: late).

An event is identified by what caused it (:attr:`Event.key`): the bus, the
kind, what it is about (``subject``: a fence, a stop of a trip instance, a
trip instance) and the frame that triggered it (its fix time and sequence).
The same frames give the same keys, whichever ingest process ran them and
however often they were delivered, so the store keeps each event once.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

EventKind = Literal[
    "deviation_started",
    "deviation_ended",
    "geofence_entered",
    "geofence_exited",
    "geofence_dwell",
    "overspeed",
    "stop_arrived",
    "stop_departed",
    "stop_skipped",
    "delay_changed",
    "bus_offline",
    "bus_online",
    "trip_assigned",
    "trip_unassigned",
    "trip_started",
    "trip_completed",
]
EVENT_KINDS: tuple[EventKind, ...] = EventKind.__args__  # type: ignore[attr-defined]

DelayBand = Literal["early", "on_time", "late_5", "late_15", "late_30"]
"""``delay_changed``'s bands, lowest first (their limits are the detector policy's)."""


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One thing that happened to one bus.

    ``details`` by kind (every field optional unless said):

    * ``deviation_started``: ``distance_m`` (off the shape when it started), ``threshold_m``,
      ``started_ms``; ``deviation_ended``: ``max_distance_m``, ``duration_s``, ``started_ms``,
      ``reason`` (``returned``; or the trip ended with it: ``completed``, ``released``, ``reassigned``);
    * ``geofence_*`` and ``overspeed``: ``fence_id`` (also the subject), ``fence_kind``, ``name``;
      ``crossed`` true when the bus crossed the fence between two fixes with neither inside;
      ``geofence_exited`` and ``geofence_dwell``: ``entered_ms``, ``dwell_s``;
      ``overspeed``: ``speed_mps`` (highest), ``limit_mps``, ``duration_s``;
    * ``stop_*``: ``stop_id``, ``stop_sequence``, ``scheduled_ms`` (arrival for arrived and
      skipped, departure for departed), ``at_ms`` (when, interpolated along the track when no fix
      fell inside the stop's radius), ``delay_s``, ``interpolated``;
    * ``delay_changed``: ``band``, ``previous_band`` (:data:`DelayBand`), ``delay_s``;
    * ``bus_offline``: ``last_fix_ms``, ``silent_s`` (the timeout); ``bus_online``: ``silent_s``
      (how long it was silent), ``offline_ms``;
    * ``trip_*``: ``route_id``; ``trip_unassigned``: ``reason`` (``reassigned`` to another instance,
      or ``released`` by progress: lost from its line when its frames don't name the trip, or
      overdue); ``trip_completed``: ``delay_s`` at the last stop.
    """

    operator: str
    bus: str
    kind: EventKind
    time_ms: int
    """when it happened: the triggering fix's time (for ``bus_offline``, last fix + the timeout)"""
    cause_ms: int
    """fix time of the frame that triggered it (for ``bus_offline``, the last frame before the silence)"""
    cause_seq: int
    """sequence of that frame"""
    subject: str = ""
    """what it is about: a fence id; ``TRIP_KEY#STOP_SEQUENCE`` for stops (:func:`stop_key`); the
    trip key (:func:`trip_key`) for trips, deviations and delays; empty for offline and online"""
    lat: float | None = None
    lon: float | None = None
    trip_id: str | None = None
    start_date: str | None = None
    start_time: str | None = None
    route_id: str | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str, int, int, int]:
        """The unique key in storage: same cause, same event."""
        return (self.operator, self.bus, self.kind, self.subject, self.time_ms, self.cause_ms, self.cause_seq)


def trip_key(trip_id: str, start_date: str, start_time: str) -> str:
    """One trip instance as a subject: ``trip_id/YYYYMMDD/HH:MM:SS`` (as ``TripInstance.key``)."""
    return f"{trip_id}/{start_date}/{start_time}"


def stop_key(trip: str, stop_sequence: int) -> str:
    """One stop of one trip instance as a subject: ``TRIP_KEY#STOP_SEQUENCE``."""
    return f"{trip}#{stop_sequence}"


EVENT_ENCODER = msgspec.json.Encoder()
EVENT_DECODER = msgspec.json.Decoder(Event)
EVENTS_DECODER = msgspec.json.Decoder(list[Event])
