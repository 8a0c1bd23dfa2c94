"""The processing bench's fences: on the lines where buses meet them, then synthetic ones to the count."""

from __future__ import annotations

from datetime import date

import shapely

from fleet_devtools.bench_fences import bench_fences
from fleet_devtools.synthetic_feed import demo_like_feed

FEED = demo_like_feed(date(2026, 12, 1))


def test_every_stop_gets_a_station_and_every_line_speed_zones_then_synthetic_fences_fill_the_count() -> None:
    fences = bench_fences(FEED, "bench", 400, report=lambda _: None)
    assert len(fences) == len({f.fence_id for f in fences}) == 400
    stations = [f for f in fences if f.fence_id.startswith("stop-")]
    assert len(stations) == len(FEED.stops)
    for stop, station in zip(FEED.stops, stations, strict=True):
        assert shapely.intersects_xy(station.area, stop.lon, stop.lat)
    zones = [f for f in fences if f.fence_id.startswith("speed-")]
    assert {z.fence_id.rsplit("-", 1)[0] for z in zones} == {f"speed-{s.shape_id}" for s in FEED.shapes}
    assert all(
        z.speed_limit_mps is not None and z.speed_limit_mps < 22.0 for z in zones
    )  # coaches drive 22 m/s
    others = fences[len(stations) + len(zones) :]
    assert others
    assert all(f.fence_id.split("-")[0] in ("station", "depot", "zone", "restricted") for f in others)


def test_the_same_count_gives_the_same_fences_and_a_larger_set_holds_the_smaller() -> None:
    small = bench_fences(FEED, "bench", 300, report=lambda _: None)
    large = bench_fences(FEED, "bench", 600, report=lambda _: None)
    assert [f.fence_id for f in large[:300]] == [f.fence_id for f in small]
    assert all(a.area.equals(b.area) for a, b in zip(small, large, strict=False))
