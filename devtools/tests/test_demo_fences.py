"""The demo feed's geofences: they parse, sit where the feed's stations and roads are, and raise events."""

from __future__ import annotations

import csv
from pathlib import Path

import shapely

from fleet_devtools.demo_feed import feed_dir
from fleet_devtools.synthetic_feed import densify
from fleet_processing.detection import DetectorPolicy, Observation
from fleet_processing.fence_geojson import fences_from_geojson
from fleet_processing.geofences import FenceIndex, FenceState, fence_step
from fleet_schemas.events import Event

FENCES = feed_dir() / "geofences.geojson"
SPEED_MPS = 25.0


def _rows(name: str) -> list[dict[str, str]]:
    with (feed_dir() / name).open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _shape(shape_id: str) -> list[tuple[float, float]]:
    return [
        (float(r["shape_pt_lat"]), float(r["shape_pt_lon"]))
        for r in _rows("shapes.txt")
        if r["shape_id"] == shape_id
    ]


def test_the_demo_fences_parse_and_each_station_circle_holds_its_stop() -> None:
    fences = fences_from_geojson("demo-dz", Path(FENCES).read_bytes())
    assert {f.kind for f in fences} == {"station", "depot", "speed_zone", "restricted"}
    stops = {r["stop_name"]: (float(r["stop_lat"]), float(r["stop_lon"])) for r in _rows("stops.txt")}
    stations = [f for f in fences if f.kind == "station"]
    assert len(stations) >= 3
    for fence in stations:
        lat, lon = stops[fence.name]
        assert fence.area.contains(shapely.Point(lon, lat)), fence.fence_id
    FenceIndex(fences)


def test_a_coach_down_the_n1_enters_and_leaves_blida_and_speeds_through_djelfa() -> None:
    index = FenceIndex(fences_from_geojson("demo-dz", Path(FENCES).read_bytes()))
    track = densify(_shape("ALG-GHA-out"), SPEED_MPS * 10)  # a fix every 10 s
    state, previous, events = FenceState(), None, list[Event]()
    for k, (lat, lon) in enumerate(track):
        obs = Observation("coach-1", 1_780_000_000_000 + k * 10_000, k, lat, lon, SPEED_MPS)
        state, found = fence_step(state, previous, obs, index, "demo-dz", DetectorPolicy())
        events += found
        previous = obs
    seen = [(e.kind, e.subject) for e in events]
    assert seen[0] == ("geofence_entered", "station-alg-car")
    assert ("geofence_exited", "station-alg-car") in seen
    assert seen.count(("geofence_entered", "station-bli")) == 1
    assert seen.count(("geofence_exited", "station-bli")) == 1
    djelfa = [e for e in events if e.subject == "speed-djelfa-n1"]
    assert [e.kind for e in djelfa] == ["geofence_entered", "overspeed", "geofence_exited"]
    assert djelfa[1].details["speed_mps"] == SPEED_MPS
