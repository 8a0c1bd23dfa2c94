"""Simulated coaches on the Algerian demo feed: joined mid-trip, on time against the schedule, truth known."""

from __future__ import annotations

import csv
import itertools
from datetime import UTC, date, datetime

import pytest
from click.testing import CliRunner

from fleet_agent.route import Point
from fleet_agent.schedule import load_trip
from fleet_agent.simulator import SimConfig, TruthPosition, TruthStop, plan_trip, steps, truth
from fleet_cli.cli import main as fleet
from fleet_devtools.demo_feed import feed_dir
from fleet_devtools.simulate import trips_running

FEED = feed_dir()
DAY = date(2026, 12, 1)
QUIET = SimConfig(loop=False, traffic_per_hour=0.0, outages_per_hour=0.0)
NEAR_SHAPE_M = 30.0


def _algiers_ms(day: int, hour: int, minute: int = 0) -> int:
    """Epoch ms of a wall time in Algiers (UTC+1 all year) in December 2026."""
    return int(datetime(2026, 12, day, hour - 1, minute, tzinfo=UTC).timestamp() * 1000)


def test_a_9_hour_trip_joined_4_hours_in_runs_late_by_its_delay_for_30_seconds() -> None:
    schedule = load_trip(FEED, "ALG-GHA-out-0700")
    timetable = schedule.on(DAY)
    trip = plan_trip(schedule.route, SimConfig(loop=False, delay_s=300.0), timetable)
    records = [
        record
        for before, after, fix in itertools.islice(steps(trip, _algiers_ms(1, 11, 5), seed=2), 30)
        for record in truth(trip, before, after, fix)
    ]
    positions = [r for r in records if isinstance(r, TruthPosition)]
    assert len(positions) == 30
    medea, djelfa = timetable.distances_m[2], timetable.distances_m[3]
    assert all(medea < p.dist_m < djelfa for p in positions)  # on the N1 between Médéa and Djelfa
    assert all(p.delay_s is not None and abs(p.delay_s - 300.0) < 30.0 for p in positions)
    assert [p.dist_m for p in positions] == sorted(p.dist_m for p in positions)
    for p in positions:
        assert schedule.route.project(Point(p.lat, p.lon)).offset_m < NEAR_SHAPE_M
    assert {p.trip_id for p in positions} == {"ALG-GHA-out-0700"}


def test_night_coaches_are_under_way_at_three_in_the_morning_on_the_previous_service_day() -> None:
    running = trips_running(str(FEED), _algiers_ms(1, 3))
    assert {"ALG-GHA-out-2000", "ALG-ORN-out-2230", "ALG-CST-out-2330"} <= set(running)
    assert not any(trip.endswith(("-0600", "-0700")) for trip in running)


def test_every_trip_under_way_starts_on_its_shape_where_its_schedule_says() -> None:
    now = _algiers_ms(1, 10, 30)
    running = trips_running(str(FEED), now)
    assert len(running) >= 8
    for trip_id in running:
        schedule = load_trip(FEED, trip_id)
        trip = plan_trip(schedule.route, QUIET, schedule.on(DAY))
        before, after, fix = next(steps(trip, now, seed=1))
        first = truth(trip, before, after, fix)[0]
        assert isinstance(first, TruthPosition)
        assert first.phase in ("driving", "dwelling"), trip_id
        assert first.delay_s is not None
        assert abs(first.delay_s) < 5.0, trip_id


@pytest.mark.parametrize("trip_id", ["ORN-TLM-out-1000", "ALG-CST-in-2200"])
def test_a_whole_trip_serves_every_stop_close_to_schedule(trip_id: str) -> None:
    """One with blank (interpolated) times, one past midnight."""
    schedule = load_trip(FEED, trip_id)
    trip = plan_trip(schedule.route, QUIET, schedule.on(DAY))
    served = [
        record
        for before, after, fix in steps(trip, schedule.on(DAY).departures_ms[0] - 10_000, seed=5)
        for record in truth(trip, before, after, fix)
        if isinstance(record, TruthStop)
    ]
    assert [s.stop_id for s in served] == [call.stop_id for call in schedule.calls]
    for stop in served[:-1]:
        assert stop.departed_ms >= stop.scheduled_departure_ms, stop
    for stop in served[1:]:
        assert abs(stop.arrived_ms - stop.scheduled_arrival_ms) < 180_000, stop


def test_simulate_refuses_trips_without_a_feed_and_a_feed_without_trips() -> None:
    runner = CliRunner()
    no_feed = runner.invoke(fleet, ["simulate", "--trip", "ALG-ORN-out-0600"])
    assert no_feed.exit_code == 2
    assert "--trip and --trips need --feed" in no_feed.output
    no_trip = runner.invoke(fleet, ["simulate", "--feed", str(FEED)])
    assert no_trip.exit_code == 2
    assert "--feed needs --trip" in no_trip.output


def test_the_simulator_measures_the_shape_as_the_feed_does() -> None:
    """Truth distances are comparable with shape_dist_traveled: the same spherical metres, to the rounding."""
    with (FEED / "stop_times.txt").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for trip_id in {row["trip_id"] for row in rows}:
        feed_m = [float(row["shape_dist_traveled"]) for row in rows if row["trip_id"] == trip_id]
        simulated_m = [call.distance_m for call in load_trip(FEED, trip_id).calls]
        assert simulated_m == pytest.approx(feed_m, abs=1.0), trip_id
