"""Checks across rows of a normalized feed: speeds between stops, blocks, frequencies, calendars.

Each check reports with gtfs-validator's code and sample fields and drops
nothing but what it says: an overlapping frequency row is dropped (the
instances would collide); fast travel, overlapping blocks and expired
calendars are reported and kept, since the data still says what runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta

from fleet_processing.gtfs.notices import Notices
from fleet_processing.gtfs.times import format_time
from fleet_processing.gtfs.trips import Normalized
from fleet_schemas.geo import haversine_m
from fleet_schemas.gtfs import Calendar, CalendarDate, Frequency, Stop

BUS_MAX_KPH = 150.0
RAIL_MAX_KPH = 500.0
"""gtfs-validator's fast-travel ceilings: buses and most modes 150 km/h, rail 500 km/h"""
_RAIL = {2} | set(range(100, 200))
MIN_HOP_S = 60
"""GTFS times are often whole minutes: a hop scheduled in 0 s is counted as one minute"""


def check_speeds(
    trip: Normalized, route_id: str, route_type: int, stops: dict[str, Stop], notices: Notices
) -> None:
    """fast_travel_between_consecutive_stops between adjacent stops that both have the feed's times."""
    ceiling = RAIL_MAX_KPH if route_type in _RAIL else BUS_MAX_KPH
    times = trip.stop_times
    for i in range(1, len(times)):
        a, b = times[i - 1], times[i]
        if a.interpolated or b.interpolated:
            continue
        first, second = stops[a.stop_id], stops[b.stop_id]
        metres = haversine_m(first.lat, first.lon, second.lat, second.lon)
        seconds = max(b.arrival_s - a.departure_s, MIN_HOP_S)
        kph = metres / seconds * 3.6
        if kph > ceiling:
            notices.add(
                "fast_travel_between_consecutive_stops",
                tripId=a.trip_id,
                routeId=route_id,
                speedKph=round(kph, 1),
                distanceKm=round(metres / 1000, 3),
                csvRowNumber1=trip.rows[i - 1],
                stopSequence1=a.stop_sequence,
                stopId1=a.stop_id,
                departureTime1=format_time(a.departure_s),
                csvRowNumber2=trip.rows[i],
                stopSequence2=b.stop_sequence,
                stopId2=b.stop_id,
                arrivalTime2=format_time(b.arrival_s),
            )


class ServiceDays:
    """Which dates each service runs, answered without listing them (calendars often run to 2099)."""

    def __init__(self, calendars: Iterable[Calendar], calendar_dates: Iterable[CalendarDate]) -> None:
        self.calendars = {calendar.service_id: calendar for calendar in calendars}
        self.added: dict[str, set[date]] = defaultdict(set)
        self.removed: dict[str, set[date]] = defaultdict(set)
        for exception in calendar_dates:
            (self.added if exception.exception_type == 1 else self.removed)[exception.service_id].add(
                exception.date
            )

    def runs_on(self, service_id: str, day: date) -> bool:
        if day in self.added.get(service_id, ()):
            return True
        if day in self.removed.get(service_id, ()):
            return False
        calendar = self.calendars.get(service_id)
        return (
            calendar is not None
            and calendar.start_date <= day <= calendar.end_date
            and calendar.days[day.weekday()]
        )

    def last_date(self, service_id: str) -> date | None:
        """The last date the service runs; None when it never does."""
        added = self.added.get(service_id, set())
        calendar = self.calendars.get(service_id)
        latest = max(added, default=None)
        if calendar is not None:
            day = calendar.end_date
            # a week past the last removal is far enough back to meet every running weekday
            floor = max(
                calendar.start_date, min(self.removed.get(service_id, {day}) | {day}) - timedelta(days=7)
            )
            while day >= floor:
                if self.runs_on(service_id, day):
                    latest = day if latest is None else max(latest, day)
                    break
                day -= timedelta(days=1)
        return latest

    def common_date(self, a: str, b: str) -> date | None:
        """The first date both services run, None when they never share one."""
        candidates = sorted(self.added.get(a, set()) | self.added.get(b, set()))
        first = next((day for day in candidates if self.runs_on(a, day) and self.runs_on(b, day)), None)
        ca, cb = self.calendars.get(a), self.calendars.get(b)
        if ca is not None and cb is not None:
            day, end = max(ca.start_date, cb.start_date), min(ca.end_date, cb.end_date)
            while day <= end and (first is None or day < first):
                if self.runs_on(a, day) and self.runs_on(b, day):
                    return day
                day += timedelta(days=1)
        return first


def check_blocks(trips: list[tuple[int, Normalized]], days: ServiceDays, notices: Notices) -> None:
    """block_trips_with_overlapping_stop_times: one vehicle cannot drive two trips of a block at once."""
    blocks: dict[str, list[tuple[int, Normalized]]] = defaultdict(list)
    for number, trip in trips:
        if trip.trip.block_id is not None:
            blocks[trip.trip.block_id].append((number, trip))
    for block_id, members in blocks.items():
        members.sort(key=lambda member: member[1].stop_times[0].departure_s)
        for i, (number_a, a) in enumerate(members):
            end_a = a.stop_times[-1].arrival_s
            for number_b, b in members[i + 1 :]:
                start_b = b.stop_times[0].departure_s
                if start_b >= end_a:
                    break
                common = days.common_date(a.trip.service_id, b.trip.service_id)
                if common is not None:
                    notices.add(
                        "block_trips_with_overlapping_stop_times",
                        csvRowNumberA=number_a,
                        tripIdA=a.trip.trip_id,
                        serviceIdA=a.trip.service_id,
                        csvRowNumberB=number_b,
                        tripIdB=b.trip.trip_id,
                        serviceIdB=b.trip.service_id,
                        blockId=block_id,
                        intersection=common.isoformat(),
                    )


def drop_overlapping_frequencies(rows: list[tuple[int, Frequency]], notices: Notices) -> list[Frequency]:
    """overlapping_frequency: of two periods of one trip that overlap, the later one is dropped."""
    by_trip: dict[str, list[tuple[int, Frequency]]] = defaultdict(list)
    for number, frequency in rows:
        by_trip[frequency.trip_id].append((number, frequency))
    kept: list[Frequency] = []
    for periods in by_trip.values():
        periods.sort(key=lambda period: period[1].start_s)
        previous: tuple[int, Frequency] | None = None
        for number, frequency in periods:
            if previous is not None and frequency.start_s < previous[1].end_s:
                notices.add(
                    "overlapping_frequency",
                    prevCsvRowNumber=previous[0],
                    prevStartTime=format_time(previous[1].start_s),
                    prevEndTime=format_time(previous[1].end_s),
                    currCsvRowNumber=number,
                    currStartTime=format_time(frequency.start_s),
                    tripId=frequency.trip_id,
                )
                continue
            kept.append(frequency)
            previous = (number, frequency)
    return kept


def check_expired(
    calendars: list[tuple[int, Calendar]], days: ServiceDays, today: date, notices: Notices
) -> None:
    """expired_calendar: a service whose last date is before ``today``."""
    for number, calendar in calendars:
        last = days.last_date(calendar.service_id)
        if last is None or last < today:
            notices.add("expired_calendar", csvRowNumber=number, serviceId=calendar.service_id)
