"""The run-time network: projection, plans, the shape index, and the feeds it refuses."""

from __future__ import annotations

from datetime import date

import msgspec
import numpy as np
import pytest

from fleet_devtools.synthetic_feed import demo_like_feed
from fleet_processing.errors import UnusableFeedError
from fleet_processing.network import build_network
from fleet_schemas.gtfs import Trip
from fleet_testing.trips import line, network

DEMO = demo_like_feed(date(2026, 12, 1), step_m=1000.0)


def test_the_projection_keeps_lengths_within_the_stated_distortion_across_northern_algeria() -> None:
    net = build_network(DEMO, operator="demo", feed_id=1)
    worst = 0.0
    for shape, line_ in zip(DEMO.shapes, net.shapes, strict=True):
        projected = np.hypot(*np.diff(line_.xy, axis=0).T)
        measured = np.diff(shape.dist_m)
        worst = max(worst, float(np.max(np.abs(projected / measured - 1))))
    assert worst < 0.006  # the docstring's 0.6 % at 700 km from the central meridian (plus haversine's 0.5 %)


def test_every_trip_has_a_plan_on_its_projected_shape() -> None:
    net = build_network(DEMO, operator="demo", feed_id=1)
    assert len(net.plans) == len(DEMO.trips)
    plan = net.plans[net.plan_index["alger-oran-3"]]
    assert plan.shape.shape_id == "alger-oran-shape"
    assert plan.stop_ids[0] == "alger-oran-s0"
    assert np.all(np.diff(plan.stop_dist_m) > 0)
    assert plan.shape.length_m == pytest.approx(DEMO.shapes[0].dist_m[-1])


def test_shapes_near_a_point_come_from_the_index() -> None:
    net = build_network(DEMO, operator="demo", feed_id=1)
    x, y = net.project(np.array([-1.3150]), np.array([34.8783]))  # Tlemcen
    near = {net.shapes[i].shape_id for i in net.shapes_near(float(x[0]), float(y[0]), 500.0)}
    assert near == {"oran-tlemcen-shape", "oran-tlemcen-back-shape"}
    xs, ys = net.project(np.array([3.0866, -0.6308]), np.array([36.7347, 35.6971]))
    assert (float(xs[0]), float(ys[0])) == tuple(float(v) for v in net.project(3.0866, 36.7347))
    assert float(np.hypot(xs[1] - xs[0], ys[1] - ys[0])) == pytest.approx(352_000, rel=0.01)  # Alger-Oran


def test_a_feed_breaking_the_contract_is_refused_with_a_typed_error() -> None:
    feed, _ = network([line("straight")])
    orphan = Trip(trip_id="ghost", route_id="straight", service_id="daily", shape_id="nowhere")
    broken = msgspec.structs.replace(feed, trips=[*feed.trips, orphan])
    with pytest.raises(UnusableFeedError) as caught:
        build_network(broken, operator="test", feed_id=1)
    assert caught.value.code == "unusable_feed"
    assert "ghost" in caught.value.message
