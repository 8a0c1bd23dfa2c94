"""The Algerian demo feed: GTFS tables generated from a hand-written source of public facts.

``data/feeds/algeria.toml`` holds what a person wrote from public facts:
bus stations and the towns and junctions each road passes (OpenStreetMap and
Wikipedia positions), run times close to the coach operators' published
durations, and illustrative departures. ``build_feed`` turns it into the GTFS
tables under ``data/feeds/algeria/``; the tables are committed, so the feed is
plain data anyone can read, and a test checks they still match this source.

Shapes are the waypoints densified along great circles, a vertex at least
every ``max_step_m``, so a polyline follows its road within the waypoints'
own precision. Densifying is written here by hand (a spherical
interpolation) because every distance of the feed is the same spherical
``haversine_m`` the agent and the server's checks use: ``shape_dist_traveled``
then agrees to the centimetre with what the simulator drives.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

import msgspec

from fleet_schemas.geo import EARTH_RADIUS_M, haversine_m
from fleet_schemas.gtfs import format_time

OPERATOR = "demo-dz"
"""The operator the demo feed is imported for and the demo's buses belong to."""
SOURCE = "algeria.toml"
FEED_DIR = "algeria"
TABLES = (
    "agency.txt",
    "routes.txt",
    "stops.txt",
    "shapes.txt",
    "trips.txt",
    "stop_times.txt",
    "calendar.txt",
    "feed_info.txt",
)
SERVICE_ID = "daily"
BUS = 3  # GTFS route_type


class DemoFeedError(Exception):
    """The demo feed's source is inconsistent; ``code`` is stable."""

    code = "demo_feed_invalid"


class FeedInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    publisher_name: str
    publisher_url: str
    lang: str
    start_date: str
    end_date: str
    version: str
    max_step_m: float


class Agency(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    agency_id: str
    name: str
    url: str
    timezone: str


class Station(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    at: tuple[float, float]


class Call(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A station a line serves: minutes driven from the previous one, minutes stood there."""

    station: str
    run: int = 0
    dwell: int = 0


class Line(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    route_id: str
    agency_id: str
    short_name: str
    long_name: str
    color: str
    path: list[str | tuple[float, float]]
    stops: list[Call]
    outbound: list[str]
    inbound: list[str]
    blank: list[str] = []


class Source(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    feed: FeedInfo
    agency: list[Agency]
    station: dict[str, Station]
    line: list[Line]


def load_source(path: Path | None = None) -> Source:
    """The source file shipped with devtools, or another one."""
    raw = (
        path.read_bytes()
        if path is not None
        else (resources.files("fleet_devtools") / "data" / "feeds" / SOURCE).read_bytes()
    )
    try:
        return msgspec.toml.decode(raw, type=Source)
    except msgspec.ValidationError as exc:
        raise DemoFeedError(f"demo feed source: {exc}") from exc


def dense_source(source: Source, buses: int, *, margin: float = 1.25) -> Source:
    """The same lines with departures round the clock, often enough that ``buses`` trips are always under way.

    The shipped feed has two to four departures a day per direction, about ten
    trips under way at a time; a demo of hundreds of buses needs each to have a
    trip of its own. Every line and direction gets one headway (whole minutes,
    ``margin`` more trips under way than ``buses``), all calls and run times kept.
    """
    scheduled_min = sum(2 * sum(call.run + call.dwell for call in line.stops) for line in source.line)
    headway = max(1, min(60, math.floor(scheduled_min / (buses * margin))))
    clocks = [f"{m // 60:02d}:{m % 60:02d}" for m in range(0, 24 * 60, headway)]
    lines = [msgspec.structs.replace(line, outbound=clocks, inbound=clocks, blank=[]) for line in source.line]
    return msgspec.structs.replace(source, line=lines)


def feed_dir() -> Path:
    """Where the generated tables of the shipped feed live."""
    return Path(str(resources.files("fleet_devtools") / "data" / "feeds" / FEED_DIR))


def great_circle(
    a: tuple[float, float], b: tuple[float, float], max_step_m: float
) -> list[tuple[float, float]]:
    """From ``a`` (included) towards ``b`` (excluded) along the great circle, ``max_step_m`` apart at most."""
    distance = haversine_m(*a, *b)
    count = max(1, math.ceil(distance / max_step_m))
    phi1, lam1, phi2, lam2 = (math.radians(v) for v in (*a, *b))
    p = (math.cos(phi1) * math.cos(lam1), math.cos(phi1) * math.sin(lam1), math.sin(phi1))
    q = (math.cos(phi2) * math.cos(lam2), math.cos(phi2) * math.sin(lam2), math.sin(phi2))
    omega = distance / EARTH_RADIUS_M
    points = [a]
    for i in range(1, count):
        f = i / count
        ka, kb = math.sin((1 - f) * omega) / math.sin(omega), math.sin(f * omega) / math.sin(omega)
        x, y, z = (ka * u + kb * v for u, v in zip(p, q, strict=True))
        points.append((math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x))))
    return points


class Shape(msgspec.Struct, frozen=True):
    """One direction of a line: its vertices, their distances, and the distance of each station."""

    points: list[tuple[float, float]]
    dist_m: list[float]
    stations: dict[str, float]


def build_shape(source: Source, path: Sequence[str | tuple[float, float]]) -> Shape:
    """Densify a path of station ids and waypoints; station positions become vertices."""
    waypoints: list[tuple[float, float]] = []
    marks: list[tuple[str, int]] = []
    for item in path:
        if isinstance(item, str):
            if item not in source.station:
                raise DemoFeedError(f"path names unknown station {item!r}")
            marks.append((item, len(waypoints)))
            waypoints.append(source.station[item].at)
        else:
            waypoints.append(item)
    points: list[tuple[float, float]] = []
    index_of: list[int] = []
    for a, b in itertools.pairwise(waypoints):
        index_of.append(len(points))
        points.extend(great_circle(a, b, source.feed.max_step_m))
    index_of.append(len(points))
    points.append(waypoints[-1])
    dist = [0.0]
    for a, b in itertools.pairwise(points):
        dist.append(dist[-1] + haversine_m(*a, *b))
    return Shape(points, dist, {station: dist[index_of[i]] for station, i in marks})


def _seconds(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60


def _csv(header: Sequence[str], rows: Iterator[Sequence[object]] | list[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _m(value: float) -> str:
    return f"{value:.1f}"


def build_feed(source: Source) -> dict[str, str]:
    """Every table of the feed, as CSV text keyed by file name."""
    agencies = {agency.agency_id for agency in source.agency}
    shapes: list[tuple[str, Shape]] = []
    trips: list[Sequence[object]] = []
    stop_times: list[Sequence[object]] = []
    for line in source.line:
        if line.agency_id not in agencies:
            raise DemoFeedError(f"line {line.route_id} names unknown agency {line.agency_id!r}")
        for direction, (suffix, departures) in enumerate((("out", line.outbound), ("in", line.inbound))):
            path = line.path if direction == 0 else line.path[::-1]
            calls = line.stops if direction == 0 else _reversed(line.stops)
            shape_id = f"{line.route_id}-{suffix}"
            shape = build_shape(source, path)
            shapes.append((shape_id, shape))
            headsign = source.station[calls[-1].station].name
            for departure in departures:
                trip_id = f"{line.route_id}-{suffix}-{departure.replace(':', '')}"
                trips.append((line.route_id, SERVICE_ID, trip_id, headsign, direction, shape_id))
                blank = direction == 0 and departure in line.blank
                stop_times.extend(_stop_times(trip_id, shape, calls, _seconds(departure), blank))
    return {
        "agency.txt": _csv(
            ("agency_id", "agency_name", "agency_url", "agency_timezone", "agency_lang"),
            [(a.agency_id, a.name, a.url, a.timezone, source.feed.lang) for a in source.agency],
        ),
        "routes.txt": _csv(
            ("route_id", "agency_id", "route_short_name", "route_long_name", "route_type", "route_color"),
            [(x.route_id, x.agency_id, x.short_name, x.long_name, BUS, x.color) for x in source.line],
        ),
        "stops.txt": _csv(
            ("stop_id", "stop_name", "stop_lat", "stop_lon", "location_type"),
            [(sid, s.name, f"{s.at[0]:.4f}", f"{s.at[1]:.4f}", 0) for sid, s in source.station.items()],
        ),
        "shapes.txt": _csv(
            ("shape_id", "shape_pt_lat", "shape_pt_lon", "shape_pt_sequence", "shape_dist_traveled"),
            [
                (shape_id, f"{lat:.6f}", f"{lon:.6f}", n, _m(d))
                for shape_id, shape in shapes
                for n, ((lat, lon), d) in enumerate(zip(shape.points, shape.dist_m, strict=True), start=1)
            ],
        ),
        "trips.txt": _csv(
            ("route_id", "service_id", "trip_id", "trip_headsign", "direction_id", "shape_id"), trips
        ),
        "stop_times.txt": _csv(
            (
                "trip_id",
                "arrival_time",
                "departure_time",
                "stop_id",
                "stop_sequence",
                "timepoint",
                "shape_dist_traveled",
            ),
            stop_times,
        ),
        "calendar.txt": _csv(
            (
                "service_id",
                "monday",
                "tuesday",
                "wednesday",
                "thursday",
                "friday",
                "saturday",
                "sunday",
                "start_date",
                "end_date",
            ),
            [(SERVICE_ID, *[1] * 7, source.feed.start_date, source.feed.end_date)],
        ),
        "feed_info.txt": _csv(
            (
                "feed_publisher_name",
                "feed_publisher_url",
                "feed_lang",
                "feed_start_date",
                "feed_end_date",
                "feed_version",
            ),
            [
                (
                    source.feed.publisher_name,
                    source.feed.publisher_url,
                    source.feed.lang,
                    source.feed.start_date,
                    source.feed.end_date,
                    source.feed.version,
                )
            ],
        ),
    }


def _reversed(calls: list[Call]) -> list[Call]:
    """The same calls driven backwards: each run belongs to the segment it ends, so runs shift by one."""
    back = calls[::-1]
    return [
        Call(
            station=call.station,
            run=back[i - 1].run if i else 0,
            dwell=call.dwell if 0 < i < len(back) - 1 else 0,
        )
        for i, call in enumerate(back)
    ]


def _stop_times(
    trip_id: str, shape: Shape, calls: list[Call], departure_s: int, blank: bool
) -> Iterator[Sequence[object]]:
    clock = departure_s
    last = len(calls) - 1
    for sequence, call in enumerate(calls, start=1):
        if call.station not in shape.stations:
            raise DemoFeedError(f"trip {trip_id}: station {call.station} is not on its path")
        arrival = clock + call.run * 60
        departure = arrival + call.dwell * 60
        clock = departure
        hidden = blank and 1 < sequence <= last
        times = ("", "") if hidden else (format_time(arrival), format_time(departure))
        yield (trip_id, *times, call.station, sequence, 0 if hidden else 1, _m(shape.stations[call.station]))


def stale_tables(tables: dict[str, str], directory: Path) -> list[str]:
    """The tables whose file in ``directory`` is missing or holds other text."""
    return [
        name
        for name, text in tables.items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]


def write_feed(tables: dict[str, str], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (directory / name).write_text(text, encoding="utf-8")
