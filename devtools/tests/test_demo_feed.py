"""The Algerian demo feed is consistent GTFS, checked with plain csv and haversine (no importer needed)."""

from __future__ import annotations

import csv
import itertools
import math
from collections import defaultdict

import pytest

from fleet_devtools.demo_feed import build_feed, feed_dir, load_source, stale_tables
from fleet_schemas.geo import haversine_m

FEED = feed_dir()
NEAR_SHAPE_M = 100.0
BUS_MAX_KMH = 150.0
Rows = list[dict[str, str]]


def _read(table: str) -> Rows:
    with (FEED / table).open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _seconds(value: str) -> int:
    hours, minutes, seconds = (int(part) for part in value.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def _to_segment_m(p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance from p to segment ab, on a local equirectangular plane (segments are 2 km at most)."""
    k = math.cos(math.radians(a[0]))
    ax, ay, bx, by, px, py = a[1] * k, a[0], b[1] * k, b[0], p[1] * k, p[0]
    dx, dy = bx - ax, by - ay
    t = 0.0 if dx == dy == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return haversine_m(p[0], p[1], ay + t * dy, (ax + t * dx) / k)


def _point_at(points: list[tuple[float, float, float]], along: float) -> tuple[float, float]:
    """The shape's point ``along`` metres from its start, interpolated between vertices."""
    for (lat1, lon1, d1), (lat2, lon2, d2) in itertools.pairwise(points):
        if d1 <= along <= d2:
            f = (along - d1) / (d2 - d1)
            return lat1 + f * (lat2 - lat1), lon1 + f * (lon2 - lon1)
    raise AssertionError(f"{along} m is beyond the shape")


def _shapes() -> dict[str, list[tuple[float, float, float]]]:
    shapes: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    for row in _read("shapes.txt"):
        shapes[row["shape_id"]].append(
            (
                int(row["shape_pt_sequence"]),
                float(row["shape_pt_lat"]),
                float(row["shape_pt_lon"]),
                float(row["shape_dist_traveled"]),
            )
        )
    return {k: [(lat, lon, d) for _, lat, lon, d in sorted(v)] for k, v in shapes.items()}


def _stop_times() -> dict[str, Rows]:
    by_trip: dict[str, Rows] = defaultdict(list)
    for row in _read("stop_times.txt"):
        by_trip[row["trip_id"]].append(row)
    return {k: sorted(v, key=lambda r: int(r["stop_sequence"])) for k, v in by_trip.items()}


def test_shipped_tables_are_what_the_source_generates() -> None:
    assert stale_tables(build_feed(load_source()), FEED) == []


def test_every_id_a_table_names_exists_in_the_table_that_defines_it() -> None:
    agencies = {row["agency_id"] for row in _read("agency.txt")}
    routes = {row["route_id"]: row for row in _read("routes.txt")}
    stops = {row["stop_id"] for row in _read("stops.txt")}
    services = {row["service_id"] for row in _read("calendar.txt")}
    shapes = _shapes()
    trips = _read("trips.txt")
    assert len({t["trip_id"] for t in trips}) == len(trips)
    assert {r["agency_id"] for r in routes.values()} <= agencies
    for trip in trips:
        assert trip["route_id"] in routes
        assert trip["service_id"] in services
        assert trip["shape_id"] in shapes
    stop_times = _stop_times()
    assert set(stop_times) == {t["trip_id"] for t in trips}
    assert {row["stop_id"] for rows in stop_times.values() for row in rows} == stops
    assert {row["agency_timezone"] for row in _read("agency.txt")} == {"Africa/Algiers"}


def test_every_line_runs_both_ways_a_few_times_a_day_through_2027() -> None:
    directions: dict[str, set[str]] = defaultdict(set)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for trip in _read("trips.txt"):
        directions[trip["route_id"]].add(trip["direction_id"])
        counts[trip["route_id"], trip["direction_id"]] += 1
    assert set(directions) >= {"ALG-ORN", "ALG-CST", "ALG-BJA", "ORN-TLM", "ALG-GHA"}
    assert all(found == {"0", "1"} for found in directions.values())
    assert min(counts.values()) >= 2
    assert all(row["end_date"] >= "20271231" for row in _read("calendar.txt"))


def test_shape_distances_are_metres_that_never_decrease() -> None:
    for shape_id, points in _shapes().items():
        assert points[0][2] == 0.0, shape_id
        for (lat1, lon1, d1), (lat2, lon2, d2) in itertools.pairwise(points):
            step = haversine_m(lat1, lon1, lat2, lon2)
            assert d2 > d1, shape_id
            assert d2 - d1 == pytest.approx(step, abs=0.2), shape_id  # metres, to the rounding
            assert step <= 2000.5, shape_id  # dense enough to follow the road


def test_every_stop_is_within_100_m_of_its_shape_where_its_distance_says() -> None:
    stops = {row["stop_id"]: (float(row["stop_lat"]), float(row["stop_lon"])) for row in _read("stops.txt")}
    shape_of = {row["trip_id"]: row["shape_id"] for row in _read("trips.txt")}
    shapes = _shapes()
    for trip_id, rows in _stop_times().items():
        points = shapes[shape_of[trip_id]]
        for row in rows:
            where = stops[row["stop_id"]]
            gap = min(_to_segment_m(where, a[:2], b[:2]) for a, b in itertools.pairwise(points))
            assert gap <= NEAR_SHAPE_M, (trip_id, row["stop_id"], gap)
            at = _point_at(points, float(row["shape_dist_traveled"]))
            assert haversine_m(*where, *at) <= NEAR_SHAPE_M, (trip_id, row["stop_id"])
        assert float(rows[-1]["shape_dist_traveled"]) == pytest.approx(points[-1][2], abs=NEAR_SHAPE_M)


def test_times_increase_and_no_bus_must_drive_faster_than_150_kmh() -> None:
    blank = 0
    for trip_id, rows in _stop_times().items():
        assert rows[0]["arrival_time"], trip_id  # trip edges have times
        assert rows[-1]["departure_time"], trip_id
        timed = []
        for row in rows:
            if not row["arrival_time"]:
                assert row["timepoint"] == "0", trip_id
                assert not row["departure_time"], trip_id
                blank += 1
                continue
            arrival, departure = _seconds(row["arrival_time"]), _seconds(row["departure_time"])
            assert arrival <= departure, trip_id
            timed.append((arrival, departure, float(row["shape_dist_traveled"])))
        for (_, left, d1), (arrive, _, d2) in itertools.pairwise(timed):
            assert arrive > left, trip_id
            assert d2 > d1, trip_id
            assert (d2 - d1) / (arrive - left) * 3.6 < BUS_MAX_KMH, trip_id
    assert blank > 0  # some trips exercise interpolation


@pytest.mark.parametrize(
    ("route_id", "low_h", "high_h"),
    [("ALG-ORN", 5, 6), ("ALG-CST", 5, 6), ("ALG-BJA", 4, 5), ("ORN-TLM", 2, 3), ("ALG-GHA", 8, 9)],
)
def test_durations_are_close_to_the_published_ones(route_id: str, low_h: float, high_h: float) -> None:
    route_of = {row["trip_id"]: row["route_id"] for row in _read("trips.txt")}
    for trip_id, rows in _stop_times().items():
        if route_of[trip_id] == route_id:
            hours = (_seconds(rows[-1]["arrival_time"]) - _seconds(rows[0]["departure_time"])) / 3600
            assert low_h <= hours <= high_h, trip_id
