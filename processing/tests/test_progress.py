"""Where a bus is on its trip: projection on awkward shapes, the monotone filter, assignment, delay, stops."""

from __future__ import annotations

import math
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_devtools.synthetic_feed import METRES_PER_DEGREE, point_at
from fleet_processing.errors import FixOrderError
from fleet_processing.progress import BusFixes, FixPoint, Progressed, advance_batch
from fleet_testing.trips import ORIGIN_MS, detour, drive, every, line, network, rows_of, run

AWKWARD = ["loop", "out-and-back", "figure-eight"]
CORNER_LAG = {
    "loop": 3 / math.sin(math.radians(45)),
    "out-and-back": 4.0,
    "figure-eight": 3 / math.sin(math.radians(22.5)),
}
"""how many accuracies progress may be off near the shape's worst corner: near a corner of angle A the
nearest point of a fix off by e may be e / sin(A / 2) along from the truth, and a point behind it up to
one accuracy further wins (``locate`` prefers the leg behind): 3 accuracies over sin(A / 2); at a hairpin
the legs coincide: a fix past the turn counts for the leg before it while that leg, down to the window's
back (2 accuracies behind the progress), is within its accuracy of the nearest: 4 accuracies"""
FEED, NET = network(
    [line(name) for name in [*AWKWARD, "straight"]] + [line("straight", name="back", reverse=True)]
)
HOUR = 3600


def assigned_to(results: list[Progressed], trip_id: str) -> list[Progressed]:
    return [r for r in results if r.calculated.state == "assigned" and r.calculated.trip_id == trip_id]


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from(AWKWARD),
    accuracy=st.floats(5, 25),
    step=st.floats(5, 30),
    seed=st.integers(0, 2**16),
)
def test_progress_follows_loops_out_and_back_and_self_crossing_shapes(
    shape: str, accuracy: float, step: float, seed: int
) -> None:
    trip = f"{shape}-1"
    rows = rows_of(FEED, trip)
    seconds = every(rows[0].departure_s - 30, rows[-1].arrival_s + 60, step)
    fixes, truth = drive(FEED, trip, seconds, noise_m=accuracy, accuracy_m=accuracy, seed=seed, named=True)
    results = run(NET, fixes)
    on_trip = [(r, t) for r, t in zip(results, truth, strict=True) if r.calculated.trip_id == trip]
    before_end = [r for r, t in zip(results, truth, strict=True) if t < rows[-1].dist_m - 60 - 2 * accuracy]
    assert all(r.calculated.trip_id == trip for r in before_end)  # named from the first fix to the last stop
    for r, t in on_trip:
        assert r.along_m is not None
        assert abs(r.along_m - t) <= accuracy * CORNER_LAG[shape] + 5
    alongs = [r.along_m for r, _ in on_trip if r.along_m is not None]
    assert alongs == sorted(alongs)
    assert results[-1].calculated.state == "unassigned"  # the last stop ends the trip
    visits = [v for r in results for v in r.visits]
    assert [v.stop_sequence for v in visits] == [row.stop_sequence for row in rows]


@settings(max_examples=60, deadline=None)
@given(
    noise=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=5, max_size=40),
    accuracy=st.floats(5, 30),
    when=st.floats(0.05, 0.85),
)
def test_progress_never_goes_back_under_noise_within_the_accuracy(
    noise: list[tuple[float, float]], accuracy: float, when: float
) -> None:
    """A bus stuck in traffic mid-trip: its fixes wander within their accuracy, its progress holds."""
    trip = "straight-1"
    rows = rows_of(FEED, trip)
    start = rows[0].departure_s + when * (rows[-1].arrival_s - rows[0].departure_s)
    moving, truth = drive(FEED, trip, every(start, start + 60, 10), named=True)
    shape = next(s for s in FEED.shapes if s.shape_id == "straight-shape")
    lat0, lon0 = point_at(shape, truth[-1])
    stuck = []
    for k, (angle, radius) in enumerate(noise):
        r = accuracy * math.sqrt(radius)
        lat = lat0 + r * math.sin(angle * 2 * math.pi) / METRES_PER_DEGREE
        lon = lon0 + r * math.cos(angle * 2 * math.pi) / (METRES_PER_DEGREE * math.cos(math.radians(lat0)))
        stuck.append(FixPoint(moving[-1].time_ms + 5_000 * (k + 1), lat, lon, accuracy_m=accuracy))
    results = run(NET, moving + stuck)
    alongs = [r.along_m for r in results if r.along_m is not None]
    assert len(alongs) == len(results)
    assert alongs == sorted(alongs)
    assert all(abs(a - truth[-1]) <= accuracy + 1 for a in alongs[len(moving) :])


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["straight", "back", *AWKWARD]),
    trip=st.integers(0, 2),
    late=st.floats(-120, 600),
    seed=st.integers(0, 2**16),
)
def test_a_bus_without_trip_id_is_assigned_its_trip_and_direction(
    name: str, trip: int, late: float, seed: int
) -> None:
    trip_id = f"{name}-{trip}"
    rows = rows_of(FEED, trip_id)
    start = rows[0].departure_s + late + 120
    fixes, _ = drive(FEED, trip_id, every(start, start + 300, 10), late_s=late, noise_m=10, seed=seed)
    results = run(NET, fixes)
    final = results[-1].calculated
    assert final.state == "assigned"
    assert final.trip_id == trip_id
    assert final.confidence > 0.2
    first = next(k for k, r in enumerate(results) if r.calculated.state == "assigned")
    assert first <= 18  # within 3 minutes, a dwell at a stop included
    assert len(assigned_to(results, trip_id)) == len(results) - first
    assert all(r.calculated.trip_id in (None, trip_id) for r in results)


def test_a_bus_parked_at_its_terminus_stays_unassigned_until_it_drives() -> None:
    rows = rows_of(FEED, "straight-1")
    depart = rows[0].departure_s
    parked, _ = drive(FEED, "straight-1", every(depart - 1200, depart, 15), late_s=1200, noise_m=20, seed=3)
    results = run(NET, parked)
    assert {r.calculated.state for r in results} == {"unassigned"}
    driving, _ = drive(FEED, "straight-1", every(depart, depart + 240, 10), noise_m=10, seed=4)
    results = run(NET, parked + driving)
    assert results[-1].calculated.state == "assigned"
    assert results[-1].calculated.trip_id == "straight-1"


@settings(max_examples=30, deadline=None)
@given(late=st.floats(-300, 1800), seed=st.integers(0, 2**16))
def test_delay_is_the_lateness_against_the_schedule_between_stops(late: float, seed: int) -> None:
    trip = "straight-2"
    rows = rows_of(FEED, trip)
    seconds = every(rows[0].departure_s + late, rows[-1].arrival_s + late, 7)
    fixes, truth = drive(FEED, trip, seconds, late_s=late, noise_m=10, seed=seed, named=True)
    results = run(NET, fixes)
    stops = [row.dist_m for row in rows]
    for r, along in zip(results, truth, strict=True):
        if r.delay_s is None or min(abs(along - d) for d in stops) < 100:
            continue
        assert abs(r.delay_s - late) <= 2 + 20 / 12  # the noise over the speed, and rounding
    dwell = rows[1].departure_s - rows[1].arrival_s
    at_stop = [r for r, along in zip(results, truth, strict=True) if abs(along - stops[1]) < 10 and r.delay_s]
    assert all(late - dwell - 3 <= (r.delay_s or 0) <= max(late, 0) + 3 for r in at_stop)


def test_stops_are_visited_in_order_with_times_or_interpolated_when_passed_between_fixes() -> None:
    rows = rows_of(FEED, "loop-0")
    dense, _ = drive(FEED, "loop-0", every(rows[0].departure_s, rows[-1].arrival_s + 30, 5), named=True)
    visits = [v for r in run(NET, dense) for v in r.visits]
    assert [v.stop_id for v in visits] == [row.stop_id for row in rows]
    for v, row in zip(visits[1:-1], rows[1:-1], strict=True):
        assert not v.interpolated
        assert abs(v.arrived_ms - (ORIGIN_MS + row.arrival_s * 1000)) <= 10_000
        assert abs(v.departed_ms - (ORIGIN_MS + row.departure_s * 1000)) <= 10_000
        assert v.scheduled_arrival_ms == ORIGIN_MS + row.arrival_s * 1000
    sparse, _ = drive(FEED, "loop-0", every(rows[0].departure_s, rows[-1].arrival_s + 200, 190), named=True)
    visits = [v for r in run(NET, sparse) for v in r.visits]
    assert [v.stop_sequence for v in visits] == [row.stop_sequence for row in rows]
    assert any(v.interpolated for v in visits)
    assert all(v.arrived_ms <= v.departed_ms for v in visits)
    assert [v.arrived_ms for v in visits] == sorted(v.arrived_ms for v in visits)


@pytest.mark.parametrize("per_batch", [2, 3, 7])
def test_the_saved_state_gives_the_same_result_whatever_the_batches(per_batch: int) -> None:
    rows = rows_of(FEED, "figure-eight-1")
    fixes, _ = drive(
        FEED,
        "figure-eight-1",
        every(rows[0].departure_s - 60, rows[-1].arrival_s + 60, 9),
        noise_m=15,
        seed=9,
    )
    one = run(NET, fixes, roundtrip=False)
    batched = run(NET, fixes, per_batch=per_batch)
    assert msgspec.to_builtins(one[-1].progress) == msgspec.to_builtins(batched[-1].progress)
    every_visit = [v for r in one for v in r.visits]
    assert every_visit == [v for r in batched for v in r.visits]
    assert (
        one[len(fixes) // 2].progress == run(NET, fixes[: len(fixes) // 2 + 1], roundtrip=True)[-1].progress
    )


def test_frequency_based_trips_are_assigned_the_instance_running() -> None:
    feed, net = network(
        [line("straight", name="freq", departures_s=[], frequency=(8 * HOUR, 10 * HOUR, 600))]
    )
    start = 8 * HOUR + 2400 + 100
    fixes, _ = drive(feed, "freq-0", every(start, start + 200, 10), offset_s=2400, noise_m=5)
    final = run(net, fixes)[-1].calculated
    assert (final.state, final.trip_id, final.start_time) == ("assigned", "freq-0", "08:40:00")


def test_a_bus_still_naming_the_frequency_trip_it_completed_is_not_assigned_again_at_its_end() -> None:
    """After the 08:40 run the driver's app still names the trip: the 08:50 run also fits the terminus,
    but nothing of it is left to drive there (it would end at once, then the 08:40 one again...)."""
    feed, net = network(
        [line("straight", name="freq", departures_s=[], frequency=(8 * HOUR, 10 * HOUR, 600))]
    )
    rows = rows_of(feed, "freq-0")
    end = rows[-1].arrival_s + 2400
    fixes, _ = drive(feed, "freq-0", every(end - 300, end + 300, 10), offset_s=2400, noise_m=5, named=True)
    results = run(net, fixes)
    ended = [
        k for k, r in enumerate(results) if any(v.stop_sequence == rows[-1].stop_sequence for v in r.visits)
    ]
    assert len(ended) == 1
    assert {r.calculated.state for r in results[ended[0] :]} == {"unassigned"}


def test_one_wild_fix_does_not_move_the_progress_but_fixes_that_agree_do() -> None:
    rows = rows_of(FEED, "straight-1")
    start = rows[0].departure_s + 30
    fixes, _ = drive(FEED, "straight-1", every(start, start + 100, 10), named=True)
    ahead, _ = drive(FEED, "straight-1", [start + 100 + 250], named=True)  # 250 s ahead of the truth
    held = run(
        NET, [*fixes, FixPoint(ahead[0].time_ms - 240_000, ahead[0].lat, ahead[0].lon, accuracy_m=10.0)]
    )
    assert held[-1].along_m == held[-2].along_m
    jump, truth = drive(FEED, "straight-1", every(start + 350, start + 380, 10), named=False)
    shifted = [FixPoint(f.time_ms - 240_000, f.lat, f.lon, accuracy_m=10.0) for f in jump]
    results = run(NET, [*fixes, *shifted])
    assert results[-1].along_m is not None
    assert results[-2].along_m is not None
    assert results[-2].along_m == results[len(fixes) - 1].along_m  # two agreeing fixes are not enough
    assert abs(results[-1].along_m - truth[-1]) < 30  # the third moves the progress there


def test_fixes_out_of_order_are_refused_and_old_ones_left_out() -> None:
    fixes, _ = drive(FEED, "straight-1", every(8 * HOUR + 9 * HOUR, 8 * HOUR + 9 * HOUR + 30, 10))
    with pytest.raises(FixOrderError):
        advance_batch(NET, [BusFixes("b", None, fixes[::-1])], fixes[0].time_ms)
    (first,) = advance_batch(NET, [BusFixes("b", None, fixes[1:])], fixes[-1].time_ms)
    (again,) = advance_batch(NET, [BusFixes("b", first.progress, fixes[:1])], fixes[-1].time_ms)
    assert again.stale == 1
    (redelivered,) = advance_batch(NET, [BusFixes("b", first.progress, fixes[-1:])], fixes[-1].time_ms)
    assert redelivered.stale == 1
    assert redelivered.progress == first.progress


def test_a_fix_without_accuracy_counts_as_the_assumed_accuracy() -> None:
    rows = rows_of(FEED, "straight-1")
    fixes, truth = drive(FEED, "straight-1", every(rows[0].departure_s + 30, rows[0].departure_s + 90, 10))
    bare = [FixPoint(f.time_ms, f.lat, f.lon, trip_id="straight-1") for f in fixes]
    results = run(NET, bare)
    assert [r.calculated.state for r in results] == ["assigned"] * len(bare)
    assert results[-1].along_m == pytest.approx(truth[-1], abs=1.0)


DETOUR_FIXES = 90
"""fixes 10 s apart off the road: a detour of 15 minutes, longer than ``release_lost_s``"""


def _detour_of(named: bool) -> tuple[list[Progressed], list[Progressed], list[Progressed], list[float]]:
    """A bus on straight-1 that leaves its road 1 km for 15 minutes and comes back where it left."""
    rows = rows_of(FEED, "straight-1")
    before, away, back, truth = detour(
        FEED, "straight-1", rows[0].departure_s + 30, off_m=1_000, fixes=DETOUR_FIXES, named=named
    )
    results = run(NET, before + away + back)
    return results[: len(before)], results[len(before) : -len(back)], results[-len(back) :], truth


def test_a_bus_whose_frames_name_its_trip_keeps_it_through_a_detour_longer_than_release_lost_s() -> None:
    before, away, after, truth = _detour_of(named=True)
    assert len(assigned_to(before + away + after, "straight-1")) == len(before + away + after)
    for r, t in zip(after, truth, strict=True):
        assert r.along_m == pytest.approx(t, abs=30.0)  # back on its road, progress goes on from there


def test_a_bus_on_an_inferred_trip_is_released_after_release_lost_s_off_its_line() -> None:
    before, away, _, _ = _detour_of(named=False)
    assert before[-1].calculated.state == "assigned"
    lost_s = [k * 10 for k in range(DETOUR_FIXES)]  # since the first fix off the road
    assert [r.calculated.state for r in away] == [
        "assigned" if s < 600 else "unassigned" for s in lost_s
    ]  # the inference may have been wrong: given up after 10 minutes


def test_a_trip_far_past_its_last_arrival_releases_the_bus() -> None:
    rows = rows_of(FEED, "straight-0")
    start = rows[0].departure_s + 30
    driving, truth = drive(FEED, "straight-0", every(start, start + 60, 10), named=True)
    last = driving[-1]
    parked = [FixPoint(last.time_ms + k * 300_000, last.lat, last.lon, accuracy_m=10.0) for k in range(1, 40)]
    results = run(NET, driving + parked)
    last_arrival_ms = ORIGIN_MS + rows[-1].arrival_s * 1000
    overdue_ms = last_arrival_ms + 7_200_000
    states = [(f.time_ms > overdue_ms, r.calculated.state) for f, r in zip(parked, results[6:], strict=True)]
    assert {state for overdue, state in states if not overdue} == {"assigned"}
    assert {state for overdue, state in states if overdue} == {"unassigned"}
    assert truth[-1] < rows[-1].dist_m / 2  # released far from the end of its trip


def test_a_backlog_replayed_hours_later_gives_the_live_result() -> None:
    rows = rows_of(FEED, "loop-2")
    fixes, _ = drive(FEED, "loop-2", every(rows[0].departure_s, rows[-1].arrival_s, 20), noise_m=8, seed=2)
    live = run(NET, fixes)
    later = fixes[-1].time_ms + 6 * 3_600_000
    previous, replayed = None, []
    for fix in fixes:
        (result,) = advance_batch(NET, [BusFixes("bus-1", previous, [fix])], later)
        previous = result.progress
        replayed.append(result)
    assert [r.progress for r in replayed] == [r.progress for r in live]


def _traced(results: list[Progressed]) -> list[tuple[object, ...]]:
    return [
        (
            at.time_ms, at.instance.key if at.instance else None, at.state, round(at.along_m, 6),
            round(at.deviation_m, 6), round(at.delay_s, 6), at.next_stop, at.arrived_ms, at.jumped,
            at.visits,
        )
        for result in results
        for at in result.trace
    ]  # fmt: skip


@settings(max_examples=20, deadline=None)
@given(per_batch=st.integers(2, 40), seed=st.integers(0, 2**16), named=st.booleans())
def test_trace_is_the_same_whatever_the_batch_split(per_batch: int, seed: int, named: bool) -> None:
    rows = rows_of(FEED, "straight-1")
    seconds = every(rows[0].departure_s - 60, rows[-1].arrival_s + 120, 10)
    fixes, _ = drive(FEED, "straight-1", seconds, noise_m=10, accuracy_m=10, seed=seed, named=named)
    one_by_one = _traced(run(NET, fixes, trace=True))
    split = _traced(run(NET, fixes, per_batch=per_batch, trace=True))
    assert len(one_by_one) == len(fixes)
    assert split == one_by_one
    visited = [v.stop_sequence for entry in one_by_one for v in entry[-1]]  # type: ignore[attr-defined]
    assert visited  # every stop served once, in order
    assert visited == sorted(visited)


@settings(max_examples=25, deadline=None)
@given(
    noise=st.floats(0, 90),
    step=st.floats(2, 40),
    per_batch=st.integers(2, 400),
    naming=st.floats(0, 0.2),
    seed=st.integers(0, 2**16),
)
def test_a_parked_bus_taken_in_a_run_at_a_time_gets_the_trace_of_one_fix_at_a_time(
    noise: float, step: float, per_batch: int, naming: float, seed: int
) -> None:
    """Long waits at both termini, GPS noise up to past ``min_move_m`` (150 m) between fixes, now and then a
    fix naming the trip: the runs of parked fixes a batch takes at once (``_park``) change nothing."""
    rows = rows_of(FEED, "straight-1")
    depart, arrive = rows[0].departure_s, rows[-1].arrival_s
    seconds = every(depart - 1500, arrive + 1500, step)
    fixes, _ = drive(FEED, "straight-1", seconds, late_s=300, noise_m=noise, seed=seed)
    rng = random.Random(seed)
    fixes = [msgspec.structs.replace(f, trip_id="straight-1") if rng.random() < naming else f for f in fixes]
    one_by_one = run(NET, fixes, trace=True)
    split = run(NET, fixes, per_batch=per_batch, trace=True)
    assert _traced(split) == _traced(one_by_one)
    assert msgspec.to_builtins(split[-1].progress) == msgspec.to_builtins(one_by_one[-1].progress)
    assert {at.state for r in one_by_one for at in r.trace} >= {"unassigned", "assigned"}
