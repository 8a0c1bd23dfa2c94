"""ETA to every upcoming stop: the invariants under any input, and what each part of the model does."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_processing.eta import EtaError, EtaRequest, SegmentHistory, hour_of_week, predict_batch
from fleet_processing.plan import ShapeLine, TripInstance, TripPlan

ORIGIN_MS = 1_795_000_000_000 - 1_795_000_000_000 % 86_400_000 - 3_600_000
"""a service day's origin (23:00 UTC, i.e. noon minus 12 h at UTC+1)"""


@dataclass(frozen=True)
class Seg:
    operator: str
    from_stop_id: str
    to_stop_id: str
    hour_of_week: int
    n: int
    mean_s: float
    var_s: float
    last_s: float
    last_ms: int


@dataclass(frozen=True)
class Dwell:
    operator: str
    stop_id: str
    hour_of_week: int
    n: int
    mean_s: float
    var_s: float


def plan_of(gaps_m: list[float], runs_s: list[int], dwells_s: list[int], trip_id: str = "T1") -> TripPlan:
    """A straight trip: stops ``gaps_m`` apart, ``runs_s`` between them, ``dwells_s`` at each."""
    dist = np.concatenate([[0.0], np.cumsum(gaps_m)])
    arrival, departure = [6 * 3600 + 12 * 3600], []
    for k, dwell in enumerate(dwells_s):
        departure.append(arrival[k] + dwell)
        if k < len(runs_s):
            arrival.append(departure[k] + runs_s[k])
    shape = ShapeLine("S1", np.column_stack([dist, np.zeros_like(dist)]), dist)
    return TripPlan(
        trip_id=trip_id,
        route_id="R1",
        service_id="WD",
        agency_id="A",
        direction_id=0,
        block_id=None,
        shape=shape,
        stop_ids=tuple(f"S{k}" for k in range(len(dist))),
        stop_sequences=np.arange(1, len(dist) + 1, dtype=np.int64),
        stop_dist_m=dist,
        arrival_s=np.array(arrival, np.int64),
        departure_s=np.array(departure, np.int64),
    )


def instance_of(plan: TripPlan) -> TripInstance:
    return TripInstance(plan=plan, service_date=date(2026, 11, 18), origin_ms=ORIGIN_MS)


def at_stop_ms(inst: TripInstance, k: int) -> int:
    return int(inst.departure_ms()[k])


@st.composite
def trips(draw: st.DrawFn) -> TripInstance:
    stops = draw(st.integers(2, 12))
    gaps = draw(st.lists(st.floats(0.0, 60_000.0), min_size=stops - 1, max_size=stops - 1))
    runs = draw(st.lists(st.integers(0, 4 * 3600), min_size=stops - 1, max_size=stops - 1))
    dwells = draw(st.lists(st.sampled_from([0, 0, 60, 600, 1800]), min_size=stops, max_size=stops))
    return instance_of(plan_of(gaps, runs, dwells))


@st.composite
def histories(draw: st.DrawFn, inst: TripInstance) -> SegmentHistory:
    ids = inst.plan.stop_ids
    segs = []
    for a, b in itertools.pairwise(ids):
        for _ in range(draw(st.integers(0, 3))):
            segs.append(
                Seg(
                    "op",
                    a,
                    b,
                    draw(st.integers(0, 167)),
                    draw(st.integers(0, 50)),
                    draw(st.floats(0.0, 20_000.0)),
                    draw(st.floats(0.0, 1e7)),
                    draw(st.floats(0.0, 20_000.0)),
                    ORIGIN_MS + draw(st.integers(-86_400_000, 86_400_000)),
                )
            )
    dwells = [
        Dwell("op", s, draw(st.integers(0, 167)), draw(st.integers(0, 20)), draw(st.floats(0, 3600)), 100.0)
        for s in ids
        if draw(st.booleans())
    ]
    return SegmentHistory("op", segs, dwells)


@st.composite
def requests(draw: st.DrawFn, inst: TripInstance) -> EtaRequest:
    plan = inst.plan
    nxt = draw(st.integers(0, len(plan.stop_ids)))
    low = float(plan.stop_dist_m[nxt - 1]) if nxt > 0 else -500.0
    high = float(plan.stop_dist_m[nxt]) if nxt < len(plan.stop_ids) else low
    return EtaRequest(
        instance=inst,
        distance_m=draw(st.floats(low, max(low, high))),
        time_ms=ORIGIN_MS + draw(st.integers(0, 40 * 3600)) * 1000,
        speed_mps=draw(st.none() | st.floats(0.0, 40.0)),
        delay_s=draw(st.floats(-3600.0, 7200.0)),
        next_stop=nxt,
        dwelling=nxt > 0 and draw(st.booleans()),
    )


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[EtaRequest], SegmentHistory, int]:
    inst = draw(trips())
    history = draw(histories(inst))
    batch = draw(st.lists(requests(inst), min_size=1, max_size=6))
    now_ms = max(r.time_ms for r in batch) + draw(st.integers(0, 5_000))
    return batch, history, now_ms


@pytest.mark.filterwarnings("error")  # a NaN or overflow on the way is a bug even if the checks pass
@settings(max_examples=300, deadline=None)
@given(batches())
def test_etas_never_go_backwards_never_in_the_past_and_stay_inside_their_band(
    case: tuple[list[EtaRequest], SegmentHistory, int],
) -> None:
    batch, history, now_ms = case
    for request, etas in zip(batch, predict_batch(batch, history, now_ms), strict=True):
        plan = request.instance.plan
        assert [e.stop_sequence for e in etas] == plan.stop_sequences[request.next_stop :].tolist()
        arrivals = [e.arrival_ms for e in etas]
        assert arrivals == sorted(arrivals)
        for e in etas:
            assert now_ms <= e.arrival_early_ms <= e.arrival_ms <= e.arrival_late_ms
            assert e.arrival_ms <= e.departure_ms
        assert all(a.departure_ms <= b.arrival_ms for a, b in itertools.pairwise(etas))


def test_a_bus_past_every_stop_predicts_nothing_and_the_others_in_its_batch_still_get_theirs() -> None:
    inst = instance_of(plan_of([10_000.0, 10_000.0], [600, 600], [0, 60, 0]))
    done = EtaRequest(inst, 20_000.0, at_stop_ms(inst, 2), 10.0, 0.0, next_stop=3)
    going = EtaRequest(inst, 5_000.0, at_stop_ms(inst, 0) + 300_000, 10.0, 0.0, next_stop=1)
    result = predict_batch([done, going], SegmentHistory("op"), going.time_ms)
    assert result[0] == []
    assert [e.stop_id for e in result[1]] == ["S1", "S2"]


def test_without_history_or_speed_an_on_time_bus_is_predicted_on_schedule() -> None:
    inst = instance_of(plan_of([20_000.0, 20_000.0, 20_000.0], [1200, 1200, 1200], [0, 60, 60, 0]))
    at_s1 = EtaRequest(inst, 20_000.0, int(inst.departure_ms()[1]), None, 0.0, next_stop=2)
    (etas,) = predict_batch([at_s1], SegmentHistory("op"), at_s1.time_ms)
    assert [e.arrival_ms for e in etas] == inst.arrival_ms()[2:].tolist()


def test_a_late_bus_keeps_its_delay_but_an_early_one_waits_at_a_timepoint() -> None:
    inst = instance_of(plan_of([20_000.0, 20_000.0], [1200, 1200], [0, 600, 0]))
    scheduled = inst.arrival_ms()
    late = EtaRequest(inst, 0.0, int(inst.departure_ms()[0]) + 900_000, None, 900.0, next_stop=1)
    early = EtaRequest(inst, 0.0, int(inst.departure_ms()[0]) - 300_000, None, -300.0, next_stop=1)
    (late_etas,) = predict_batch([late], SegmentHistory("op"), late.time_ms)
    (early_etas,) = predict_batch([early], SegmentHistory("op"), early.time_ms)
    lateness = [e.arrival_ms - s for e, s in zip(late_etas, scheduled[1:], strict=True)]
    assert lateness == [900_000, 900_000 - 600_000 + 20_000], (
        "S1's 600 s of slack absorb all but 20 s of dwell"
    )
    assert early_etas[0].arrival_ms == scheduled[1] - 300_000
    assert early_etas[1].arrival_ms == scheduled[2], "held at S1 until its scheduled departure"


def _history_of(mean_s: float, last_s: float, last_ms: int, n: int = 20) -> SegmentHistory:
    rows = [Seg("op", "S0", "S1", h, n, mean_s, 120.0**2, last_s, last_ms) for h in range(168)]
    return SegmentHistory("op", rows)


def test_history_replaces_the_schedule_and_the_previous_bus_corrects_it_more_when_recent() -> None:
    inst = instance_of(plan_of([20_000.0], [1200], [0, 0]))
    start = int(inst.departure_ms()[0])
    request = EtaRequest(inst, 0.0, start, None, 0.0, next_stop=1)

    def eta_after(history: SegmentHistory) -> float:
        return (predict_batch([request], history, start)[0][0].arrival_ms - start) / 1000

    assert eta_after(_history_of(1800.0, 1800.0, start - 86_400_000)) == pytest.approx(1800.0, abs=1)
    just_now = eta_after(_history_of(1800.0, 2400.0, start - 300_000))
    this_morning = eta_after(_history_of(1800.0, 2400.0, start - 5 * 3_600_000))
    assert 1800.0 < this_morning < just_now < 2400.0


def test_the_bus_s_own_speed_weighs_most_on_the_segment_it_is_on() -> None:
    inst = instance_of(plan_of([20_000.0, 20_000.0], [1200, 1200], [0, 0, 0]))
    start = int(inst.departure_ms()[0])
    crawling = EtaRequest(inst, 0.0, start, 5.0, 0.0, next_stop=1)
    (etas,) = predict_batch([crawling], SegmentHistory("op"), start)
    first, second = etas[0].arrival_ms - start, etas[1].arrival_ms - etas[0].arrival_ms
    assert first > 1_200_000 * 1.5, "20 km at 5 m/s is 4,000 s: the schedule's 1,200 s is pulled up"
    assert 1_200_000 < second < first


def test_the_band_widens_with_the_horizon() -> None:
    inst = instance_of(plan_of([30_000.0] * 5, [1800] * 5, [0] * 6))
    request = EtaRequest(inst, 0.0, int(inst.departure_ms()[0]), None, 0.0, next_stop=1)
    (etas,) = predict_batch([request], SegmentHistory("op"), request.time_ms)
    widths = [e.arrival_late_ms - e.arrival_early_ms for e in etas]
    assert widths == sorted(widths)
    assert widths[0] < widths[-1]


def test_a_next_stop_outside_the_trip_is_a_typed_error() -> None:
    inst = instance_of(plan_of([1000.0], [60], [0, 0]))
    beyond = EtaRequest(inst, 0.0, ORIGIN_MS, None, 0.0, next_stop=5)
    with pytest.raises(EtaError) as caught:
        predict_batch([beyond], SegmentHistory("op"), ORIGIN_MS)
    assert caught.value.code == "eta_invalid"


def test_history_rows_of_another_operator_are_refused() -> None:
    with pytest.raises(EtaError):
        SegmentHistory("op", [Seg("other", "S0", "S1", 0, 5, 60.0, 1.0, 60.0, ORIGIN_MS)])


@given(st.integers(0, 4_000_000_000_000))
def test_hour_of_week_counts_from_monday_midnight_utc(time_ms: int) -> None:
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(time_ms / 1000, UTC)
    assert hour_of_week(np.array([time_ms]))[0] == moment.weekday() * 24 + moment.hour


def test_an_hour_seen_too_rarely_falls_back_to_that_hour_on_other_days() -> None:
    inst = instance_of(plan_of([20_000.0], [1200], [0, 0]))
    start = int(inst.departure_ms()[0])
    hour = int(hour_of_week(np.array([start]))[0])
    rows = [
        Seg("op", "S0", "S1", (hour + 24 * day) % 168, 1, 2000.0, 0.0, 2000.0, start - 7 * 86_400_000)
        for day in range(7)
    ]
    rows += [Seg("op", "S0", "S1", (hour + 12) % 168, 50, 900.0, 0.0, 900.0, start - 7 * 86_400_000)]
    request = EtaRequest(inst, 0.0, start, None, 0.0, next_stop=1)
    (etas,) = predict_batch([request], SegmentHistory("op", rows), start)
    assert etas[0].arrival_ms - start == pytest.approx(2_000_000, abs=1000)


def test_a_bus_dwelling_at_a_long_stop_is_given_half_of_its_usual_dwell_still_to_wait() -> None:
    inst = instance_of(plan_of([20_000.0, 20_000.0], [1200, 1200], [0, 0, 0]))
    at_s1 = int(inst.arrival_ms()[1])
    meal = [Dwell("op", "S1", h, 10, 1800.0, 60.0**2) for h in range(168)]
    request = EtaRequest(inst, 20_000.0, at_s1, 0.0, 0.0, next_stop=2, dwelling=True)
    (etas,) = predict_batch([request], SegmentHistory("op", dwells=meal), at_s1)
    assert [e.stop_id for e in etas] == ["S2"]
    assert etas[0].arrival_ms == at_s1 + 900_000 + 1_200_000
