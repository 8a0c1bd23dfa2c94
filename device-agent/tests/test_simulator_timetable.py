"""A simulated bus on a timetable: it keeps to it plus its delay, joins it mid-trip, and tells the truth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_agent.config import SourceConfig
from fleet_agent.fix import Fix
from fleet_agent.route import Point, Route, build_route, destination
from fleet_agent.schedule import load_trip
from fleet_agent.simulator import (
    TRUTH_DECODER,
    BusState,
    LongStop,
    SimConfig,
    SimulatedSource,
    Timetable,
    Trip,
    TruthPosition,
    TruthRecord,
    TruthStop,
    plan_trip,
    steps,
    truth,
    with_faults_ahead,
)
from fleet_agent.sources import open_source
from fleet_testing.tiny_feed import write_feed

T0 = 1_796_108_400_000  # 2026-12-01 08:00 in Africa/Algiers (07:00 UTC)
ORIGIN = Point(36.47, 2.80)
QUIET = SimConfig(loop=False, traffic_per_hour=0.0, outages_per_hour=0.0)
ON_TIME_S = 120.0
"""A quiet bus reaches each stop within this of when it is due: pacing, braking and towns cost a little."""


def _line() -> Route:
    vertices = [destination(ORIGIN, 270, 1000.0 * i) for i in range(7)]
    stops = [
        ("S1", "one", vertices[0]),
        ("S2", "two", destination(ORIGIN, 270, 1500)),
        ("S3", "three", vertices[4]),
    ]
    return build_route("line", vertices, [*stops, ("S4", "four", vertices[-1])])


LINE = _line()


def _timetable(first_ms: int = T0) -> Timetable:
    """S1 08:00, S2 08:02-08:03, S3 08:06-08:07, S4 08:10: 36 to 50 km/h between stops."""
    offsets_s = [(0, 0), (120, 180), (360, 420), (600, 600)]
    return Timetable(
        trip_id="T1",
        start_date="20261201",
        stop_ids=tuple(stop.stop_id for stop in LINE.stops),
        stop_sequences=(1, 2, 3, 4),
        distances_m=tuple(stop.distance_m for stop in LINE.stops),
        arrivals_ms=tuple(first_ms + a * 1000 for a, _ in offsets_s),
        departures_ms=tuple(first_ms + d * 1000 for _, d in offsets_s),
    )


TIMETABLE = _timetable()


def _trip(delay_s: float = 0.0, **changes: object) -> Trip:
    config = msgspec.structs.replace(QUIET, delay_s=delay_s, **changes)
    return plan_trip(LINE, config, TIMETABLE)


def _run(trip: Trip, start_ms: int, seed: int = 1) -> list[tuple[BusState, BusState, Fix | None]]:
    return list(steps(trip, start_ms, seed))


def _truth(trip: Trip, start_ms: int, seed: int = 1) -> list[TruthRecord]:
    return [
        record
        for before, after, fix in _run(trip, start_ms, seed)
        for record in truth(trip, before, after, fix)
    ]


def _stops(records: list[TruthRecord]) -> list[TruthStop]:
    return [r for r in records if isinstance(r, TruthStop)]


seeds = st.integers(min_value=0, max_value=2**32)


@settings(max_examples=12, deadline=None)
@given(seeds, st.integers(min_value=0, max_value=900))
def test_bus_keeps_to_its_timetable_plus_delay_and_never_leaves_a_stop_early(seed: int, delay_s: int) -> None:
    trip = _trip(delay_s)
    served = _stops(_truth(trip, T0 - 30_000, seed))
    assert [s.stop_id for s in served] == ["S1", "S2", "S3", "S4"]
    for stop in served[:-1]:
        assert stop.departed_ms >= stop.scheduled_departure_ms + delay_s * 1000
    for stop in served[1:]:
        assert abs(stop.arrived_ms - stop.scheduled_arrival_ms - delay_s * 1000) <= ON_TIME_S * 1000, stop


def test_same_seed_gives_the_same_truth() -> None:
    trip = _trip(240.0, traffic_per_hour=20.0, outages_per_hour=20.0)
    assert _truth(trip, T0, 7) == _truth(trip, T0, 7)
    assert _truth(trip, T0, 7) != _truth(trip, T0, 8)


def test_bus_joined_mid_segment_starts_where_the_schedule_plus_delay_has_it() -> None:
    trip = _trip(300.0)
    halfway = T0 + 300_000 + 60_000  # half of S1 -> S2, run five minutes late
    _, first, _ = _run(trip, halfway)[0]
    assert first.phase == "driving"
    assert first.progress_m == pytest.approx(LINE.stops[1].distance_m / 2, abs=20.0)
    assert first.speed_mps > 0


def test_faults_given_ahead_play_that_far_past_where_a_joined_bus_starts() -> None:
    halfway = T0 + 60_000  # half of S1 -> S2
    config = with_faults_ahead(LINE, QUIET, TIMETABLE, halfway, (LongStop(at_m=200.0, duration_s=90.0),))
    trip = plan_trip(LINE, config, TIMETABLE)
    run = _run(trip, halfway)
    joined = run[0][0].progress_m
    halted = next(after for _, after, _ in run if after.played)
    assert halted.progress_m == pytest.approx(joined + 200.0, abs=1.0)
    assert halted.until_ms - halted.time_ms == 90_000


def test_bus_joined_during_a_dwell_stands_at_the_stop_until_its_departure() -> None:
    trip = _trip(0.0)
    records = _truth(trip, T0 + 150_000)  # S2 is served 08:02-08:03
    first = records[0]
    assert isinstance(first, TruthPosition)
    assert first.phase == "dwelling"
    assert first.dist_m == pytest.approx(LINE.stops[1].distance_m, abs=0.01)
    assert _stops(records)[0].stop_id == "S2"
    assert _stops(records)[0].departed_ms >= TIMETABLE.departures_ms[1]


def test_bus_joined_before_departure_waits_at_the_first_stop_and_after_the_end_is_parked() -> None:
    early = _truth(_trip(), T0 - 60_000)
    assert {r.phase for r in early[:50] if isinstance(r, TruthPosition)} == {"dwelling"}
    late = _run(_trip(), TIMETABLE.arrivals_ms[-1] + 60_000)
    assert {after.phase for _, after, _ in late} == {"parked"}
    assert late[0][1].progress_m == pytest.approx(LINE.length_m)


def test_truth_delay_is_the_configured_delay_while_the_bus_keeps_pace() -> None:
    records = _truth(_trip(420.0), T0)
    delays = [r.delay_s for r in records if isinstance(r, TruthPosition) and r.phase == "driving"]
    assert delays
    assert all(d is not None and abs(d - 420.0) <= ON_TIME_S for d in delays)


def test_truth_distance_is_where_the_true_position_lies_along_the_route() -> None:
    for record in _truth(_trip(), T0)[::20]:
        if isinstance(record, TruthPosition):
            where = LINE.project(Point(record.lat, record.lon))
            assert where.offset_m < 0.5
            assert where.distance_m == pytest.approx(record.dist_m, abs=0.5)


def test_trip_id_is_sent_only_when_asked_and_never_once_parked() -> None:
    silent = [fix for _, _, fix in _run(_trip(), T0) if fix is not None]
    assert {fix.trip_id for fix in silent} == {None}
    told = [(after.phase, fix.trip_id) for _, after, fix in _run(_trip(send_trip_id=True), T0) if fix]
    assert {trip_id for phase, trip_id in told if phase != "parked"} == {"T1"}
    assert {trip_id for phase, trip_id in told if phase == "parked"} == {None}


def test_a_timetable_cannot_loop() -> None:
    with pytest.raises(ValueError, match="loop"):
        plan_trip(LINE, SimConfig(loop=True), TIMETABLE)


def _drain(source: SimulatedSource) -> list[Fix]:
    async def take() -> list[Fix]:
        stream: AsyncIterator[Fix] = source.fixes()
        return [fix async for fix in stream]

    return asyncio.run(take())


def test_simulated_source_appends_the_truth_as_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "truth.jsonl"
    trip = _trip(60.0)
    source = SimulatedSource(
        LINE,
        seed=3,
        start_ms=T0,
        config=trip.config,
        speedup=0,
        timetable=TIMETABLE,
        truth_file=log,
        bus="BUS-1",
    )
    fixes = _drain(source)
    records = [TRUTH_DECODER.decode(line) for line in log.read_bytes().splitlines()]
    assert records == [msgspec.structs.replace(r, bus="BUS-1") for r in _truth(trip, T0, 3)]
    assert len([r for r in records if isinstance(r, TruthPosition) and r.fix]) == len(fixes)


def test_a_gtfs_trip_is_driven_from_the_agent_config(tmp_path: Path) -> None:
    feed = write_feed(tmp_path / "feed")
    config = SourceConfig(kind="sim", route=str(feed), trip_id="T1", send_trip_id=True, speedup=0, delay_s=30)
    source = open_source(config, start_ms=T0 + 90_000, bus="BUS-1")
    assert isinstance(source, SimulatedSource)
    expected = load_trip(feed, "T1").on(date(2026, 12, 1))
    assert source.trip.timetable == expected
    fixes = _drain(source)
    assert fixes[0].trip_id == "T1"
    assert fixes[0].time_ms == T0 + 91_000
