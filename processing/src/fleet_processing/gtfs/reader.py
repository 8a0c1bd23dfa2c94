"""Read a GTFS feed into a normalized ``fleet_schemas.gtfs.Feed`` with a problem report.

No Python GTFS library does what a production importer needs: none expands
frequencies.txt or interpolates blank stop times; gtfs-kit and partridge pull
in pandas (and geopandas), and pygtfs, the one database loader, inserts row
by row. So the CSV is read here (stdlib csv, ``utf-8-sig``; rows validated
by msgspec in lax mode, see ``csvfiles``) and the store loads it with COPY.

Pure: files come through ``open_file`` and "today" (for expired_calendar) is
an argument. Problems are reported with gtfs-validator's codes; a row that
cannot be used is dropped with its notice and the rest is imported. The feed
is None only when it cannot be used at all (a required file missing, no
usable trip).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import msgspec
import numpy as np

from fleet_processing.gtfs import csvfiles
from fleet_processing.gtfs.csvfiles import OpenFile, Progress, StopTimeRow, Table, read_table
from fleet_processing.gtfs.notices import Notices
from fleet_processing.gtfs.shapes import cumulative_m, metric_projection
from fleet_processing.gtfs.trips import Line, Lines, Normalized, normalize_trip
from fleet_processing.gtfs.validate import (
    check_blocks,
    check_expired,
    check_speeds,
    drop_overlapping_frequencies,
)
from fleet_processing.service_day import ServiceCalendar
from fleet_schemas.gtfs import (
    Agency,
    Calendar,
    CalendarDate,
    Feed,
    Frequency,
    Notice,
    Route,
    Shape,
    Stop,
    Trip,
    parse_time,
)

TRIPS_PROGRESS_EVERY = 1_000
Bound = tuple[str, str, int]
"""one end of a range: field name, its text, its value (seconds, or a date's ordinal)"""
REQUIRED_FILES = ("agency.txt", "stops.txt", "routes.txt", "trips.txt", "stop_times.txt")


class FileCount(msgspec.Struct, frozen=True):
    read: int
    """data rows in the file"""
    imported: int
    """rows that made it into the feed"""


@dataclass(frozen=True)
class FeedReading:
    feed: Feed | None
    """None only when the feed cannot be used at all"""
    notices: list[Notice]
    counts: dict[str, FileCount]
    """per file present (nothing imported when ``feed`` is None)"""
    interpolated_stop_times: int = 0
    generated_shapes: int = 0


def read_feed(
    open_file: OpenFile,
    *,
    today: date | None = None,
    timezones: Collection[str] | None = None,
    progress: Progress | None = None,
) -> FeedReading:
    """The feed behind ``open_file``, normalized, with every problem found.

    ``today`` enables expired_calendar, ``timezones`` (the IANA names the
    caller's tz database knows) invalid_timezone; ``progress`` hears about
    each file's rows.
    """
    notices = Notices()
    tables = {spec.filename: read_table(open_file, spec, notices, progress) for spec in csvfiles.FILES}
    builder = _Builder(notices, tables, progress, timezones)
    feed = builder.build(today) if builder.complete() else None
    counts = {
        name: FileCount(read=table.read, imported=builder.imported.get(name, 0) if feed is not None else 0)
        for name, table in tables.items()
        if table.present
    }
    return FeedReading(
        feed=feed,
        notices=notices.notices(),
        counts=counts,
        interpolated_stop_times=builder.interpolated,
        generated_shapes=builder.generated_shapes,
    )


class _Builder:
    """Turns the tables into the feed's entities, file by file, checking references as it goes."""

    def __init__(
        self,
        notices: Notices,
        tables: dict[str, Table[msgspec.Struct]],
        progress: Progress | None,
        timezones: Collection[str] | None,
    ) -> None:
        self.notices = notices
        self.progress = progress
        self.timezones = timezones
        self.tables = tables
        self.imported: dict[str, int] = {}
        self.stop_rows: dict[str, int] = {}
        """csvRowNumber of every stop kept"""
        self.interpolated = 0
        self.generated_shapes = 0

    def _rows(self, spec: csvfiles.Spec[csvfiles.R]) -> list[tuple[int, csvfiles.R]]:
        return self.tables[spec.filename].rows  # type: ignore[return-value]

    def _missing_reference(self, child: str, field: str, parent: str, value: str, number: int) -> None:
        self.notices.add(
            "foreign_key_violation",
            childFilename=child,
            childFieldName=field,
            parentFilename=parent,
            parentFieldName=field if parent != "stops.txt" else "stop_id",
            fieldValue=value,
            csvRowNumber=number,
        )

    def _timezone_known(self, filename: str, number: int, field: str, value: str | None) -> bool:
        if value is None or self.timezones is None or value in self.timezones:
            return True
        self.notices.add(
            "invalid_timezone", filename=filename, csvRowNumber=number, fieldName=field, fieldValue=value
        )
        return False

    def _in_order(self, filename: str, number: int, entity: str, start: Bound, end: Bound) -> bool:
        """start_and_end_range_out_of_order: a range that ends before it starts is dropped."""
        if end[2] >= start[2]:
            return True
        self.notices.add(
            "start_and_end_range_out_of_order",
            filename=filename,
            csvRowNumber=number,
            entityId=entity,
            startFieldName=start[0],
            startValue=start[1],
            endFieldName=end[0],
            endValue=end[1],
        )
        return False

    def _missing_agency_id(self, filename: str, number: int) -> None:
        """agency_id may be left out only when the feed has one agency."""
        self.notices.add(
            "missing_required_field", filename=filename, csvRowNumber=number, fieldName="agency_id"
        )

    def complete(self) -> bool:
        usable = True
        for name in REQUIRED_FILES:
            if not self.tables[name].present:
                self.notices.add("missing_required_file", filename=name)
                usable = False
        if not self.tables["calendar.txt"].present and not self.tables["calendar_dates.txt"].present:
            self.notices.add("missing_calendar_and_calendar_date_files")
            usable = False
        return usable

    def build(self, today: date | None) -> Feed | None:
        agencies = self._agencies()
        stops = self._stops()
        routes = self._routes(agencies)
        calendars = self._calendars()
        calendar_dates = self._calendar_dates()
        services = {calendar.service_id for _, calendar in calendars} | {c.service_id for c in calendar_dates}
        lines = self._lines(stops)
        trips = self._trips(routes, services, stops, lines)
        if not trips:
            return None
        frequencies = self._frequencies({trip.trip.trip_id for _, trip in trips})
        days = ServiceCalendar((calendar for _, calendar in calendars), calendar_dates)
        check_blocks(trips, days, self.notices)
        if today is not None:
            check_expired(calendars, days, today, self.notices)
        shapes = [line.shape for line in lines.by_id.values()] + list(lines.generated.values())
        self.generated_shapes = len(lines.generated)
        self.imported["shapes.txt"] = sum(len(line.shape.lats) for line in lines.by_id.values())
        stop_times = [stop_time for _, trip in trips for stop_time in trip.stop_times]
        self.imported["stop_times.txt"] = len(stop_times)
        self.imported["trips.txt"] = len(trips)
        self.interpolated = sum(stop_time.interpolated for stop_time in stop_times)
        return Feed(
            agencies=list(agencies.values()),
            routes=list(routes.values()),
            stops=list(stops.values()),
            shapes=shapes,
            trips=[trip.trip for _, trip in trips],
            stop_times=stop_times,
            calendars=[calendar for _, calendar in calendars],
            calendar_dates=calendar_dates,
            frequencies=frequencies,
        )

    def _agencies(self) -> dict[str, Agency]:
        rows = self._rows(csvfiles.AGENCY)
        agencies: dict[str, Agency] = {}
        for number, row in rows:
            agency_id = (
                row.agency_id if row.agency_id is not None else row.agency_name if len(rows) == 1 else None
            )
            if agency_id is None:
                self._missing_agency_id("agency.txt", number)
                continue
            if not self._timezone_known("agency.txt", number, "agency_timezone", row.agency_timezone):
                continue
            agencies[agency_id] = Agency(
                agency_id=agency_id,
                name=row.agency_name,
                url=row.agency_url,
                timezone=row.agency_timezone,
                lang=row.agency_lang,
                phone=row.agency_phone,
            )
        self.imported["agency.txt"] = len(agencies)
        return agencies

    def _stops(self) -> dict[str, Stop]:
        rows = self._rows(csvfiles.STOPS)
        ids = {row.stop_id for _, row in rows}
        stops: dict[str, Stop] = {}
        for number, row in rows:
            parent = row.parent_station
            if parent is not None and parent not in ids:
                self._missing_reference("stops.txt", "parent_station", "stops.txt", parent, number)
                parent = None
            timezone = row.stop_timezone
            if not self._timezone_known("stops.txt", number, "stop_timezone", timezone):
                timezone = None
            self.stop_rows[row.stop_id] = number
            stops[row.stop_id] = Stop(
                stop_id=row.stop_id,
                lat=row.stop_lat,
                lon=row.stop_lon,
                name=row.stop_name,
                code=row.stop_code,
                location_type=row.location_type,
                parent_station=parent,
                timezone=timezone,
            )
        self.imported["stops.txt"] = len(stops)
        return stops

    def _routes(self, agencies: dict[str, Agency]) -> dict[str, Route]:
        routes: dict[str, Route] = {}
        only = next(iter(agencies)) if len(agencies) == 1 else None
        for number, row in self._rows(csvfiles.ROUTES):
            agency_id = row.agency_id if row.agency_id is not None else only
            if agency_id is None:
                self._missing_agency_id("routes.txt", number)
                continue
            if agency_id not in agencies:
                self._missing_reference("routes.txt", "agency_id", "agency.txt", agency_id, number)
                continue
            routes[row.route_id] = Route(
                route_id=row.route_id,
                agency_id=agency_id,
                route_type=row.route_type,
                short_name=row.route_short_name,
                long_name=row.route_long_name,
                color=row.route_color,
                text_color=row.route_text_color,
            )
        self.imported["routes.txt"] = len(routes)
        return routes

    def _date(self, filename: str, number: int, field: str, text: str) -> date | None:
        try:
            return datetime.strptime(text, "%Y%m%d").date()
        except ValueError:
            self.notices.add(
                "invalid_date", filename=filename, csvRowNumber=number, fieldName=field, fieldValue=text
            )
            return None

    def _calendars(self) -> list[tuple[int, Calendar]]:
        calendars: list[tuple[int, Calendar]] = []
        for number, row in self._rows(csvfiles.CALENDAR):
            start = self._date("calendar.txt", number, "start_date", row.start_date)
            end = self._date("calendar.txt", number, "end_date", row.end_date)
            if start is None or end is None:
                continue
            if not self._in_order(
                "calendar.txt",
                number,
                row.service_id,
                ("start_date", row.start_date, start.toordinal()),
                ("end_date", row.end_date, end.toordinal()),
            ):
                continue
            days = (
                row.monday,
                row.tuesday,
                row.wednesday,
                row.thursday,
                row.friday,
                row.saturday,
                row.sunday,
            )
            calendar = Calendar(
                service_id=row.service_id,
                days=tuple(bool(day) for day in days),  # type: ignore[arg-type]
                start_date=start,
                end_date=end,
            )
            calendars.append((number, calendar))
        self.imported["calendar.txt"] = len(calendars)
        return calendars

    def _calendar_dates(self) -> list[CalendarDate]:
        exceptions: list[CalendarDate] = []
        for number, row in self._rows(csvfiles.CALENDAR_DATES):
            day = self._date("calendar_dates.txt", number, "date", row.date)
            if day is not None:
                kind: Literal[1, 2] = 1 if row.exception_type == 1 else 2
                exceptions.append(CalendarDate(service_id=row.service_id, date=day, exception_type=kind))
        self.imported["calendar_dates.txt"] = len(exceptions)
        return exceptions

    def _lines(self, stops: dict[str, Stop]) -> Lines:
        points: dict[str, list[tuple[int, csvfiles.ShapeRow]]] = defaultdict(list)
        for number, row in self._rows(csvfiles.SHAPES):
            points[row.shape_id].append((number, row))
        lats = np.asarray([stop.lat for stop in stops.values()] or [0.0])
        lons = np.asarray([stop.lon for stop in stops.values()] or [0.0])
        lines = Lines(transformer=metric_projection(lats, lons), by_id={})
        for shape_id, rows in points.items():
            rows.sort(key=lambda item: item[1].shape_pt_sequence)
            if len(rows) < 2:
                self.notices.add("single_shape_point", csvRowNumber=rows[0][0], shapeId=shape_id)
                continue
            shape_lats = np.asarray([row.shape_pt_lat for _, row in rows])
            shape_lons = np.asarray([row.shape_pt_lon for _, row in rows])
            shape = Shape(
                shape_id=shape_id,
                lats=shape_lats.tolist(),
                lons=shape_lons.tolist(),
                dist_m=cumulative_m(shape_lats, shape_lons).tolist(),
            )
            lines.by_id[shape_id] = Line(shape=shape, feed_dist=self._shape_distances(shape_id, rows))
        return lines

    def _shape_distances(self, shape_id: str, rows: list[tuple[int, csvfiles.ShapeRow]]) -> np.ndarray | None:
        """The feed's shape_dist_traveled when every point has one and it never decreases."""
        values = [row.shape_dist_traveled for _, row in rows]
        if any(value is None for value in values):
            return None
        for (prev_number, prev), (number, row) in itertools.pairwise(rows):
            assert prev.shape_dist_traveled is not None
            assert row.shape_dist_traveled is not None
            if row.shape_dist_traveled < prev.shape_dist_traveled:
                self.notices.add(
                    "decreasing_shape_distance",
                    shapeId=shape_id,
                    csvRowNumber=number,
                    shapeDistTraveled=row.shape_dist_traveled,
                    shapePtSequence=row.shape_pt_sequence,
                    prevCsvRowNumber=prev_number,
                    prevShapeDistTraveled=prev.shape_dist_traveled,
                    prevShapePtSequence=prev.shape_pt_sequence,
                )
                return None
        return np.asarray(values, dtype=np.float64)

    def _stop_times_by_trip(
        self, trip_ids: set[str], stops: dict[str, Stop]
    ) -> dict[str, list[tuple[int, StopTimeRow]]]:
        by_trip: dict[str, list[tuple[int, StopTimeRow]]] = defaultdict(list)
        not_stops: set[str] = set()
        for number, row in self._rows(csvfiles.STOP_TIMES):
            if row.trip_id not in trip_ids:
                self._missing_reference("stop_times.txt", "trip_id", "trips.txt", row.trip_id, number)
            elif row.stop_id not in stops:
                self._missing_reference("stop_times.txt", "stop_id", "stops.txt", row.stop_id, number)
            else:
                stop = stops[row.stop_id]
                if stop.location_type != 0 and stop.stop_id not in not_stops:
                    not_stops.add(stop.stop_id)
                    self.notices.add(
                        "location_with_unexpected_stop_time",
                        csvRowNumber=self.stop_rows[stop.stop_id],
                        stopId=stop.stop_id,
                        stopName=stop.name,
                        stopTimeCsvRowNumber=number,
                    )
                by_trip[row.trip_id].append((number, row))
        for rows in by_trip.values():
            rows.sort(key=lambda item: item[1].stop_sequence)
        return by_trip

    def _trips(
        self, routes: dict[str, Route], services: set[str], stops: dict[str, Stop], lines: Lines
    ) -> list[tuple[int, Normalized]]:
        rows = self._rows(csvfiles.TRIPS)
        stop_times = self._stop_times_by_trip({row.trip_id for _, row in rows}, stops)
        kept: list[tuple[int, Normalized]] = []
        for done, (number, row) in enumerate(rows, start=1):
            if self.progress is not None and (done % TRIPS_PROGRESS_EVERY == 0 or done == len(rows)):
                self.progress("trips placed on their shapes", done)
            if row.route_id not in routes:
                self._missing_reference("trips.txt", "route_id", "routes.txt", row.route_id, number)
                continue
            if row.service_id not in services:
                self._missing_reference("trips.txt", "service_id", "calendar.txt", row.service_id, number)
                continue
            if row.shape_id is not None and row.shape_id not in lines.by_id:
                self._missing_reference("trips.txt", "shape_id", "shapes.txt", row.shape_id, number)
            trip = Trip(
                trip_id=row.trip_id,
                route_id=row.route_id,
                service_id=row.service_id,
                shape_id=row.shape_id or "",
                direction_id=row.direction_id,
                block_id=row.block_id,
                headsign=row.trip_headsign,
            )
            normalized = normalize_trip(
                trip, number, stop_times.get(row.trip_id, []), stops, lines, self.notices
            )
            if normalized is not None:
                route = routes[row.route_id]
                check_speeds(normalized, route.route_id, route.route_type, stops, self.notices)
                kept.append((number, normalized))
        return kept

    def _frequencies(self, trip_ids: set[str]) -> list[Frequency]:
        known = {row.trip_id for _, row in self._rows(csvfiles.TRIPS)}
        periods: list[tuple[int, Frequency]] = []
        for number, row in self._rows(csvfiles.FREQUENCIES):
            if row.trip_id not in known:
                self._missing_reference("frequencies.txt", "trip_id", "trips.txt", row.trip_id, number)
                continue
            if row.trip_id not in trip_ids:
                continue
            times = []
            for field, text in (("start_time", row.start_time), ("end_time", row.end_time)):
                try:
                    times.append(parse_time(text))
                except ValueError:
                    self.notices.add(
                        "invalid_time",
                        filename="frequencies.txt",
                        csvRowNumber=number,
                        fieldName=field,
                        fieldValue=text,
                    )
            if len(times) == 2 and self._in_order(
                "frequencies.txt",
                number,
                row.trip_id,
                ("start_time", row.start_time, times[0]),
                ("end_time", row.end_time, times[1]),
            ):
                frequency = Frequency(
                    trip_id=row.trip_id,
                    start_s=times[0],
                    end_s=times[1],
                    headway_s=row.headway_secs,
                    exact_times=bool(row.exact_times),
                )
                periods.append((number, frequency))
        kept = drop_overlapping_frequencies(periods, self.notices)
        self.imported["frequencies.txt"] = len(kept)
        return kept
