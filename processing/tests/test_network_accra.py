"""The real Accra feed (OpenStreetMap, frequency-based) as a network: every trip planned, buses followed."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TextIO

import numpy as np
import pytest

from fleet_devtools.synthetic_feed import fix_at
from fleet_processing.gtfs import read_feed
from fleet_processing.network import Network, build_network
from fleet_processing.plan import TripInstance
from fleet_processing.progress import BusFixes, BusProgress, FixPoint, advance_batch
from fleet_processing.service_day import instances_between, origin_ms
from fleet_schemas.gtfs import Feed

ACCRA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gtfs" / "accra"
pytestmark = pytest.mark.skipif(not ACCRA.is_dir(), reason=f"the Accra feed is not at {ACCRA}")
DAY = date(2019, 3, 6)
"""a Wednesday inside the feed's only calendar (2019-03-04 to 2020-01-31)"""


def _open(name: str) -> TextIO | None:
    path = ACCRA / name
    return path.open(encoding="utf-8-sig", newline="") if path.exists() else None


@pytest.fixture(scope="module")
def accra() -> tuple[Feed, Network]:
    feed = read_feed(_open, today=date(2026, 12, 1)).feed
    assert feed is not None
    return feed, build_network(feed, operator="accra", feed_id=1)


def test_the_accra_feed_builds_a_network_with_a_plan_for_every_trip(accra: tuple[Feed, Network]) -> None:
    feed, net = accra
    assert len(net.plans) == len(feed.trips)
    assert len(net.shapes) == len(feed.shapes)
    assert len(net.seg_x) == sum(len(s.lats) for s in feed.shapes)
    for shape, line in zip(feed.shapes, net.shapes, strict=True):
        projected = float(np.hypot(*np.diff(line.xy, axis=0).T).sum())
        assert projected == pytest.approx(shape.dist_m[-1] - shape.dist_m[0], rel=0.01, abs=5.0)
    tz = feed.agencies[0].timezone
    eight = origin_ms(DAY, tz) + 8 * 3_600_000
    running = instances_between(net, eight, eight, slack_s=0)
    assert len(running) > len({i.plan.trip_id for i in running})  # frequencies expanded into instances


def _truth_m(instance: TripInstance, time_ms: int) -> float:
    """Where a bus keeping exactly to the instance's times is: interpolated between its stops."""
    return float(np.interp(time_ms, instance.departure_ms(), instance.plan.stop_dist_m))


def test_buses_naming_accra_trips_are_followed_along_them(accra: tuple[Feed, Network]) -> None:
    feed, net = accra
    eight = origin_ms(DAY, feed.agencies[0].timezone) + 8 * 3_600_000
    running = [
        i for i in instances_between(net, eight, eight, slack_s=0) if i.arrival_ms()[-1] > eight + 900_000
    ]
    rng = np.random.default_rng(5)
    chosen = [running[k] for k in rng.choice(len(running), size=min(40, len(running)), replace=False)]
    shapes = {s.shape_id: s for s in feed.shapes}
    states: list[BusProgress | None] = [None] * len(chosen)
    errors = []
    for step in range(30):
        t = eight + step * 10_000
        items = []
        for k, instance in enumerate(chosen):
            lat, lon = fix_at(shapes[instance.plan.shape.shape_id], _truth_m(instance, t), 8.0, rng)
            fix = FixPoint(t, lat, lon, accuracy_m=8.0, trip_id=instance.plan.trip_id)
            items.append(BusFixes(f"b{k}", states[k], [fix]))
        results = advance_batch(net, items, t)
        states = [r.progress for r in results]
        for instance, r in zip(chosen, results, strict=True):
            assert r.calculated.trip_id == instance.plan.trip_id
            if r.along_m is not None:
                errors.append(abs(r.along_m - _truth_m(instance, t)))
    assert np.percentile(errors, 90) < 30
