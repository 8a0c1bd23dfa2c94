"""Where a bus is on its trip and when it reaches each stop: the records ingest keeps in Redis.

JSON, like the live position, because serve forwards them to the booking
platform and to browsers unchanged. Times are epoch milliseconds (UTC),
distances metres, delays seconds (positive: late); convert at the edge that
shows them to a person.

The records made by thousands per batch (``StopEta``, ``TripEtas``, ``Calculated``, ``StopVisit``)
skip the garbage collector (``gc=False``: they hold no cycles), so building them triggers no
collections: collections were a fifth of ingest's processing step.
"""

from __future__ import annotations

from typing import Literal

import msgspec

AssignmentState = Literal["assigned", "candidate", "unassigned"]
"""``assigned``: the bus drives this trip; ``candidate``: the best guess, not sure yet; ``unassigned``."""


class StopEta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The prediction for one upcoming stop of a trip."""

    stop_sequence: int
    stop_id: str
    scheduled_arrival_ms: int
    scheduled_departure_ms: int
    arrival_ms: int
    departure_ms: int
    arrival_early_ms: int
    """10th percentile of the arrival: the bus is this early or later nine times out of ten"""
    arrival_late_ms: int
    """90th percentile of the arrival"""


class TripEtas(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Every upcoming stop of one trip instance, as the booking API serves it."""

    operator: str
    trip_id: str
    route_id: str
    start_date: str
    """service day, YYYYMMDD, as in GTFS-realtime's TripDescriptor"""
    start_time: str
    """HH:MM:SS of the instance's first departure (past 24:00:00 when the service day runs late)"""
    bus: str
    feed_id: int
    time_ms: int
    """fix time of the position the prediction starts from"""
    updated_ms: int
    delay_s: float
    stops: list[StopEta]
    """upcoming stops in trip order, arrival_ms never decreasing"""


class StopArrival(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of a stop's arrivals board: a trip instance coming to this stop, and when."""

    trip_id: str
    route_id: str
    start_date: str
    start_time: str
    bus: str
    stop_sequence: int
    scheduled_arrival_ms: int
    arrival_ms: int
    arrival_early_ms: int
    arrival_late_ms: int
    updated_ms: int


class Calculated(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The live position's trip block: progress, delay and the next stop."""

    state: AssignmentState
    trip_id: str | None = None
    start_date: str | None = None
    start_time: str | None = None
    confidence: float = 0.0
    distance_travelled_m: float | None = None
    distance_remaining_m: float | None = None
    off_route_m: float | None = None
    delay_s: float | None = None
    on_schedule: bool | None = None
    """delay within the operator's on-time band"""
    estimated_arrival_ms: int | None = None
    """predicted arrival at the trip's last stop"""
    next_stop_id: str | None = None
    next_stop_sequence: int | None = None
    next_stop_eta_ms: int | None = None


class StopVisit(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A bus served (or passed) one stop of its trip: what the historical travel times are learnt from.

    Emitted once, when the bus leaves the stop; a stop passed between two
    fixes gets times interpolated along the track (``interpolated``).
    """

    operator: str
    bus: str
    feed_id: int
    trip_id: str
    start_date: str
    start_time: str
    stop_sequence: int
    stop_id: str
    arrived_ms: int
    departed_ms: int
    scheduled_arrival_ms: int
    scheduled_departure_ms: int
    interpolated: bool = False


ETAS_ENCODER = msgspec.json.Encoder()
TRIP_ETAS_DECODER = msgspec.json.Decoder(TripEtas)
STOP_ARRIVAL_DECODER = msgspec.json.Decoder(StopArrival)
