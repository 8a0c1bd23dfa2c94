"""One trip's stop times made whole: times checked, every stop placed on the shape, blank times filled.

The trip's rows come sorted by stop_sequence, with their stops known. A trip
whose schedule cannot be trusted (fewer than two stops, no time at an end,
time going backwards) is dropped with a notice; the rest is kept, problems
reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pyproj import Transformer

from fleet_processing.gtfs.csvfiles import StopTimeRow
from fleet_processing.gtfs.interpolate import fill_blank_times
from fleet_processing.gtfs.notices import Notices
from fleet_processing.gtfs.shapes import cumulative_m, locate_in_order, project
from fleet_schemas.gtfs import Shape, Stop, StopTime, Trip, format_time, parse_time

Floats = npt.NDArray[np.float64]

STOP_TOO_FAR_M = 100.0
"""gtfs-validator's stop_too_far_from_shape threshold"""


@dataclass(eq=False)
class Line:
    """A usable shape: its points, metres along it, and (once needed) its projection."""

    shape: Shape
    feed_dist: Floats | None
    """the feed's shape_dist_traveled at every point, when complete and never decreasing"""
    xy: Floats | None = None


@dataclass
class Lines:
    """The feed's shapes and those built from stop sequences, shared by trips with the same stops."""

    transformer: Transformer
    by_id: dict[str, Line]
    generated: dict[tuple[str, ...], Shape] = field(default_factory=dict)

    def projected(self, line: Line) -> Floats:
        if line.xy is None:
            line.xy = project(self.transformer, np.asarray(line.shape.lats), np.asarray(line.shape.lons))
        return line.xy

    def from_stops(self, stops: list[Stop]) -> Shape:
        key = tuple(stop.stop_id for stop in stops)
        shape = self.generated.get(key)
        if shape is None:
            lats = [stop.lat for stop in stops]
            lons = [stop.lon for stop in stops]
            dist = cumulative_m(np.asarray(lats), np.asarray(lons))
            number = len(self.generated) + 1
            while f"generated-{number}" in self.by_id:
                number += 1
            shape = Shape(
                shape_id=f"generated-{number}",
                lats=lats,
                lons=lons,
                dist_m=dist.tolist(),
                generated=True,
            )
            self.generated[key] = shape
        return shape


@dataclass(frozen=True)
class Normalized:
    trip: Trip
    stop_times: list[StopTime]
    rows: list[int]
    """csvRowNumber of every stop time"""


def normalize_trip(
    trip: Trip,
    trip_row: int,
    rows: list[tuple[int, StopTimeRow]],
    stops: dict[str, Stop],
    lines: Lines,
    notices: Notices,
) -> Normalized | None:
    """The trip with its shape resolved and its stop times complete, or None when it cannot be used."""
    if len(rows) < 2:
        notices.add("unusable_trip", csvRowNumber=trip_row, tripId=trip.trip_id)
        return None
    arrivals, departures = _times(trip, rows, notices)
    if not _edges_timed(trip, rows, arrivals, departures, notices):
        return None
    if not _times_in_order(trip, rows, arrivals, departures, notices):
        return None
    trip_stops = [stops[row.stop_id] for _, row in rows]
    feed_dist = _feed_distances(trip, rows, notices)
    line = lines.by_id.get(trip.shape_id)
    if line is None:
        shape = lines.from_stops(trip_stops)
        trip = _with_shape(trip, shape.shape_id)
        dist_m = np.asarray(shape.dist_m)
    else:
        dist_m = _place_on(line, trip, trip_row, rows, trip_stops, feed_dist, lines, notices)
    positions = feed_dist if feed_dist is not None else dist_m
    arr, dep, filled = fill_blank_times(arrivals, departures, positions)
    stop_times = [
        StopTime(
            trip_id=trip.trip_id,
            stop_sequence=row.stop_sequence,
            stop_id=row.stop_id,
            arrival_s=arr[i],
            departure_s=dep[i],
            dist_m=float(dist_m[i]),
            timepoint=not filled[i] and row.timepoint != 0,
            interpolated=filled[i],
            pickup_type=row.pickup_type,
            drop_off_type=row.drop_off_type,
        )
        for i, (_, row) in enumerate(rows)
    ]
    return Normalized(trip=trip, stop_times=stop_times, rows=[number for number, _ in rows])


def _with_shape(trip: Trip, shape_id: str) -> Trip:
    return Trip(
        trip_id=trip.trip_id,
        route_id=trip.route_id,
        service_id=trip.service_id,
        shape_id=shape_id,
        direction_id=trip.direction_id,
        block_id=trip.block_id,
        headsign=trip.headsign,
    )


def _times(
    trip: Trip, rows: list[tuple[int, StopTimeRow]], notices: Notices
) -> tuple[list[int | None], list[int | None]]:
    arrivals: list[int | None] = []
    departures: list[int | None] = []
    for number, row in rows:
        pair: list[int | None] = []
        for name, text in (("arrival_time", row.arrival_time), ("departure_time", row.departure_time)):
            value = None
            if text is not None:
                try:
                    value = parse_time(text)
                except ValueError:
                    notices.add(
                        "invalid_time",
                        filename="stop_times.txt",
                        csvRowNumber=number,
                        fieldName=name,
                        fieldValue=text,
                    )
            pair.append(value)
        if row.timepoint == 1 and pair[0] is None and pair[1] is None:
            notices.add(
                "stop_time_timepoint_without_times",
                csvRowNumber=number,
                tripId=trip.trip_id,
                stopSequence=row.stop_sequence,
            )
        if (pair[0] is None) != (pair[1] is None):
            notices.add(
                "stop_time_with_only_arrival_or_departure_time",
                csvRowNumber=number,
                tripId=trip.trip_id,
                stopSequence=row.stop_sequence,
                specifiedField="arrival_time" if pair[0] is not None else "departure_time",
            )
        arrivals.append(pair[0])
        departures.append(pair[1])
    return arrivals, departures


def _edges_timed(
    trip: Trip,
    rows: list[tuple[int, StopTimeRow]],
    arrivals: list[int | None],
    departures: list[int | None],
    notices: Notices,
) -> bool:
    usable = True
    for i in (0, len(rows) - 1):
        if arrivals[i] is None and departures[i] is None:
            number, row = rows[i]
            for name in ("arrival_time", "departure_time"):
                notices.add(
                    "missing_trip_edge",
                    csvRowNumber=number,
                    stopSequence=row.stop_sequence,
                    tripId=trip.trip_id,
                    specifiedField=name,
                )
            usable = False
    return usable


def _times_in_order(
    trip: Trip,
    rows: list[tuple[int, StopTimeRow]],
    arrivals: list[int | None],
    departures: list[int | None],
    notices: Notices,
) -> bool:
    """No departure before its arrival, no arrival before the previous timed stop's departure."""
    in_order = True
    previous: tuple[int, int] | None = None
    for (number, row), arrival, departure in zip(rows, arrivals, departures, strict=True):
        arrive = arrival if arrival is not None else departure
        leave = departure if departure is not None else arrival
        if arrive is None or leave is None:
            continue
        if leave < arrive:
            notices.add(
                "stop_time_with_departure_before_arrival_time",
                csvRowNumber=number,
                tripId=trip.trip_id,
                stopSequence=row.stop_sequence,
                departureTime=format_time(leave),
                arrivalTime=format_time(arrive),
            )
            in_order = False
        if previous is not None and arrive < previous[1]:
            notices.add(
                "stop_time_with_arrival_before_previous_departure_time",
                csvRowNumber=number,
                prevCsvRowNumber=previous[0],
                tripId=trip.trip_id,
                departureTime=format_time(previous[1]),
                arrivalTime=format_time(arrive),
            )
            in_order = False
        previous = (number, max(leave, arrive))
    return in_order


def _feed_distances(trip: Trip, rows: list[tuple[int, StopTimeRow]], notices: Notices) -> Floats | None:
    """The trip's shape_dist_traveled when every stop has one and it increases; None otherwise."""
    values = [row.shape_dist_traveled for _, row in rows]
    consistent = True
    previous: tuple[int, StopTimeRow] | None = None
    for number, row in rows:
        if row.shape_dist_traveled is None:
            continue
        if previous is not None:
            before = previous[1].shape_dist_traveled
            assert before is not None
            if row.shape_dist_traveled <= before:
                notices.add(
                    "decreasing_or_equal_stop_time_distance",
                    tripId=trip.trip_id,
                    stopId=row.stop_id,
                    csvRowNumber=number,
                    shapeDistTraveled=row.shape_dist_traveled,
                    stopSequence=row.stop_sequence,
                    prevCsvRowNumber=previous[0],
                    prevShapeDistTraveled=before,
                    prevStopSequence=previous[1].stop_sequence,
                )
                consistent = False
        previous = (number, row)
    if not consistent or any(value is None for value in values):
        return None
    return np.asarray(values, dtype=np.float64)


def _place_on(
    line: Line,
    trip: Trip,
    trip_row: int,
    rows: list[tuple[int, StopTimeRow]],
    trip_stops: list[Stop],
    feed_dist: Floats | None,
    lines: Lines,
    notices: Notices,
) -> Floats:
    """Metres along the shape of every stop: from shape_dist_traveled when the feed's agree, else located."""
    xy = lines.projected(line)
    stop_xy = project(
        lines.transformer,
        np.asarray([stop.lat for stop in trip_stops]),
        np.asarray([stop.lon for stop in trip_stops]),
    )
    along, off = locate_in_order(xy, np.asarray(line.shape.dist_m), stop_xy)
    for i in np.flatnonzero(off > STOP_TOO_FAR_M):
        number, row = rows[int(i)]
        notices.add(
            "stop_too_far_from_shape",
            tripCsvRowNumber=trip_row,
            shapeId=trip.shape_id,
            tripId=trip.trip_id,
            stopTimeCsvRowNumber=number,
            stopId=row.stop_id,
            stopName=trip_stops[int(i)].name,
            geoDistanceToShape=round(float(off[i]), 1),
        )
    shape_dist = line.feed_dist
    if (
        feed_dist is not None
        and shape_dist is not None
        and shape_dist[0] <= feed_dist[0]
        and feed_dist[-1] <= shape_dist[-1]
    ):
        mapped: Floats = np.interp(feed_dist, shape_dist, np.asarray(line.shape.dist_m))
        return mapped
    return along
