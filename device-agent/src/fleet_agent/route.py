"""Route shapes for the simulator: a polyline with stops placed along it.

The agent runs alone on a Raspberry Pi and must not pull numpy, shapely or
pyproj (see ``tests/test_installs_alone.py``), so the few geodesy helpers the
simulator needs are written here by hand on a spherical Earth. Their error
(under 0.5 %) is far below GPS noise. Polylines are interpolated linearly in
latitude and longitude between vertices, which is exact enough for vertices a
few kilometres apart; routes crossing the antimeridian or a pole are not
supported.

Routes load from GeoJSON (``load_geojson``, ``demo_route``) or from one shape
of a GTFS feed (``load_gtfs_shape``). Distances along the route are always
computed from the coordinates: GTFS ``shape_dist_traveled`` is optional, often
empty, and in units the feed does not declare.
"""

from __future__ import annotations

import bisect
import csv
import functools
import io
import itertools
import logging
import math
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import msgspec

from fleet_agent.errors import AgentError
from fleet_schemas import geo
from fleet_schemas.geo import EARTH_RADIUS_M

logger = logging.getLogger("fleet_agent.route")

"""Mean Earth radius (IUGG); the sphere every helper here works on."""

MAX_STOP_OFFSET_M = 200.0
"""A stop further than this from the shape is a data error: it is skipped with a warning."""

MIN_SEGMENT_M = 0.01
"""Vertices closer than this to the previous one are repeats and dropped, so no segment is degenerate."""

DEMO_ROUTE = "algiers_blida.geojson"


class RouteError(AgentError):
    """A route could not be loaded; ``code`` is stable."""

    code = "route_invalid"


class RouteNotFoundError(RouteError):
    """The GeoJSON file or GTFS feed does not exist."""

    code = "route_not_found"


class ShapeNotFoundError(RouteError):
    """The GTFS feed has no shape with the requested id."""

    code = "shape_not_found"


class TripNotFoundError(RouteError):
    """The requested GTFS trip does not exist or uses another shape."""

    code = "trip_not_found"


class Point(msgspec.Struct, frozen=True):
    """A position in WGS 84 degrees, with an altitude when the source gives one."""

    lat: float
    lon: float
    alt_m: float | None = None


class Stop(msgspec.Struct, frozen=True, kw_only=True):
    """A stop and where it falls along the route."""

    stop_id: str
    name: str
    point: Point
    distance_m: float
    offset_m: float


class Projection(msgspec.Struct, frozen=True):
    """The nearest point of a route to some position."""

    distance_m: float
    offset_m: float
    point: Point


# --- geodesy on a sphere --------------------------------------------------------------------------


def haversine_m(a: Point, b: Point) -> float:
    """Great-circle distance in metres."""
    return geo.haversine_m(a.lat, a.lon, b.lat, b.lon)


def bearing_deg(a: Point, b: Point) -> float:
    """Initial great-circle bearing from ``a`` to ``b``, clockwise from north in [0, 360)."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dlam = math.radians(b.lon - a.lon)
    y = math.sin(dlam) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlam)
    return math.degrees(math.atan2(y, x)) % 360.0


def destination(origin: Point, bearing: float, distance_m: float) -> Point:
    """The point ``distance_m`` from ``origin`` along ``bearing``; the altitude is kept."""
    delta = distance_m / EARTH_RADIUS_M
    theta = math.radians(bearing)
    phi1, lam1 = math.radians(origin.lat), math.radians(origin.lon)
    sin_phi2 = math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    phi2 = math.asin(max(-1.0, min(1.0, sin_phi2)))
    lam2 = lam1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1), math.cos(delta) - math.sin(phi1) * sin_phi2
    )
    lon = (math.degrees(lam2) + 540.0) % 360.0 - 180.0
    return Point(math.degrees(phi2), lon, origin.alt_m)


def _lerp(a: Point, b: Point, t: float) -> Point:
    """Linear blend written so that t = 0 and t = 1 give the vertices exactly."""
    alt = None if a.alt_m is None or b.alt_m is None else a.alt_m * (1 - t) + b.alt_m * t
    return Point(a.lat * (1 - t) + b.lat * t, a.lon * (1 - t) + b.lon * t, alt)


# --- the route ------------------------------------------------------------------------------------


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """A polyline with cumulative distances, so lookups by distance are a binary search."""

    name: str
    points: tuple[Point, ...]
    cumulative_m: tuple[float, ...]
    stops: tuple[Stop, ...] = ()

    @property
    def length_m(self) -> float:
        return self.cumulative_m[-1]

    def _segment(self, distance_m: float) -> tuple[int, float]:
        """Index of the segment holding ``distance_m`` (clamped to the route) and the fraction along it."""
        s = min(max(distance_m, 0.0), self.length_m)
        i = min(bisect.bisect_right(self.cumulative_m, s) - 1, len(self.points) - 2)
        seg = self.cumulative_m[i + 1] - self.cumulative_m[i]
        return i, (s - self.cumulative_m[i]) / seg

    def point_at(self, distance_m: float) -> Point:
        """The point ``distance_m`` along the route, clamped to its ends."""
        i, t = self._segment(distance_m)
        return _lerp(self.points[i], self.points[i + 1], t)

    def bearing_at(self, distance_m: float) -> float:
        """Direction of travel at ``distance_m``: the bearing of the segment holding it."""
        i, _ = self._segment(distance_m)
        return bearing_deg(self.points[i], self.points[i + 1])

    def project(self, point: Point, *, after_m: float = 0.0) -> Projection:
        """The nearest point of the route at or beyond ``after_m``.

        Each segment is flattened with an equirectangular projection around its
        middle latitude; that map is affine in (lat, lon), so a point made by
        ``point_at`` projects back onto itself.
        """
        best: Projection | None = None
        first, t_first = self._segment(after_m)
        for i in range(first, len(self.points) - 1):
            a, b = self.points[i], self.points[i + 1]
            k = math.cos(math.radians((a.lat + b.lat) / 2))
            dx, dy = (b.lon - a.lon) * k, b.lat - a.lat
            px, py = (point.lon - a.lon) * k, point.lat - a.lat
            t = min(1.0, max(t_first if i == first else 0.0, (px * dx + py * dy) / (dx * dx + dy * dy)))
            foot = _lerp(a, b, t)
            offset = haversine_m(foot, point)
            if best is None or offset < best.offset_m:
                s = self.cumulative_m[i] + t * (self.cumulative_m[i + 1] - self.cumulative_m[i])
                best = Projection(s, offset, foot)
        assert best is not None  # a route has at least one segment
        return best


def _check_position(route: str, p: Point) -> None:
    if not (-90.0 <= p.lat <= 90.0 and -180.0 <= p.lon <= 180.0):
        raise RouteError(f"route {route!r}: ({p.lat}, {p.lon}) is not a WGS 84 latitude, longitude")


def build_route(
    name: str,
    points: Iterable[Point],
    stops: Iterable[tuple[str, str, Point]] = (),
    *,
    stops_in_order: bool = False,
) -> Route:
    """Make a route from vertices and ``(stop_id, name, point)`` places.

    Repeated vertices (within ``MIN_SEGMENT_M``) are dropped. Stops are placed at their nearest point on
    the route; with ``stops_in_order`` (GTFS stop_times) each stop is searched
    only beyond the previous one, so a route passing a stop twice keeps the
    trip's order. Stops too far from the route are skipped with a warning.
    """
    kept: list[Point] = []
    for p in points:
        _check_position(name, p)
        if not kept or haversine_m(kept[-1], p) >= MIN_SEGMENT_M:
            kept.append(p)
    if len(kept) < 2:
        raise RouteError(f"route {name!r} needs at least two distinct vertices, it has {len(kept)}")
    cumulative = [0.0]
    for a, b in itertools.pairwise(kept):
        cumulative.append(cumulative[-1] + haversine_m(a, b))
    route = Route(name=name, points=tuple(kept), cumulative_m=tuple(cumulative))
    placed: list[Stop] = []
    for stop_id, stop_name, point in stops:
        _check_position(name, point)
        after = placed[-1].distance_m if stops_in_order and placed else 0.0
        where = route.project(point, after_m=after)
        if where.offset_m > MAX_STOP_OFFSET_M:
            logger.warning(
                "route %r: stop %s (%s) is %.0f m from the shape, skipped",
                name,
                stop_id,
                stop_name,
                where.offset_m,
            )
            continue
        placed.append(
            Stop(
                stop_id=stop_id,
                name=stop_name,
                point=point,
                distance_m=where.distance_m,
                offset_m=where.offset_m,
            )
        )
    placed.sort(key=lambda stop: stop.distance_m)
    logger.debug("route %r: %d vertices, %.0f m, %d stops", name, len(kept), route.length_m, len(placed))
    return msgspec.structs.replace(route, stops=tuple(placed))


# --- GeoJSON --------------------------------------------------------------------------------------

Position = Annotated[list[float], msgspec.Meta(min_length=2)]


class _LineString(msgspec.Struct, tag="LineString", tag_field="type"):
    coordinates: list[Position]


class _MultiLineString(msgspec.Struct, tag="MultiLineString", tag_field="type"):
    coordinates: list[list[Position]]


class _Point(msgspec.Struct, tag="Point", tag_field="type"):
    coordinates: Position


class _Ignored(msgspec.Struct, tag_field="type"):
    """Geometry kinds a route file may also hold; they are skipped."""


class _Polygon(_Ignored, tag="Polygon"):
    pass


class _MultiPoint(_Ignored, tag="MultiPoint"):
    pass


class _MultiPolygon(_Ignored, tag="MultiPolygon"):
    pass


class _GeometryCollection(_Ignored, tag="GeometryCollection"):
    pass


_Geometry = (
    _LineString | _MultiLineString | _Point | _Polygon | _MultiPoint | _MultiPolygon | _GeometryCollection
)


class _Feature(msgspec.Struct, tag="Feature", tag_field="type"):
    geometry: _Geometry | None = None
    properties: dict[str, Any] | None = None
    id: str | int | None = None


class _FeatureCollection(msgspec.Struct, tag="FeatureCollection", tag_field="type"):
    features: list[_Feature]


_GEOJSON = msgspec.json.Decoder(_FeatureCollection | _Feature | _LineString | _MultiLineString)


def _position(coordinates: list[float]) -> Point:
    lon, lat, *rest = coordinates
    return Point(lat, lon, rest[0] if rest else None)


def parse_geojson(data: bytes | str, *, name: str) -> Route:
    """Route from GeoJSON text: a LineString, a MultiLineString, or the first line of a feature collection.

    MultiLineString parts are joined in order. Point features become stops,
    named by their ``name`` property and identified by ``stop_id``, the
    feature id, or the name.
    """
    try:
        document = _GEOJSON.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise RouteError(f"route {name!r} is not usable GeoJSON: {exc}") from exc
    if isinstance(document, _FeatureCollection):
        features = document.features
    elif isinstance(document, _Feature):
        features = [document]
    else:
        features = [_Feature(geometry=document)]
    line: list[Point] | None = None
    route_name = name
    stops: list[tuple[str, str, Point]] = []
    for feature in features:
        geometry, properties = feature.geometry, feature.properties or {}
        if isinstance(geometry, _Point):
            label = str(properties.get("name") or f"stop {len(stops) + 1}")
            ident = properties.get("stop_id", feature.id)
            stops.append((str(ident if ident is not None else label), label, _position(geometry.coordinates)))
        elif line is None and isinstance(geometry, _LineString | _MultiLineString):
            parts = [geometry.coordinates] if isinstance(geometry, _LineString) else geometry.coordinates
            line = [_position(c) for part in parts for c in part]
            route_name = str(properties.get("name") or name)
    if line is None:
        raise RouteError(f"route {name!r} holds no LineString or MultiLineString")
    return build_route(route_name, line, stops)


def load_geojson(path: str | Path) -> Route:
    """Route from a GeoJSON file; see ``parse_geojson``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise RouteNotFoundError(f"no route file at {path}") from exc
    except OSError as exc:
        raise RouteError(f"cannot read route file {path}: {exc.strerror}") from exc
    return parse_geojson(data, name=path.stem)


def demo_route() -> Route:
    """Algiers (Caroubier) to Blida, shipped with the agent so the simulator runs out of the box."""
    data = (resources.files("fleet_agent") / "data" / DEMO_ROUTE).read_bytes()
    return parse_geojson(data, name=DEMO_ROUTE.removesuffix(".geojson"))


def load_route(path: str | Path | None = None, shape_id: str | None = None) -> Route:
    """The route a sim source names: a GTFS shape when ``shape_id`` is set, else GeoJSON, else the demo."""
    if shape_id is not None:
        if path is None:
            raise RouteError(f"shape_id {shape_id!r} needs the path of a GTFS feed")
        return load_gtfs_shape(path, shape_id)
    return demo_route() if path is None else load_geojson(path)


# --- GTFS -----------------------------------------------------------------------------------------


class GtfsTables:
    """A GTFS feed as a folder or a zip (tables at its root or in one subfolder)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise RouteNotFoundError(f"no GTFS feed at {path}")
        self.path = path
        self._zip: dict[str, str] | None = None
        if path.is_file():
            try:
                with zipfile.ZipFile(path) as archive:
                    self._zip = {Path(n).name: n for n in archive.namelist() if n.endswith(".txt")}
            except zipfile.BadZipFile as exc:
                raise RouteError(f"GTFS feed {path} is neither a folder nor a zip file") from exc

    def has(self, table: str) -> bool:
        return table in self._zip if self._zip is not None else (self.path / table).is_file()

    def rows(self, table: str, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
        """Rows as ``(line number, {column: value})``, columns read by header name (do not change them).

        Parsed tables are kept by content: a simulator placing hundreds of buses on
        the trips of one feed parses it once, not once per bus.
        """
        if not self.has(table):
            raise RouteError(f"GTFS feed {self.path} has no {table}")
        header, rows = _parse(f"{self.path}/{table}", self._bytes(table))
        missing = [column for column in required if column not in header]
        if missing:
            raise RouteError(f"{self.path}/{table} lacks column(s) {', '.join(missing)}")
        yield from rows

    def _bytes(self, table: str) -> bytes:
        if self._zip is None:
            return (self.path / table).read_bytes()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(self._zip[table])


@functools.lru_cache(maxsize=16)
def _parse(where: str, raw: bytes) -> tuple[tuple[str, ...], tuple[tuple[int, dict[str, str]], ...]]:
    """A GTFS table's header and rows; ``where`` names it in errors."""
    try:
        reader = csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""))
        header = tuple(column.strip() for column in next(reader, []))
        rows = []
        for values in reader:
            if values:
                padded = [v.strip() for v in values] + [""] * (len(header) - len(values))
                rows.append((reader.line_num, dict(zip(header, padded, strict=False))))
        return header, tuple(rows)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RouteError(f"{where} is not UTF-8 CSV: {exc}") from exc


def _coordinate(feed: GtfsTables, table: str, line: int, row: dict[str, str], lat: str, lon: str) -> Point:
    try:
        return Point(float(row[lat]), float(row[lon]))
    except (KeyError, ValueError) as exc:
        raise RouteError(
            f"{feed.path}/{table} line {line}: bad {lat}/{lon} {row.get(lat)!r}, {row.get(lon)!r}"
        ) from exc


def _sequence(feed: GtfsTables, table: str, line: int, value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise RouteError(f"{feed.path}/{table} line {line}: sequence {value!r} is not an integer") from exc


def _shape_points(feed: GtfsTables, shape_id: str) -> list[Point]:
    table = "shapes.txt"
    rows: list[tuple[int, Point]] = []
    columns = ("shape_id", "shape_pt_lat", "shape_pt_lon", "shape_pt_sequence")
    for line, row in feed.rows(table, columns):
        if row["shape_id"] == shape_id:
            point = _coordinate(feed, table, line, row, "shape_pt_lat", "shape_pt_lon")
            rows.append((_sequence(feed, table, line, row["shape_pt_sequence"]), point))
    if not rows:
        raise ShapeNotFoundError(f"GTFS feed {feed.path} has no shape {shape_id!r} in {table}")
    rows.sort(key=lambda item: item[0])
    return [point for _, point in rows]


def _trip_stops(feed: GtfsTables, shape_id: str, trip_id: str | None) -> list[tuple[str, str, Point]]:
    """The stops of ``trip_id``, or of the first trip using the shape, in stop_sequence order."""
    if not all(feed.has(t) for t in ("trips.txt", "stop_times.txt", "stops.txt")):
        if trip_id is not None:
            raise TripNotFoundError(f"GTFS feed {feed.path} lacks trips, stop_times or stops")
        logger.info("GTFS feed %s has no trip tables: shape %s gets no stops", feed.path, shape_id)
        return []
    chosen: str | None = None
    for _, row in feed.rows("trips.txt", ("trip_id",)):
        if row["trip_id"] == trip_id or (trip_id is None and row.get("shape_id") == shape_id):
            if row.get("shape_id") != shape_id:
                raise TripNotFoundError(
                    f"trip {trip_id!r} uses shape {row.get('shape_id')!r}, not {shape_id!r}"
                )
            chosen = row["trip_id"]
            break
    if chosen is None:
        if trip_id is not None:
            raise TripNotFoundError(f"GTFS feed {feed.path} has no trip {trip_id!r}")
        logger.info("no trip of %s uses shape %s: it gets no stops", feed.path, shape_id)
        return []
    calls: list[tuple[int, str]] = [
        (_sequence(feed, "stop_times.txt", line, row["stop_sequence"]), row["stop_id"])
        for line, row in feed.rows("stop_times.txt", ("trip_id", "stop_id", "stop_sequence"))
        if row["trip_id"] == chosen
    ]
    wanted = {stop_id for _, stop_id in calls}
    places: dict[str, tuple[str, Point]] = {}
    for line, row in feed.rows("stops.txt", ("stop_id",)):
        if row["stop_id"] in wanted:
            if row.get("stop_lat") and row.get("stop_lon"):
                point = _coordinate(feed, "stops.txt", line, row, "stop_lat", "stop_lon")
                places[row["stop_id"]] = (row.get("stop_name", ""), point)
            else:
                logger.warning("stop %s of trip %s has no position, skipped", row["stop_id"], chosen)
    return [
        (stop_id, places[stop_id][0], places[stop_id][1]) for _, stop_id in sorted(calls) if stop_id in places
    ]


def load_gtfs_shape(feed: str | Path, shape_id: str, *, trip_id: str | None = None) -> Route:
    """Route along one GTFS shape, with the stops of ``trip_id`` (default: the first trip using the shape)."""
    gtfs = GtfsTables(Path(feed))
    points = _shape_points(gtfs, shape_id)
    stops = _trip_stops(gtfs, shape_id, trip_id)
    return build_route(f"shape {shape_id}", points, stops, stops_in_order=True)
