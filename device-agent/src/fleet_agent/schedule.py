"""A GTFS trip's timetable for the simulator: where its stops fall along the shape, and when the bus is due.

The agent installs alone on an onboard unit, without fleet_processing's
importer (numpy, shapely, pyproj), so this reads the few columns a simulated
bus needs with the agent's own CSV reader (``route.GtfsTables``). It follows
GTFS: times count from the service day's origin, noon minus 12 h in the
agency's timezone (so 25:35:00 is 01:35 the next morning, DST days included);
blank times between timepoints are interpolated by distance along the shape;
calendar.txt and calendar_dates.txt say which days a service runs.
frequencies.txt is not expanded: a frequency-based trip is driven at the times
of its template.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from fleet_agent.route import GtfsTables, Route, RouteError, TripNotFoundError, load_gtfs_shape
from fleet_agent.simulator import Timetable
from fleet_schemas import gtfs

logger = logging.getLogger("fleet_agent.schedule")

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
SEARCH_DAYS = 8
"""How far a service day is looked for around now: yesterday's late trips to a week ahead."""


class ScheduleError(RouteError):
    """A trip's stop times or calendar cannot be used; ``code`` is stable."""

    code = "schedule_invalid"


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One stop of a trip: where it is along the route and when, in seconds from the service day's origin."""

    stop_id: str
    stop_sequence: int
    distance_m: float
    arrival_s: int
    departure_s: int
    interpolated: bool = False


class TripSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """A trip as the simulator drives it on any service day."""

    trip_id: str
    service_id: str
    timezone: str
    route: Route
    calls: tuple[Call, ...]

    def on(self, day: date) -> Timetable:
        """The trip's instance on service day ``day``, in epoch milliseconds."""
        origin = service_origin_ms(day, self.timezone)
        return Timetable(
            trip_id=self.trip_id,
            start_date=day.strftime("%Y%m%d"),
            stop_ids=tuple(c.stop_id for c in self.calls),
            stop_sequences=tuple(c.stop_sequence for c in self.calls),
            distances_m=tuple(c.distance_m for c in self.calls),
            arrivals_ms=tuple(origin + c.arrival_s * 1000 for c in self.calls),
            departures_ms=tuple(origin + c.departure_s * 1000 for c in self.calls),
        )


def parse_time(value: str) -> int:
    """GTFS HH:MM:SS (hours may pass 24) as seconds from the service day's origin."""
    try:
        return gtfs.parse_time(value)
    except ValueError as exc:
        raise ScheduleError(str(exc)) from exc


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"agency_timezone {timezone!r} is not an IANA timezone") from exc


def service_origin_ms(day: date, timezone: str) -> int:
    """Noon minus 12 h of ``day`` in ``timezone``: what every GTFS time of that service day counts from."""
    return gtfs.service_origin_ms(day, _zone(timezone))


def _one(tables: GtfsTables, table: str, key: str, value: str) -> dict[str, str]:
    for _, row in tables.rows(table, (key,)):
        if row[key] == value:
            return row
    raise TripNotFoundError(f"GTFS feed {tables.path} has no {key} {value!r} in {table}")


def _timezone(tables: GtfsTables, route_id: str) -> str:
    agency_id = _one(tables, "routes.txt", "route_id", route_id).get("agency_id", "")
    agencies = [row for _, row in tables.rows("agency.txt", ("agency_timezone",))]
    chosen = [row for row in agencies if row.get("agency_id", "") == agency_id] or agencies[:1]
    if not chosen:
        raise ScheduleError(f"GTFS feed {tables.path} has no agency")
    return chosen[0]["agency_timezone"]


def _stop_rows(tables: GtfsTables, trip_id: str) -> list[tuple[int, dict[str, str]]]:
    rows = []
    for line, row in tables.rows("stop_times.txt", ("trip_id", "stop_id", "stop_sequence")):
        if row["trip_id"] == trip_id:
            try:
                rows.append((int(row["stop_sequence"]), row))
            except ValueError as exc:
                raise ScheduleError(f"stop_times.txt line {line}: bad stop_sequence") from exc
    rows.sort(key=lambda item: item[0])
    return rows


def _call(
    row: dict[str, str],
    sequence: int,
    distance_m: float,
    arrival_s: int,
    departure_s: int,
    *,
    interpolated: bool = False,
) -> Call:
    return Call(
        stop_id=row["stop_id"],
        stop_sequence=sequence,
        distance_m=distance_m,
        arrival_s=arrival_s,
        departure_s=departure_s,
        interpolated=interpolated,
    )


def _interpolate(calls: list[Call | None], rows: list[tuple[int, dict[str, str], float]]) -> list[Call]:
    """Fill blank calls by distance between the timed ones around them."""
    timed = [i for i, call in enumerate(calls) if call is not None]
    if not timed or timed[0] != 0 or timed[-1] != len(calls) - 1:
        raise ScheduleError(
            "the first and last stop of a trip need times (gtfs-validator: missing_trip_edge)"
        )
    done: list[Call] = []
    for left, right in itertools.pairwise(timed):
        a, b = calls[left], calls[right]
        assert a is not None
        assert b is not None
        done.append(a)
        span = b.distance_m - a.distance_m
        for i in range(left + 1, right):
            sequence, row, distance = rows[i]
            share = (distance - a.distance_m) / span if span > 0 else (i - left) / (right - left)
            at = round(a.departure_s + share * (b.arrival_s - a.departure_s))
            done.append(_call(row, sequence, distance, at, at, interpolated=True))
    last = calls[timed[-1]]
    assert last is not None
    return [*done, last]


def load_trip(feed: str | Path, trip_id: str) -> TripSchedule:
    """The trip ``trip_id`` of a GTFS folder or zip: its shape, the stops on it and their times."""
    tables = GtfsTables(Path(feed))
    trip = _one(tables, "trips.txt", "trip_id", trip_id)
    if not trip.get("shape_id"):
        raise ScheduleError(f"trip {trip_id!r} has no shape_id: the simulator drives shapes")
    route = load_gtfs_shape(feed, trip["shape_id"], trip_id=trip_id)
    placed = [stop.stop_id for stop in route.stops]
    rows: list[tuple[int, dict[str, str], float]] = []
    next_placed = 0
    for sequence, row in _stop_rows(tables, trip_id):
        if row["stop_id"] not in placed[next_placed:]:
            logger.warning(
                "trip %s: stop %s (sequence %d) is not on its shape, skipped",
                trip_id,
                row["stop_id"],
                sequence,
            )
            continue
        index = placed.index(row["stop_id"], next_placed)
        rows.append((sequence, row, route.stops[index].distance_m))
        next_placed = index + 1
    if len(rows) < 2:
        raise ScheduleError(f"trip {trip_id!r} has fewer than two usable stops")
    calls: list[Call | None] = []
    for sequence, row, distance in rows:
        arrival, departure = row.get("arrival_time", ""), row.get("departure_time", "")
        if not arrival and not departure:
            calls.append(None)
            continue
        arrival_s = parse_time(arrival or departure)
        calls.append(
            _call(row, sequence, distance, arrival_s, parse_time(departure) if departure else arrival_s)
        )
    return TripSchedule(
        trip_id=trip_id,
        service_id=trip.get("service_id", ""),
        timezone=_timezone(tables, trip["route_id"]),
        route=route,
        calls=tuple(_interpolate(calls, rows)),
    )


def _day(value: str, table: str) -> date:
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError as exc:
        raise ScheduleError(f"{table}: {value!r} is not a YYYYMMDD date") from exc


class Calendar(msgspec.Struct, frozen=True):
    """Which days each service runs, from calendar.txt and calendar_dates.txt."""

    weekly: dict[str, tuple[date, date, tuple[bool, ...]]]
    exceptions: dict[tuple[str, date], bool]

    def runs(self, service_id: str, day: date) -> bool:
        exception = self.exceptions.get((service_id, day))
        if exception is not None:
            return exception
        if service_id not in self.weekly:
            return False
        first, last, weekdays = self.weekly[service_id]
        return first <= day <= last and weekdays[day.weekday()]


def load_calendar(feed: str | Path) -> Calendar:
    tables = GtfsTables(Path(feed))
    weekly = {}
    if tables.has("calendar.txt"):
        for _, row in tables.rows("calendar.txt", ("service_id", "start_date", "end_date", *_WEEKDAYS)):
            days = tuple(row[name] == "1" for name in _WEEKDAYS)
            weekly[row["service_id"]] = (
                _day(row["start_date"], "calendar.txt"),
                _day(row["end_date"], "calendar.txt"),
                days,
            )
    exceptions = {}
    if tables.has("calendar_dates.txt"):
        for _, row in tables.rows("calendar_dates.txt", ("service_id", "date", "exception_type")):
            exceptions[row["service_id"], _day(row["date"], "calendar_dates.txt")] = (
                row["exception_type"] == "1"
            )
    return Calendar(weekly, exceptions)


def _days_around(now_ms: int, timezone: str) -> Iterator[date]:
    today = datetime.fromtimestamp(now_ms / 1000, _zone(timezone)).date()
    for offset in range(-2, SEARCH_DAYS):
        yield today + timedelta(days=offset)


def instance_at(schedule: TripSchedule, calendar: Calendar, now_ms: int) -> Timetable | None:
    """The instance running at ``now_ms``, else the next one to start; None if none within a week."""
    for day in _days_around(now_ms, schedule.timezone):
        if calendar.runs(schedule.service_id, day):
            timetable = schedule.on(day)
            if timetable.arrivals_ms[-1] >= now_ms:
                return timetable
    return None


def _spans(tables: GtfsTables) -> dict[str, tuple[int, int]]:
    """Each trip's first departure and last arrival, in seconds from the origin: one pass over stop_times."""
    edges: dict[str, tuple[tuple[int, str], tuple[int, str]]] = {}
    for _, row in tables.rows("stop_times.txt", ("trip_id", "stop_sequence")):
        try:
            sequence = int(row["stop_sequence"])
        except ValueError:
            continue  # load_trip says which line, for the trip it is asked for
        trip_id = row["trip_id"]
        first = (sequence, row.get("departure_time") or row.get("arrival_time", ""))
        last = (sequence, row.get("arrival_time") or row.get("departure_time", ""))
        if trip_id in edges:
            low, high = edges[trip_id]
            first, last = min(low, first), max(high, last)
        edges[trip_id] = (first, last)
    spans = {}
    for trip_id, ((_, leaves), (_, arrives)) in edges.items():
        if leaves and arrives:
            spans[trip_id] = (parse_time(leaves), parse_time(arrives))
    return spans


def running_at(feed: str | Path, now_ms: int) -> list[tuple[TripSchedule, Timetable]]:
    """Every trip instance of the feed between its first departure and its last arrival at ``now_ms``.

    One pass over stop_times finds them; only those are then loaded whole.
    """
    tables = GtfsTables(Path(feed))
    calendar = load_calendar(feed)
    spans = _spans(tables)
    zones: dict[str, str] = {}
    running = []
    for _, row in tables.rows("trips.txt", ("trip_id", "route_id", "service_id")):
        span = spans.get(row["trip_id"])
        if span is None or not row.get("shape_id"):
            continue
        if row["route_id"] not in zones:
            zones[row["route_id"]] = _timezone(tables, row["route_id"])
        timezone = zones[row["route_id"]]
        for day in _days_around(now_ms, timezone):
            origin = service_origin_ms(day, timezone)
            if (
                calendar.runs(row["service_id"], day)
                and origin + span[0] * 1000 <= now_ms <= origin + span[1] * 1000
            ):
                schedule = load_trip(feed, row["trip_id"])
                running.append((schedule, schedule.on(day)))
                break
    return running
