"""The simulated bus: determinism, driving limits, stops, receiver noise, scripted faults, pacing."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_agent.fix import Fix, FixSource
from fleet_agent.route import Point, Route, build_route, demo_route, destination, haversine_m, load_gtfs_shape
from fleet_agent.simulator import (
    KMH,
    BusState,
    Detour,
    DeviceRebooted,
    LongStop,
    Reboot,
    SimConfig,
    SimulatedSource,
    Trip,
    Tunnel,
    plan_trip,
    trace,
    true_position,
)

ACCRA = Path(__file__).resolve().parents[3] / "shared/data/gtfs/accra"
START_MS = 1_767_261_600_000  # 2026-01-01 10:00 UTC
BUS_LIMIT_MPS = 100 * KMH
NEAR_ROUTE_M = 30.0
Steps = list[tuple[BusState, Fix | None]]


def _short_route() -> Route:
    """About 6 km west of Blida with a bend, two stops between the termini."""
    vertices = [Point(36.47, 2.80, 200.0)]
    for bearing in (270, 270, 250, 250, 230, 230):
        vertices.append(destination(vertices[-1], bearing, 1000.0))
    stops = [
        (f"S{i}", f"stop {i}", destination(vertices[0], 270, d)) for i, d in enumerate((0.0, 1500.0), start=1)
    ]
    stops += [("S3", "stop 3", vertices[4]), ("S4", "stop 4", vertices[-1])]
    return build_route("short", vertices, stops)


SHORT = _short_route()
QUIET = SimConfig(traffic_per_hour=0.0, outages_per_hour=0.0)


def _run(config: SimConfig = QUIET, seed: int = 1, route: Route = SHORT, start_ms: int = START_MS) -> Steps:
    return list(trace(plan_trip(route, config), start_ms, seed))


def _fixes(steps: Steps) -> list[Fix]:
    return [fix for _, fix in steps if fix is not None]


def _offsets(route: Route, fixes: list[Fix]) -> list[float]:
    return [route.project(Point(fix.lat, fix.lon)).offset_m for fix in fixes]


def _gaps_s(fixes: list[Fix]) -> list[float]:
    return [(b.time_ms - a.time_ms) / 1000 for a, b in itertools.pairwise(fixes)]


seeds = st.integers(min_value=0, max_value=2**32)
examples = settings(max_examples=15, deadline=None)


@examples
@given(seeds, st.integers(min_value=START_MS - 10**9, max_value=START_MS + 10**9))
def test_same_seed_gives_identical_fixes(seed: int, start_ms: int) -> None:
    config = SimConfig(faults=(Tunnel(at_m=2000, length_m=300), Detour(at_m=3000, length_m=1500)))
    assert _run(config, seed, start_ms=start_ms) == _run(config, seed, start_ms=start_ms)


@examples
@given(seeds, seeds)
def test_different_seeds_give_different_fixes(seed: int, other: int) -> None:
    if seed != other:
        assert _fixes(_run(seed=seed)) != _fixes(_run(seed=other))


@examples
@given(seeds)
def test_without_faults_every_fix_stays_near_the_route(seed: int) -> None:
    fixes = _fixes(_run(SimConfig(), seed))
    assert max(_offsets(SHORT, fixes)) < NEAR_ROUTE_M


@examples
@given(seeds)
def test_speed_stays_under_the_bus_limit_and_changes_within_accel_and_brake_limits(seed: int) -> None:
    config = SimConfig(traffic_per_hour=60.0)  # many slow-downs, to exercise braking
    states = [state for state, _ in _run(config, seed)]
    assert max(state.speed_mps for state in states) <= BUS_LIMIT_MPS
    for before, after in itertools.pairwise(states):
        change = after.speed_mps - before.speed_mps
        assert change <= config.accel_mps2[1] + 1e-9
        assert -change <= config.max_brake_mps2 + 1e-9


@examples
@given(seeds)
def test_cruise_speed_is_drawn_per_bus_within_the_intercity_range(seed: int) -> None:
    trip = plan_trip(demo_route(), QUIET)
    top = max(state.speed_mps for state, _ in trace(trip, START_MS, seed))
    assert 70 * KMH - 0.01 <= top <= 90 * KMH


def test_one_fix_per_second_while_the_receiver_sees_the_sky() -> None:
    fixes = _fixes(_run())
    assert set(_gaps_s(fixes)) == {1.0}
    assert all(fix.mode == 3 and fix.source == "sim" for fix in fixes)


def test_bus_dwells_at_every_stop_with_speed_zero_and_the_same_position() -> None:
    config = QUIET
    steps = _run(config)
    for stop in SHORT.stops[1:-1]:
        held = [
            f for s, f in steps if s.phase == "dwelling" and s.progress_m == pytest.approx(stop.distance_m)
        ]
        assert config.dwell_s[0] - 1 <= len(held) <= config.dwell_s[1] + 1, stop.name
        reported = {(f.lat, f.lon, f.speed_mps) for f in held if f is not None}
        assert len(reported) == 1, stop.name
        assert reported.pop()[2] == 0.0


def test_bus_slows_to_town_speed_near_stops() -> None:
    steps = _run(SimConfig(town_radius_m=400.0, traffic_per_hour=0.0))
    stop = SHORT.stops[2].distance_m
    near = [s.speed_mps for s, _ in steps if abs(s.progress_m - stop) < 400]
    assert max(near) <= 50 * KMH + 1e-9
    assert max(s.speed_mps for s, _ in steps) > 60 * KMH


def test_trip_reaches_the_end_and_parks_with_ignition_off() -> None:
    steps = _run()
    last, fix = steps[-1]
    assert last.phase == "parked"
    assert last.progress_m == pytest.approx(SHORT.length_m)
    assert fix is not None
    assert (fix.ignition, fix.speed_mps) == (False, 0.0)
    assert haversine_m(Point(fix.lat, fix.lon), SHORT.points[-1]) < NEAR_ROUTE_M
    ignitions = [f.ignition is True for f in _fixes(steps)]
    assert ignitions[0]
    assert ignitions == sorted(ignitions, reverse=True)  # on all the way, then off for good


def test_receiver_quality_is_consistent_with_its_error() -> None:
    trip = plan_trip(demo_route(), QUIET)
    errors, accuracies = [], []
    for state, fix in trace(trip, START_MS, 5):
        if fix is not None and state.speed_mps > 0:
            assert fix.hdop is not None
            assert fix.satellites is not None
            assert fix.accuracy_m is not None
            assert 6 <= fix.satellites <= 14
            assert fix.hdop == pytest.approx(10 / fix.satellites, abs=0.01)
            assert fix.accuracy_m == pytest.approx(trip.config.uere_m * fix.hdop, abs=0.1)
            errors.append(haversine_m(Point(fix.lat, fix.lon), true_position(trip, state)))
            accuracies.append(fix.accuracy_m)
    within = sum(e <= a for e, a in zip(errors, accuracies, strict=True)) / len(errors)
    assert 0.55 < within < 0.8  # accuracy_m is the 68 % radius
    assert 1.5 < sum(errors) / len(errors) < 5.0


def test_random_sky_losses_leave_short_gaps() -> None:
    fixes = _fixes(_run(SimConfig(outages_per_hour=30.0, traffic_per_hour=0.0), seed=3))
    gaps = [gap for gap in _gaps_s(fixes) if gap > 1]
    assert gaps
    assert all(gap <= SimConfig().outage_s[1] + 1 for gap in gaps)


def test_tunnel_produces_a_gap_where_it_is() -> None:
    tunnel = Tunnel(at_m=2500, length_m=400)
    steps = _run(SimConfig(traffic_per_hour=0.0, outages_per_hour=0.0, faults=(tunnel,)))
    inside = [f for s, f in steps if tunnel.at_m <= s.progress_m <= tunnel.at_m + tunnel.length_m]
    assert len(inside) > 10
    assert all(f is None for f in inside)
    assert [gap for gap in _gaps_s(_fixes(steps)) if gap > 1] == [len(inside) + 1]


def test_detour_takes_the_bus_off_the_corridor_and_back() -> None:
    detour = Detour(at_m=2000, length_m=2000, offset_m=400)
    fixes = _fixes(_run(SimConfig(traffic_per_hour=0.0, outages_per_hour=0.0, faults=(detour,))))
    offsets = _offsets(SHORT, fixes)
    away = [i for i, offset in enumerate(offsets) if offset > 200]
    assert away
    assert away == list(range(away[0], away[-1] + 1))  # left once, for a while
    assert offsets[-1] < NEAR_ROUTE_M  # and rejoined
    hops = [haversine_m(Point(a.lat, a.lon), Point(b.lat, b.lon)) for a, b in itertools.pairwise(fixes)]
    assert max(hops) < BUS_LIMIT_MPS + 5  # no jump on leaving or rejoining the corridor


def test_long_stop_holds_the_bus_where_scripted() -> None:
    stop = LongStop(at_m=3500, duration_s=1200)
    steps = _run(SimConfig(traffic_per_hour=0.0, outages_per_hour=0.0, faults=(stop,)))
    held = [s for s, _ in steps if s.phase == "dwelling" and s.progress_m == pytest.approx(stop.at_m)]
    assert len(held) == pytest.approx(stop.duration_s, abs=1)


def test_reboot_leaves_a_gap_and_is_counted_in_the_state() -> None:
    reboot = Reboot(at_m=3000, gap_s=45)
    steps = _run(SimConfig(traffic_per_hour=0.0, outages_per_hour=0.0, faults=(reboot,)))
    assert steps[-1][0].reboots == 1
    assert [gap for gap in _gaps_s(_fixes(steps)) if gap > 1] == [reboot.gap_s + 1]


def test_loop_lays_over_and_drives_the_route_back() -> None:
    trip = plan_trip(SHORT, SimConfig(loop=True, layover_s=(60, 60)))
    steps = trace(trip, START_MS, 2)
    first_back = next(s for s, _ in steps if s.leg == 1 and s.phase == "dwelling")
    nearest_to_the_end = SHORT.stops[-2]
    assert (
        haversine_m(true_position(trip, first_back), nearest_to_the_end.point)
        < nearest_to_the_end.offset_m + 1
    )
    again = next(s for s, _ in steps if s.leg == 2)
    assert haversine_m(true_position(trip, again), SHORT.points[0]) < 1.0


def _collect(source: FixSource, limit: int) -> list[Fix]:
    async def take() -> list[Fix]:
        fixes: list[Fix] = []
        stream: AsyncIterator[Fix] = source.fixes()
        async for fix in stream:
            fixes.append(fix)
            if len(fixes) == limit:
                break
        return fixes

    return asyncio.run(take())


def test_simulated_source_yields_what_trace_computes() -> None:
    source = SimulatedSource(SHORT, seed=4, start_ms=START_MS, config=QUIET, speedup=0)
    assert _collect(source, 10**6) == _fixes(_run(seed=4))


def test_simulated_source_paces_fixes_by_the_speedup() -> None:
    source = SimulatedSource(SHORT, seed=4, start_ms=START_MS, config=QUIET, speedup=50)
    began = time.monotonic()
    fixes = _collect(source, 10)
    assert time.monotonic() - began >= 10 / 50 - 0.01
    assert fixes[-1].time_ms - START_MS == 10_000


def test_simulated_source_raises_on_reboot_and_resumes_after_the_gap() -> None:
    config = SimConfig(traffic_per_hour=0.0, outages_per_hour=0.0, faults=(Reboot(at_m=1000, gap_s=30),))
    source = SimulatedSource(SHORT, seed=4, start_ms=START_MS, config=config, speedup=0)
    with pytest.raises(DeviceRebooted) as caught:
        _collect(source, 10**6)
    assert (caught.value.code, caught.value.gap_s) == ("simulated_reboot", 30)
    first_after = _collect(source, 1)[0]
    assert first_after.time_ms - caught.value.time_ms == 30_000


def test_faults_are_configured_as_tagged_json() -> None:
    text = b"""{"loop": false, "faults": [
        {"kind": "tunnel", "at_m": 5000, "length_m": 600},
        {"kind": "detour", "at_m": 16000},
        {"kind": "long_stop", "at_m": 20000, "duration_s": 1200},
        {"kind": "reboot", "at_m": 28000, "gap_s": 90}]}"""
    config = msgspec.json.decode(text, type=SimConfig)
    assert [type(f) for f in config.faults] == [Tunnel, Detour, LongStop, Reboot]
    with pytest.raises(msgspec.ValidationError, match="cruise_mps"):
        msgspec.json.decode(b'{"cruise_mps": [30, 20]}', type=SimConfig)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: SimConfig(brake_mps2=3.0), "brake_mps2"),
        (lambda: SimConfig(cruise_mps=(20.0, 40.0)), "exceeds max_speed_mps"),
        (lambda: SimConfig(faults=(Tunnel(at_m=10, length_m=0),)), "length_m > 0"),
    ],
)
def test_inconsistent_config_is_refused(make: Callable[[], SimConfig], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        make()


def _check_trip(trip: Trip, steps: Steps) -> None:
    """A whole trip: ends parked at the end, stood at every stop, stayed near the shape."""
    last = steps[-1][0]
    assert last.phase == "parked"
    assert last.progress_m == pytest.approx(trip.route.length_m)
    stood = {round(s.progress_m, 3) for s, _ in steps if s.phase == "dwelling"}
    assert {round(d, 3) for d in trip.stops[0]} <= stood
    assert max(_offsets(trip.route, _fixes(steps)[::10])) < NEAR_ROUTE_M


def test_demo_trip_from_algiers_reaches_blida_in_under_an_hour() -> None:
    trip = plan_trip(demo_route())
    steps = list(trace(trip, START_MS, 11))
    _check_trip(trip, steps)
    minutes = (steps[-1][0].until_ms - START_MS) / 60_000
    assert 30 < minutes < 60


@pytest.mark.skipif(not ACCRA.is_dir(), reason=f"shared Accra GTFS feed absent at {ACCRA}")
def test_simulates_along_a_real_accra_shape() -> None:
    trip = plan_trip(load_gtfs_shape(ACCRA, "7589522"))
    steps = list(trace(trip, START_MS, 12))
    _check_trip(trip, steps)
    assert max(s.speed_mps for s, _ in steps) <= 50 * KMH + 1e-9  # stops every few hundred metres: town speed
