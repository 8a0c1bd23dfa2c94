"""A GTFS feed as fleet keeps it: the rows that matter, normalized, units and times made exact.

The importer (``fleet_processing.gtfs``) turns a feed's CSV files into a
``Feed``; the store (``fleet_store.gtfs``) writes it to PostgreSQL and reads the
active version back; processing builds its trip plans from it. Normalized
means:

* times are seconds counted from the service day's origin, "noon minus 12 h"
  in the agency's timezone (GTFS's definition), so 25:35:00 is 92,100 and a
  DST day keeps each time exact: add the seconds to the origin, never to
  midnight;
* every stop time has both times: blank ones between timepoints are
  interpolated (``interpolated`` says so);
* every trip has a shape (built from its stops when the feed has none, then
  ``generated``) and every stop time a distance in metres along it
  (``dist_m``), never decreasing within a trip; the feed's own
  ``shape_dist_traveled`` units are not kept;
* frequency-based trips keep their template trip and ``Frequency`` rows; the
  instances of a service day are expanded at run time (``fleet_processing``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import msgspec

_TIME = re.compile(r"(\d{1,3}):([0-5]\d):([0-5]\d)")
MAX_HOURS = 999
"""three digits of hours (41 days): more than any service day runs past its origin"""


def parse_time(text: str) -> int:
    """A GTFS time (H:MM:SS, hours may pass 24) as seconds from the service day's origin; else ValueError.

    Written by hand because ``datetime.time`` stops at 23:59:59 and these are
    durations from the origin, not clock times.
    """
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a GTFS time (H:MM:SS, hours may pass 24)")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds)


def format_time(seconds: int) -> str:
    """``HH:MM:SS``, hours past 24 for a time after the service day's midnight."""
    if not 0 <= seconds <= MAX_HOURS * 3600 + 3599:
        raise ValueError(f"{seconds} s is outside what a GTFS time can say")
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def service_origin_ms(service_date: date, zone: ZoneInfo) -> int:
    """Epoch ms of the service day's origin: noon local time minus 12 h of real time (exact on DST days)."""
    noon = datetime(service_date.year, service_date.month, service_date.day, 12, tzinfo=zone)
    return round((noon.astimezone(UTC) - timedelta(hours=12)).timestamp() * 1000)


Severity = Literal["ERROR", "WARNING", "INFO"]
"""gtfs-validator's severities: an ERROR makes the data it touches unusable, a WARNING is suspicious."""


class Agency(msgspec.Struct, frozen=True, kw_only=True):
    agency_id: str
    """the feed's agency_id, or the agency_name when the feed has one agency and no id"""
    name: str
    url: str
    timezone: str
    """IANA name; every time of this agency's trips counts from its service day's origin there"""
    lang: str | None = None
    phone: str | None = None


class Route(msgspec.Struct, frozen=True, kw_only=True):
    route_id: str
    agency_id: str
    route_type: int
    short_name: str | None = None
    long_name: str | None = None
    color: str | None = None
    text_color: str | None = None


class Stop(msgspec.Struct, frozen=True, kw_only=True):
    stop_id: str
    lat: float
    lon: float
    name: str | None = None
    code: str | None = None
    location_type: int = 0
    parent_station: str | None = None
    timezone: str | None = None


class Shape(msgspec.Struct, frozen=True, kw_only=True):
    """A polyline in WGS84 with the distance in metres from its start at every point."""

    shape_id: str
    lats: list[float]
    lons: list[float]
    dist_m: list[float]
    generated: bool = False
    """built from the stops of a trip that had no shape"""


class Trip(msgspec.Struct, frozen=True, kw_only=True):
    trip_id: str
    route_id: str
    service_id: str
    shape_id: str
    direction_id: int | None = None
    block_id: str | None = None
    headsign: str | None = None


class StopTime(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    trip_id: str
    stop_sequence: int
    stop_id: str
    arrival_s: int
    """seconds from the service day's origin (noon minus 12 h, agency timezone)"""
    departure_s: int
    dist_m: float
    """metres along the trip's shape from its start"""
    timepoint: bool = True
    interpolated: bool = False
    pickup_type: int = 0
    drop_off_type: int = 0


class Calendar(msgspec.Struct, frozen=True, kw_only=True):
    service_id: str
    days: tuple[bool, bool, bool, bool, bool, bool, bool]
    """Monday first"""
    start_date: date
    end_date: date


class CalendarDate(msgspec.Struct, frozen=True, kw_only=True):
    service_id: str
    date: date
    exception_type: Literal[1, 2]
    """1 adds the service on that date, 2 removes it"""


class Frequency(msgspec.Struct, frozen=True, kw_only=True):
    trip_id: str
    start_s: int
    end_s: int
    headway_s: int
    exact_times: bool = False


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """One kind of problem found in a feed, as gtfs-validator names it, with a count and a few samples."""

    code: str
    severity: Severity
    count: int
    samples: list[dict[str, str | int | float | None]] = msgspec.field(default_factory=list)
    """a few occurrences: ``filename``, ``csvRowNumber`` and the ids involved, gtfs-validator's field names"""


class Feed(msgspec.Struct, frozen=True, kw_only=True):
    agencies: list[Agency]
    routes: list[Route]
    stops: list[Stop]
    shapes: list[Shape]
    trips: list[Trip]
    stop_times: list[StopTime]
    """grouped by trip, in stop_sequence order within each trip"""
    calendars: list[Calendar] = msgspec.field(default_factory=list)
    calendar_dates: list[CalendarDate] = msgspec.field(default_factory=list)
    frequencies: list[Frequency] = msgspec.field(default_factory=list)
