"""Trip events on real drives: corridor deviation, stops and their delay, delay bands, lifecycle."""

from __future__ import annotations

import bisect

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_devtools.synthetic_feed import METRES_PER_DEGREE
from fleet_processing.detect import STATE_DECODER as BUS_DECODER
from fleet_processing.detect import STATE_ENCODER as BUS_ENCODER
from fleet_processing.detect import BusState, DetectContext, detect_bus
from fleet_processing.detection import DetectorPolicy, Observation
from fleet_processing.progress import FixPoint, Progressed, TripAt
from fleet_processing.service_day import find_instance
from fleet_processing.trip_events import BANDS, TripEventsState, trip_step
from fleet_schemas.events import Event
from fleet_schemas.gtfs import StopTime
from fleet_testing.trips import DAY, drive, every, line, network, rows_of, run

FEED, NET = network([line("straight"), line("loop"), line("out-and-back"), line("figure-eight")])
TWINS = network([line("straight"), line("straight", name="twin", departures_s=[9 * 3600 + 600])])[1]
"""the same road driven by a second line ten minutes later: a bus may be told it drives that one"""
POLICY = DetectorPolicy()
LEAVE_M, RETURN_M = POLICY.deviation_limits("straight")
STATE_ENCODER = msgspec.msgpack.Encoder()
STATE_DECODER = msgspec.msgpack.Decoder(TripEventsState)
TRIP = "straight-1"
ROWS = rows_of(FEED, TRIP)
DEPART_S, END_S = ROWS[0].departure_s, ROWS[-1].arrival_s


def events_of(
    fixes: list[FixPoint], batches: list[Progressed], state: TripEventsState | None = None
) -> list[Event]:
    """Fold ``trip_step`` over the traced fixes, batch after batch, the state through msgpack in between."""
    state = state or TripEventsState()
    events: list[Event] = []
    traced = iter(fixes)
    for result in batches:
        for at in result.trace:
            fix = next(traced)
            assert fix.time_ms == at.time_ms
            obs = Observation("bus-1", fix.time_ms, 0, fix.lat, fix.lon, trip=at)
            state, found = trip_step(state, obs, "test", POLICY)
            events += found
        state = STATE_DECODER.decode(STATE_ENCODER.encode(state))
    return events


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def of_kind(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


def shifted(fixes: list[FixPoint], offsets_m: list[float]) -> list[FixPoint]:
    """The fixes moved south by their offset (the straight line runs east, with nothing south of it)."""
    return [
        msgspec.structs.replace(f, lat=f.lat - off / METRES_PER_DEGREE)
        for f, off in zip(fixes, offsets_m, strict=True)
    ]


def trip_drive(
    *, late_s: float = 0.0, step_s: float = 10.0, seed: int = 0, named: bool = True
) -> list[FixPoint]:
    """A bus driving ``TRIP`` from a minute before its departure to past its end, ``late_s`` late."""
    seconds = every(DEPART_S - 60 + late_s, END_S + late_s + 120, step_s)
    fixes, _ = drive(FEED, TRIP, seconds, late_s=late_s, noise_m=10, seed=seed, named=named)
    return fixes


def assert_each_stop_once(events: list[Event], rows: list[StopTime] = ROWS) -> None:
    """Every stop from the one where the bus was assigned: arrived and departed once (the last only
    arrived), or skipped once."""
    sequences = [r.stop_sequence for r in rows]
    seen: dict[int, list[str]] = {q: [] for q in sequences}
    for e in events:
        if e.kind.startswith("stop_"):
            seen[e.details["stop_sequence"]].append(e.kind)
    served = [q for q in sequences if seen[q]]
    assert served == sequences[len(sequences) - len(served) :]
    for q in served:
        expected = ["stop_arrived"] if q == sequences[-1] else ["stop_arrived", "stop_departed"]
        assert seen[q] in (expected, ["stop_skipped"]), (q, seen[q])


def band_of(delay_s: float) -> str:
    return BANDS[bisect.bisect_right(POLICY.delay_bands_s, delay_s)]


LIMITS_CLEAR = st.floats(-60, 1_500).filter(lambda d: min(abs(d - x) for x in POLICY.delay_bands_s) > 90)
"""delays at least 90 s from any band limit: a steady bus there is in one band throughout"""


@settings(max_examples=25, deadline=None)
@given(late=LIMITS_CLEAR, step=st.floats(3, 15), seed=st.integers(0, 2**16))
def test_a_late_bus_arrives_and_departs_each_stop_once_with_its_delay(
    late: float, step: float, seed: int
) -> None:
    fixes = trip_drive(late_s=late, step_s=step, seed=seed)
    events = events_of(fixes, run(NET, fixes, trace=True))
    sequences = [r.stop_sequence for r in ROWS]
    arrived = of_kind(events, "stop_arrived")
    departed = of_kind(events, "stop_departed")
    assert [e.details["stop_sequence"] for e in arrived] == sequences
    assert [e.details["stop_sequence"] for e in departed] == sequences[:-1]  # the last stop ends the trip
    assert not of_kind(events, "stop_skipped")
    for e in [*arrived[1:], *departed]:
        assert abs(e.details["delay_s"] - late) <= step + 10
        assert not e.details["interpolated"]
        assert e.subject == f"{e.trip_id}/{e.start_date}/{e.start_time}#{e.details['stop_sequence']}"
    lifecycle = [k for k in kinds(events) if k.startswith("trip_")]
    assert lifecycle == ["trip_assigned", "trip_started", "trip_completed"]
    assert kinds(events).index("trip_started") == kinds(events).index("stop_departed") + 1
    (completed,) = of_kind(events, "trip_completed")
    assert completed.details["delay_s"] == arrived[-1].details["delay_s"]
    changes = of_kind(events, "delay_changed")
    if band_of(late) == "on_time":
        assert not changes
    else:
        (change,) = changes
        assert (change.details["previous_band"], change.details["band"]) == ("on_time", band_of(late))
    assert not of_kind(events, "deviation_started")
    assert {e.trip_id for e in events} == {TRIP}


@settings(max_examples=60, deadline=None)
@given(
    shape=st.sampled_from(["loop", "out-and-back", "figure-eight"]),
    accuracy=st.floats(5, 25),
    step=st.floats(5, 30),
    late=st.floats(-60, 900),
    seed=st.integers(0, 2**16),
    named=st.booleans(),
)
def test_lines_back_to_their_start_or_crossing_themselves_serve_each_stop_once(
    shape: str, accuracy: float, step: float, late: float, seed: int, named: bool
) -> None:
    """A loop, a road driven there and back, a figure of eight: a bus named on its trip from the start
    serves every stop (one unnamed, every stop from where it was recognised), once, and never leaves
    its corridor."""
    trip = f"{shape}-1"
    rows = rows_of(FEED, trip)
    seconds = every(rows[0].departure_s - 30 + late, rows[-1].arrival_s + late + 120, step)
    fixes, _ = drive(
        FEED, trip, seconds, late_s=late, noise_m=accuracy, accuracy_m=accuracy, seed=seed, named=named
    )
    events = events_of(fixes, run(NET, fixes, trace=True))
    assert_each_stop_once(events, rows)
    served = {e.details["stop_sequence"] for e in events if e.kind.startswith("stop_")}
    if named:
        assert served == {r.stop_sequence for r in rows}
    lifecycle = [e.kind for e in events if e.kind.startswith("trip_")]
    assert lifecycle == ["trip_assigned", "trip_started", "trip_completed"]
    assert not of_kind(events, "deviation_started")


def test_a_stop_passed_between_two_fixes_is_arrived_and_departed_interpolated() -> None:
    fixes = trip_drive(step_s=90)
    events = events_of(fixes, run(NET, fixes, trace=True))
    interpolated = [e for e in of_kind(events, "stop_arrived") if e.details["interpolated"]]
    assert interpolated
    for e in interpolated:
        (departure,) = [d for d in of_kind(events, "stop_departed") if d.subject == e.subject]
        assert departure.details["at_ms"] == e.details["at_ms"]
        assert departure.time_ms == e.time_ms
        assert e.time_ms >= e.details["at_ms"]  # raised by the fix after the crossing, dated at the crossing


@settings(max_examples=25, deadline=None)
@given(
    offsets=st.lists(st.floats(-0.95 * LEAVE_M, 0.95 * LEAVE_M), min_size=1, max_size=80),
    seed=st.integers(0, 2**16),
)
def test_noise_within_the_corridor_never_raises_a_deviation(offsets: list[float], seed: int) -> None:
    fixes = trip_drive(seed=seed)
    noisy = shifted(fixes, [offsets[k % len(offsets)] for k in range(len(fixes))])
    events = events_of(noisy, run(NET, noisy, trace=True))
    assert not {"deviation_started", "deviation_ended"} & set(kinds(events))


@settings(max_examples=25, deadline=None)
@given(
    spikes=st.lists(st.tuples(st.integers(1, 15), st.integers(1, 5)), max_size=4),
    noise=st.floats(0, 0.95 * RETURN_M),
    seed=st.integers(0, 2**16),
)
def test_excursions_shorter_than_the_minimum_duration_raise_nothing(
    spikes: list[tuple[int, int]], noise: float, seed: int
) -> None:
    """Fixes far out (a multipath burst) for under a minute, between fixes nearer than the return limit."""
    fixes = trip_drive(seed=seed)
    offsets = [noise * (k % 2) for k in range(len(fixes))]
    start = 2
    for gap, length in spikes:  # at 10 s a fix, 5 fixes out span 40 s; the gap brings the bus back
        start += gap
        for k in range(start, min(start + length, len(fixes))):
            offsets[k] = LEAVE_M + 2_000
        start += length
    events = events_of(fixes, run(NET, shifted(fixes, offsets), trace=True))
    assert not {"deviation_started", "deviation_ended"} & set(kinds(events))


@settings(max_examples=30, deadline=None)
@given(
    distance=st.floats(LEAVE_M + 200, 6_000),
    start_s=st.floats(60, 200),
    duration_s=st.floats(2, 190),
    step=st.floats(5, 15),
    seed=st.integers(0, 2**16),
)
def test_a_detour_beyond_the_corridor_gives_one_start_and_one_end(
    distance: float, start_s: float, duration_s: float, step: float, seed: int
) -> None:
    fixes = trip_drive(step_s=step, seed=seed)
    t0 = fixes[0].time_ms + round(start_s * 1000)
    t1 = t0 + round((POLICY.deviation_min_s + 2 * step + duration_s) * 1000)  # fixes out for over a minute
    detour = shifted(fixes, [distance if t0 <= f.time_ms < t1 else 0.0 for f in fixes])
    events = events_of(detour, run(NET, detour, trace=True))
    (started,) = of_kind(events, "deviation_started")
    (ended,) = of_kind(events, "deviation_ended")
    first_out = min(f.time_ms for f in fixes if f.time_ms >= t0)
    first_back = min(f.time_ms for f in fixes if f.time_ms >= t1)
    assert started.details["started_ms"] == ended.details["started_ms"] == first_out
    assert (
        started.time_ms - first_out
        >= POLICY.deviation_min_s * 1000
        > started.time_ms - step * 1000 - first_out
    )
    assert abs(started.details["distance_m"] - distance) <= 100
    assert started.details["threshold_m"] == LEAVE_M
    assert ended.time_ms == first_back
    assert ended.details["reason"] == "returned"
    assert ended.details["duration_s"] == (first_back - first_out) / 1000
    assert abs(ended.details["max_distance_m"] - distance) <= 100
    assert kinds(events).count("trip_completed") == 1  # the trip goes on after the detour
    assert_each_stop_once(events)
    for skipped in of_kind(events, "stop_skipped"):  # passed while the bus was off its line
        assert first_out <= skipped.details["at_ms"] <= skipped.time_ms
        assert skipped.details["interpolated"]


def test_a_deviation_open_when_the_trip_is_released_ends_with_it() -> None:
    fixes = trip_drive()
    start = fixes[0].time_ms + 120_000
    kept = [f for f in fixes if f.time_ms < start]
    gone = [
        FixPoint(start + k * 15_000, kept[-1].lat - 3_000 / METRES_PER_DEGREE, kept[-1].lon, accuracy_m=10)
        for k in range(60)
    ]  # the bus drove 3 km off its line and parked there, its driver's app no longer naming the trip
    events = events_of(kept + gone, run(NET, kept + gone, trace=True))
    tail = [e for e in events if e.kind.startswith(("deviation", "trip_"))]
    assert kinds(tail) == [
        "trip_assigned", "trip_started", "deviation_started", "deviation_ended", "trip_unassigned"
    ]  # fmt: skip
    _, _, started, ended, unassigned = tail
    assert ended.details["reason"] == unassigned.details["reason"] == "released"
    assert ended.time_ms == unassigned.time_ms
    assert ended.details["started_ms"] == started.details["started_ms"] == gone[0].time_ms


def test_a_bus_assigned_past_its_first_stop_starts_its_trip_there() -> None:
    """Without a trip id the bus is assigned from its movement, after its first stop: it is under way."""
    fixes = trip_drive(named=False)
    events = events_of(fixes, run(NET, fixes, trace=True))
    assigned, started = events[0], events[1]
    assert (assigned.kind, started.kind) == ("trip_assigned", "trip_started")
    assert started.time_ms == assigned.time_ms
    assert assigned.subject == f"{TRIP}/{DAY.strftime('%Y%m%d')}/09:00:00"
    first_stop = [e for e in events if e.details.get("stop_sequence") == ROWS[0].stop_sequence]
    assert not first_stop  # passed before anyone knew which trip it was
    assert_each_stop_once(events)
    assert kinds(events).count("trip_started") == 1


def test_a_frequency_based_trip_has_its_stops_scheduled_from_its_own_start() -> None:
    """The 08:40 departure of a line every 10 minutes: stop delays count from 08:40, not the template's."""
    feed, net = network(
        [line("straight", name="freq", departures_s=[], frequency=(8 * 3600, 10 * 3600, 600))]
    )
    rows = rows_of(feed, "freq-0")
    offset, late = 2_400, 200
    seconds = every(rows[0].departure_s + offset - 60, rows[-1].arrival_s + offset + late + 120, 10)
    fixes, _ = drive(feed, "freq-0", seconds, offset_s=offset, late_s=late, noise_m=10, named=True)
    events = events_of(fixes, run(net, fixes, trace=True))
    assert {e.start_time for e in events} == {"08:40:00"}
    assert {e.subject.split("#")[0] for e in events} == {f"freq-0/{DAY.strftime('%Y%m%d')}/08:40:00"}
    stops = [e for e in events if e.kind in ("stop_arrived", "stop_departed")]
    assert len(stops) == 2 * len(rows) - 1
    for e in stops[1:]:  # the first arrival is when the coach pulled in, before its time
        assert abs(e.details["delay_s"] - late) <= 20
    assert kinds(events).count("trip_completed") == 1


def test_a_bus_named_on_another_trip_is_reassigned() -> None:
    fixes = trip_drive()
    switch = fixes[0].time_ms + 200_000
    renamed = [msgspec.structs.replace(f, trip_id="twin-0") if f.time_ms >= switch else f for f in fixes]
    events = events_of(renamed, run(TWINS, renamed, trace=True))
    lifecycle = [(e.kind, e.trip_id, e.details.get("reason")) for e in events if e.kind.startswith("trip_")]
    assert lifecycle[:4] == [
        ("trip_assigned", TRIP, None),
        ("trip_started", TRIP, None),
        ("trip_unassigned", TRIP, "reassigned"),
        ("trip_assigned", "twin-0", None),
    ]
    left = next(e for e in events if e.kind == "trip_unassigned")
    assert all(e.trip_id == "twin-0" for e in events[events.index(left) + 1 :])


@settings(max_examples=20, deadline=None)
@given(
    per_batch=st.integers(2, 40),
    seed=st.integers(0, 2**16),
    named=st.booleans(),
    late=st.floats(-60, 1_200),
    detour=st.booleans(),
)
def test_the_events_are_the_same_whatever_the_batch_split(
    per_batch: int, seed: int, named: bool, late: float, detour: bool
) -> None:
    fixes = trip_drive(late_s=late, seed=seed, named=named)
    if detour:
        fixes = shifted(fixes, [3_000.0 if 15 <= k < 30 else 0.0 for k in range(len(fixes))])
    one_by_one = events_of(fixes, run(NET, fixes, trace=True))
    split = events_of(fixes, run(NET, fixes, per_batch=per_batch, trace=True))
    assert [e.key for e in split] == [e.key for e in one_by_one]
    assert split == one_by_one
    assert_each_stop_once(one_by_one)
    assert "trip_completed" in kinds(one_by_one)


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 10)), min_size=1, max_size=12))
def test_redelivered_and_resplit_fixes_give_the_same_events_once(cuts: list[tuple[int, int]]) -> None:
    """``detect_bus`` on batches that overlap (each opens with fixes of the one before, redelivered),
    the bus's state through msgpack in between as through Redis: the events of one fix after another."""
    fixes = trip_drive(late_s=400)
    fixes = shifted(fixes, [3_000.0 if 20 <= k < 32 else 0.0 for k in range(len(fixes))])
    traced = [at for r in run(NET, fixes, trace=True) for at in r.trace]
    observations = [
        Observation("bus-1", f.time_ms, k, f.lat, f.lon, trip=at)
        for k, (f, at) in enumerate(zip(fixes, traced, strict=True))
    ]
    context = DetectContext("test", policy=POLICY)
    _, expected, _ = detect_bus(BusState(), observations, context)
    state, events, start, late, redelivered = BusState(), [], 0, 0, 0
    for size, repeated in [*cuts, (len(observations), 0)]:
        first = min(max(start - repeated, 0), len(observations))
        redelivered += min(start, len(observations)) - first
        state, found, skipped = detect_bus(state, observations[first : start + size], context)
        state = BUS_DECODER.decode(BUS_ENCODER.encode(state))
        events += found
        late += skipped
        start += size
    assert events == expected
    assert late == redelivered
    assert {"deviation_started", "deviation_ended", "trip_completed"} <= set(kinds(expected))


def test_redelivered_fixes_raise_nothing_twice() -> None:
    """Fixes given again (a redelivered batch) are stale for progress: no trace, so no second event."""
    fixes = trip_drive(late_s=400)
    batches = run(NET, fixes, per_batch=10, trace=True)
    events = events_of(fixes, batches)
    again = run(NET, fixes + fixes, per_batch=len(fixes), trace=True)
    assert [len(r.trace) for r in again] == [len(fixes), 0]
    assert again[1].stale == len(fixes)
    assert events_of(fixes, again) == events


def at_delay(delay_s: float, time_ms: int) -> TripAt:
    instance = find_instance(NET, TRIP, DAY.strftime("%Y%m%d"), "09:00:00")
    assert instance is not None
    return TripAt(time_ms, instance, "assigned", 1_000.0, 5.0, delay_s, 1, 0, False, ())


@settings(max_examples=200)
@given(limit=st.sampled_from(POLICY.delay_bands_s), wobble=st.lists(st.floats(-0.99, 0.99), min_size=1))
def test_a_delay_wavering_on_a_band_limit_changes_band_at_most_once(
    limit: float, wobble: list[float]
) -> None:
    """A bus settled in the band under a limit, then its delay wavering within the hysteresis of it."""
    hysteresis = POLICY.delay_hysteresis_s
    delays = [limit - hysteresis - 1, *(limit + w * hysteresis for w in wobble)]
    state, changes = TripEventsState(), []
    for k, delay in enumerate(delays):
        at = at_delay(delay, 1_000 * (k + 1))
        state, found = trip_step(state, Observation("bus-1", at.time_ms, 0, 36.7, 3.0, trip=at), "t", POLICY)
        changes += of_kind(found, "delay_changed") if k else []
    assert len(changes) <= 1
    for change in changes:
        assert change.details["band"] == band_of(change.details["delay_s"])  # upwards at once
        assert change.details["delay_s"] >= limit


def test_a_fix_that_changes_nothing_returns_the_same_state() -> None:
    state, _ = trip_step(
        TripEventsState(), Observation("bus-1", 1, 0, 36.7, 3.0, trip=at_delay(10, 1)), "t", POLICY
    )
    again, events = trip_step(state, Observation("bus-1", 2, 0, 36.7, 3.0, trip=at_delay(12, 2)), "t", POLICY)
    assert again is state
    assert events == []
    unchanged, events = trip_step(state, Observation("bus-1", 3, 0, 36.7, 3.0), "t", POLICY)
    assert unchanged is state  # an operator without a feed
    assert events == []
