"""The run-time form of a feed: each trip as arrays in a metric projection, ready for projection and ETA.

Built once per feed version from a ``fleet_schemas.gtfs.Feed`` (by
``fleet_processing.network``) and shared read-only by progress, assignment and
ETA. Distances are metres along the trip's shape, times seconds from the
service day's origin (noon minus 12 h in the agency's timezone); an instance
of a trip on a given day turns them into epoch milliseconds with
``origin_ms`` and, for frequency-based trips, ``offset_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt

from fleet_schemas.gtfs import format_time

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class ShapeLine:
    """A shape in the network's metric projection."""

    shape_id: str
    xy: Floats
    """(n, 2) metres, the projection's x and y of every vertex"""
    cum_m: Floats
    """(n,) metres along the line at every vertex, from 0, never decreasing"""

    @property
    def length_m(self) -> float:
        return float(self.cum_m[-1])


@dataclass(frozen=True, slots=True, eq=False)
class TripPlan:
    """One trip of the feed (a template when frequency-based): its stops along its shape, with times."""

    trip_id: str
    route_id: str
    service_id: str
    agency_id: str
    direction_id: int | None
    block_id: str | None
    shape: ShapeLine
    stop_ids: tuple[str, ...]
    stop_sequences: Ints
    stop_dist_m: Floats
    """metres along ``shape`` of every stop, never decreasing"""
    arrival_s: Ints
    departure_s: Ints
    """seconds from the service day's origin"""


@dataclass(frozen=True, slots=True, eq=False)
class TripInstance:
    """A trip on one service day: the thing a bus drives and a prediction is for."""

    plan: TripPlan
    service_date: date
    origin_ms: int
    """epoch ms of the service day's origin (noon minus 12 h, agency timezone)"""
    offset_s: int = 0
    """added to every time of the plan: 0 for a scheduled trip; for a frequency-based one, its start
minus the template's first departure"""

    @property
    def start_date(self) -> str:
        """YYYYMMDD, as GTFS-realtime's TripDescriptor has it."""
        return self.service_date.strftime("%Y%m%d")

    @property
    def start_time(self) -> str:
        """HH:MM:SS of the first departure, past 24:00:00 for a late service day."""
        return format_time(int(self.plan.departure_s[0]) + self.offset_s)

    @property
    def key(self) -> str:
        """Identifies the instance among all of a feed: trip, day and start time."""
        return f"{self.plan.trip_id}/{self.start_date}/{self.start_time}"

    def arrival_ms(self) -> Ints:
        return self.origin_ms + (self.plan.arrival_s + self.offset_s) * 1000

    def departure_ms(self) -> Ints:
        return self.origin_ms + (self.plan.departure_s + self.offset_s) * 1000
