"""Checks across rows of a normalized feed: speeds between stops, blocks, frequencies, calendars.

Each check reports with gtfs-validator's code and sample fields and drops
nothing but what it says: an overlapping frequency row is dropped (the
instances would collide); fast travel, overlapping blocks and expired
calendars are reported and kept, since the data still says what runs.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from fleet_processing.gtfs.notices import Notices
from fleet_processing.gtfs.trips import Normalized
from fleet_processing.service_day import ServiceCalendar
from fleet_schemas.geo import haversine_m
from fleet_schemas.gtfs import Calendar, Frequency, Stop, format_time

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


def check_blocks(trips: list[tuple[int, Normalized]], days: ServiceCalendar, notices: Notices) -> None:
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
    calendars: list[tuple[int, Calendar]], days: ServiceCalendar, today: date, notices: Notices
) -> None:
    """expired_calendar: a service whose last date is before ``today``."""
    for number, calendar in calendars:
        last = days.last_date(calendar.service_id)
        if last is None or last < today:
            notices.add("expired_calendar", csvRowNumber=number, serviceId=calendar.service_id)
