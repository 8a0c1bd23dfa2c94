"""The ETA request made from trip progress: the stop a bus stands at is served, and it dwells there."""

from __future__ import annotations

from fleet_processing.eta import EtaRequest, SegmentHistory, predict_batch
from fleet_testing.trips import drive, every, line, network, rows_of, run

FEED, NET = network([line("straight", name="road", stops=4)])


def test_a_bus_between_stops_predicts_from_its_next_stop_and_one_at_a_stop_from_the_one_after() -> None:
    rows = rows_of(FEED, "road-0")
    start = rows[0].departure_s
    fixes, _ = drive(FEED, "road-0", every(start, rows[1].arrival_s + 30, 5), named=True)
    results = run(NET, fixes)
    moving = next(r for r in results if r.next_stop == 1 and r.progress.stop_arrived_ms == 0 and r.along_m)
    at_stop = results[-1]
    assert at_stop.progress.stop_arrived_ms > 0, "30 s into its 60 s dwell at the second stop"
    requests = [EtaRequest.from_progress(r, r.progress.time_ms) for r in (moving, at_stop)]
    assert [(q.next_stop, q.dwelling) for q in requests if q is not None] == [(1, False), (2, True)]
    etas = predict_batch(
        [q for q in requests if q is not None], SegmentHistory("test"), at_stop.progress.time_ms
    )
    assert [e.stop_sequence for e in etas[1]] == [row.stop_sequence for row in rows[2:]]


def test_a_bus_on_no_trip_makes_no_request() -> None:
    rows = rows_of(FEED, "road-0")
    parked, _ = drive(FEED, "road-0", [rows[0].departure_s - 600.0] * 1)
    (result,) = run(NET, parked)
    assert EtaRequest.from_progress(result, result.progress.time_ms) is None
