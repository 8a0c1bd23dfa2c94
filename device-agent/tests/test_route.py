"""Route geometry and loaders: GeoJSON, GTFS shapes (synthetic quirks and the real Accra feed)."""

from __future__ import annotations

import itertools
import json
import logging
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_agent.route import (
    MAX_STOP_OFFSET_M,
    Point,
    Route,
    RouteError,
    RouteNotFoundError,
    ShapeNotFoundError,
    TripNotFoundError,
    bearing_deg,
    build_route,
    demo_route,
    destination,
    haversine_m,
    load_geojson,
    load_gtfs_shape,
    load_route,
    parse_geojson,
)

ACCRA = Path(__file__).resolve().parents[3] / "shared/data/gtfs/accra"
needs_accra = pytest.mark.skipif(not ACCRA.is_dir(), reason=f"shared Accra GTFS feed absent at {ACCRA}")

points = st.builds(
    Point,
    lat=st.floats(min_value=-70, max_value=70),
    lon=st.floats(min_value=-170, max_value=170),
)


@st.composite
def polylines(draw: st.DrawFn) -> Route:
    """Routes of 2-12 vertices, 5 m to 5 km apart, wandering in any direction (self-crossings included)."""
    vertices = [draw(points)]
    for _ in range(draw(st.integers(min_value=1, max_value=11))):
        bearing = draw(st.floats(min_value=0, max_value=360, exclude_max=True))
        vertices.append(destination(vertices[-1], bearing, draw(st.floats(min_value=5, max_value=5000))))
    return build_route("drawn", vertices)


@given(points, points)
def test_haversine_is_symmetric_and_zero_on_itself(a: Point, b: Point) -> None:
    assert haversine_m(a, b) == pytest.approx(haversine_m(b, a), abs=1e-6)
    assert haversine_m(a, a) == 0.0


@given(points, points, points)
def test_haversine_obeys_the_triangle_inequality(a: Point, b: Point, c: Point) -> None:
    assert haversine_m(a, c) <= haversine_m(a, b) + haversine_m(b, c) + 1e-6


@given(
    points, st.floats(min_value=0, max_value=360, exclude_max=True), st.floats(min_value=1, max_value=50_000)
)
def test_destination_lands_at_the_distance_and_bearing_asked(
    a: Point, bearing: float, distance: float
) -> None:
    b = destination(a, bearing, distance)
    assert haversine_m(a, b) == pytest.approx(distance, rel=1e-6, abs=1e-3)
    turn = (bearing_deg(a, b) - bearing + 180) % 360 - 180
    assert abs(turn) < 1e-3


def test_bearings_point_the_compass_way() -> None:
    origin = Point(36.0, 3.0)
    assert bearing_deg(origin, Point(36.1, 3.0)) == pytest.approx(0.0)
    assert bearing_deg(origin, Point(36.0, 3.1)) == pytest.approx(90.0, abs=0.1)
    assert bearing_deg(origin, Point(35.9, 3.0)) == pytest.approx(180.0)
    assert bearing_deg(origin, Point(36.0, 2.9)) == pytest.approx(270.0, abs=0.1)


@given(polylines(), st.floats(min_value=0, max_value=1))
def test_interpolated_point_lies_on_the_polyline(route: Route, share: float) -> None:
    point = route.point_at(share * route.length_m)
    assert route.project(point).offset_m < 0.01


@given(polylines(), st.floats(min_value=0, max_value=1), st.floats(min_value=0, max_value=1))
def test_distance_along_is_monotonic_and_never_shorter_than_the_chord(
    route: Route, first: float, second: float
) -> None:
    assert all(b > a for a, b in itertools.pairwise(route.cumulative_m))
    near, far = sorted((first * route.length_m, second * route.length_m))
    chord = haversine_m(route.point_at(near), route.point_at(far))
    # Vertices are joined linearly in (lat, lon), not along great circles: 0.1 % covers the difference.
    assert chord <= (far - near) * 1.001 + 0.01


@given(polylines())
def test_length_is_the_sum_of_the_segments_and_ends_clamp(route: Route) -> None:
    segments = sum(haversine_m(a, b) for a, b in itertools.pairwise(route.points))
    assert route.length_m == pytest.approx(segments)
    assert route.point_at(-10.0) == route.points[0]
    assert route.point_at(route.length_m + 10.0) == route.points[-1]


@given(polylines(), st.floats(min_value=0, max_value=1))
def test_projection_beyond_a_mark_never_goes_back(route: Route, share: float) -> None:
    mark = share * route.length_m
    assert route.project(route.points[0], after_m=mark).distance_m >= mark - 1e-6


def test_repeated_vertices_are_dropped_and_a_single_point_is_refused() -> None:
    a, b = Point(36.0, 3.0), Point(36.01, 3.0)
    assert build_route("r", [a, a, b, b]).points == (a, b)
    with pytest.raises(RouteError, match="two distinct vertices") as caught:
        build_route("r", [a, a])
    assert caught.value.code == "route_invalid"


def test_altitude_is_interpolated_when_every_vertex_has_one() -> None:
    route = build_route("r", [Point(36.0, 3.0, 10.0), Point(36.01, 3.0, 30.0)])
    assert route.point_at(route.length_m / 2).alt_m == pytest.approx(20.0)


# --- GeoJSON --------------------------------------------------------------------------------------


def test_demo_route_runs_from_caroubier_to_blida_with_named_stops() -> None:
    route = demo_route()
    assert 30_000 < route.length_m < 80_000
    assert 30 <= len(route.points) <= 80
    names = [stop.name for stop in route.stops]
    assert "Caroubier" in names[0]
    assert "Blida" in names[-1]
    assert {"Birtouta", "Boufarik"} <= {name.split(" ")[0] for name in names}
    assert route.stops[0].distance_m == pytest.approx(0.0, abs=50)
    assert route.stops[-1].distance_m == pytest.approx(route.length_m, abs=50)
    assert haversine_m(route.points[0], Point(36.7347, 3.0866)) < 500
    assert haversine_m(route.points[-1], Point(36.4700, 2.8277)) < 500


def test_demo_route_file_says_it_is_approximate() -> None:
    from importlib import resources

    text = (resources.files("fleet_agent") / "data" / "algiers_blida.geojson").read_text(encoding="utf-8")
    assert "approximate" in json.loads(text)["features"][0]["properties"]["source"].lower()


def _geojson(*features: dict[str, object]) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


def _line(coordinates: object, kind: str = "LineString") -> dict[str, object]:
    return {
        "type": "Feature",
        "properties": {"name": "line"},
        "geometry": {"type": kind, "coordinates": coordinates},
    }


def _stop(name: str, lon: float, lat: float) -> dict[str, object]:
    return {
        "type": "Feature",
        "properties": {"name": name},
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


def test_feature_collection_uses_its_first_line_and_its_points_as_stops() -> None:
    text = _geojson(
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": []}},
        _stop("far end", 3.02, 36.0),
        _line([[3.0, 36.0], [3.01, 36.0], [3.02, 36.0]]),
        _line([[5.0, 30.0], [5.1, 30.0]]),
        _stop("middle", 3.01, 36.0001),
    )
    route = parse_geojson(text, name="fallback")
    assert route.name == "line"
    assert route.points[0] == Point(36.0, 3.0)
    assert [stop.name for stop in route.stops] == ["middle", "far end"]
    assert route.stops[0].offset_m == pytest.approx(11.1, abs=0.2)


def test_multilinestring_parts_are_joined_in_order() -> None:
    text = _geojson(_line([[[3.0, 36.0], [3.01, 36.0]], [[3.01, 36.0], [3.02, 36.0]]], "MultiLineString"))
    assert [p.lon for p in parse_geojson(text, name="m").points] == [3.0, 3.01, 3.02]


def test_bare_linestring_takes_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "oran_tlemcen.geojson"
    path.write_text(
        json.dumps({"type": "LineString", "coordinates": [[-0.64, 35.7, 100], [-1.3, 34.88, 800]]})
    )
    route = load_geojson(path)
    assert route.name == "oran_tlemcen"
    assert route.points[-1].alt_m == 800


def test_missing_geojson_file_is_route_not_found(tmp_path: Path) -> None:
    with pytest.raises(RouteNotFoundError, match="no route file") as caught:
        load_geojson(tmp_path / "absent.geojson")
    assert caught.value.code == "route_not_found"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not usable GeoJSON"),
        ('{"type": "LineString", "coordinates": [[3.0]]}', r"\$.coordinates\[0\]"),
        ('{"type": "Circle", "coordinates": []}', "Circle"),
        (_geojson(_stop("alone", 3.0, 36.0)), "no LineString"),
        ('{"type": "LineString", "coordinates": [[3.0, 95.0], [3.0, 36.0]]}', "not a WGS 84"),
    ],
)
def test_bad_geojson_is_a_route_error_that_says_where(text: str, says: str) -> None:
    with pytest.raises(RouteError, match=says) as caught:
        parse_geojson(text, name="bad")
    assert caught.value.code == "route_invalid"


# --- GTFS -----------------------------------------------------------------------------------------


def _feed(folder: Path, tables: dict[str, str]) -> Path:
    """A feed with the Accra quirks: CRLF, a BOM, columns in an unusual order, empty distances."""
    folder.mkdir()
    for name, text in tables.items():
        (folder / name).write_bytes(("\ufeff" + text).replace("\n", "\r\n").encode())
    return folder


SHAPES = """shape_pt_sequence,shape_id,shape_pt_lat,shape_pt_lon,shape_dist_traveled
3,S1,36.0,3.02,
1,S1,36.0,3.0,
2,S1,36.0,3.01,
1,S2,36.5,2.8,
2,S2,36.5,2.81,
"""
TRIPS = """route_id,trip_id,service_id,shape_id
R,T1,0,S1
R,T2,0,S2
"""
STOP_TIMES = """trip_id,arrival_time,departure_time,stop_id,stop_sequence
T1,06:05:00,06:05:00,B,2
T1,06:00:00,06:00:00,A,1
T1,06:09:00,06:09:00,C,3
"""
STOPS = """stop_lon,stop_name,stop_lat,stop_id,location_type
3.0,Départ,36.0,A,0
3.015,Milieu,36.0002,B,0
3.02,Terminus,36.0,C,0
"""
TABLES = {"shapes.txt": SHAPES, "trips.txt": TRIPS, "stop_times.txt": STOP_TIMES, "stops.txt": STOPS}


def test_gtfs_shape_is_ordered_by_sequence_with_its_trip_stops(tmp_path: Path) -> None:
    route = load_gtfs_shape(_feed(tmp_path / "feed", TABLES), "S1")
    assert [p.lon for p in route.points] == [3.0, 3.01, 3.02]
    assert [stop.name for stop in route.stops] == ["Départ", "Milieu", "Terminus"]
    assert route.stops[1].distance_m == pytest.approx(1349, abs=5)
    assert route.stops[-1].distance_m == pytest.approx(route.length_m)


def test_gtfs_zip_reads_like_the_folder(tmp_path: Path) -> None:
    folder = _feed(tmp_path / "feed", TABLES)
    archive = tmp_path / "feed.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for table in TABLES:
            zipped.write(folder / table, f"gtfs/{table}")
    assert load_gtfs_shape(archive, "S1") == load_gtfs_shape(folder, "S1")


def test_gtfs_shape_without_trip_tables_has_no_stops(tmp_path: Path) -> None:
    route = load_gtfs_shape(_feed(tmp_path / "feed", {"shapes.txt": SHAPES}), "S2")
    assert route.stops == ()
    assert len(route.points) == 2


def test_gtfs_stops_far_from_the_shape_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    far = STOPS.replace("3.015,Milieu,36.0002", "3.015,Milieu,36.01")
    with caplog.at_level(logging.WARNING, logger="fleet_agent.route"):
        route = load_gtfs_shape(_feed(tmp_path / "feed", {**TABLES, "stops.txt": far}), "S1")
    assert [stop.stop_id for stop in route.stops] == ["A", "C"]
    assert "Milieu" in caplog.text


def test_unknown_shape_is_shape_not_found(tmp_path: Path) -> None:
    with pytest.raises(ShapeNotFoundError, match="'S9'") as caught:
        load_gtfs_shape(_feed(tmp_path / "feed", TABLES), "S9")
    assert caught.value.code == "shape_not_found"


def test_trip_on_another_shape_is_trip_not_found(tmp_path: Path) -> None:
    with pytest.raises(TripNotFoundError, match="uses shape 'S2'") as caught:
        load_gtfs_shape(_feed(tmp_path / "feed", TABLES), "S1", trip_id="T2")
    assert caught.value.code == "trip_not_found"


def test_missing_feed_is_route_not_found(tmp_path: Path) -> None:
    with pytest.raises(RouteNotFoundError, match="no GTFS feed"):
        load_gtfs_shape(tmp_path / "nowhere", "S1")


@pytest.mark.parametrize(
    ("shapes", "says"),
    [
        ("shape_id,shape_pt_lat,shape_pt_sequence\nS1,36.0,1\n", "lacks column.*shape_pt_lon"),
        (
            "shape_id,shape_pt_lat,shape_pt_lon,shape_pt_sequence\nS1,north,3.0,1\n",
            "line 2: bad shape_pt_lat",
        ),
        (
            "shape_id,shape_pt_lat,shape_pt_lon,shape_pt_sequence\nS1,36.0,3.0,first\n",
            "line 2: sequence 'first'",
        ),
    ],
)
def test_malformed_shapes_say_which_column_or_line(tmp_path: Path, shapes: str, says: str) -> None:
    with pytest.raises(RouteError, match=says) as caught:
        load_gtfs_shape(_feed(tmp_path / "feed", {"shapes.txt": shapes}), "S1")
    assert caught.value.code == "route_invalid"


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "feed.zip"
    fake.write_text("not a zip")
    with pytest.raises(RouteError, match="neither a folder nor a zip"):
        load_gtfs_shape(fake, "S1")


def test_load_route_picks_gtfs_geojson_or_the_demo(tmp_path: Path) -> None:
    feed = _feed(tmp_path / "feed", TABLES)
    assert load_route(feed, "S1") == load_gtfs_shape(feed, "S1")
    assert load_route() == demo_route()
    path = tmp_path / "line.geojson"
    path.write_text(_geojson(_line([[3.0, 36.0], [3.01, 36.0]])))
    assert load_route(path) == load_geojson(path)
    with pytest.raises(RouteError, match="needs the path of a GTFS feed"):
        load_route(None, "S1")


@needs_accra
def test_real_accra_shape_loads_from_folder_and_zip_alike() -> None:
    route = load_gtfs_shape(ACCRA, "7589522")
    assert route == load_gtfs_shape(ACCRA / "GTFS_Accra.zip", "7589522")
    assert 5_000 < route.length_m < 15_000
    assert len(route.stops) == 24
    distances = [stop.distance_m for stop in route.stops]
    assert distances == sorted(distances)
    assert all(stop.offset_m < MAX_STOP_OFFSET_M for stop in route.stops)
