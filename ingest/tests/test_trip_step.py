"""Ingest's trip step on its own: kept frames in, trip blocks, progress, board changes and visits out."""

from __future__ import annotations

from fleet_ingest.assess import Accepted
from fleet_ingest.trips import Followed, OperatorModel, SavedBus, follow
from fleet_processing.detect import STATE_DECODER
from fleet_processing.eta import SegmentHistory
from fleet_processing.progress import PROGRESS_DECODER, PROGRESS_ENCODER, FixPoint
from fleet_schemas import Frame
from fleet_schemas.gtfs import Feed
from fleet_testing.trips import detour, drive, every, line, network

OPERATOR = "op-a"
BUS = "BUS-1"
TRIP = "straight-0"
KEY = (OPERATOR, BUS)


def _model() -> tuple[Feed, OperatorModel]:
    feed, net = network([line("straight", departures_s=[8 * 3600])])
    return feed, OperatorModel(net, SegmentHistory(OPERATOR))


def _accepted(fixes: list[FixPoint], first_seq: int) -> list[Accepted]:
    return [
        Accepted(
            OPERATOR,
            "unit-1-k1",
            Frame(
                device="unit-1",
                bus=BUS,
                seq=first_seq + n,
                time_ms=f.time_ms,
                lat=f.lat,
                lon=f.lon,
                accuracy_m=f.accuracy_m,
                trip_id=f.trip_id,
            ),
        )
        for n, f in enumerate(fixes)
    ]


def _drive_batches(model: OperatorModel, fixes: list[FixPoint], per_batch: int) -> list[Followed]:
    """Each batch through ``follow`` with the progress the previous one saved, as Redis would hand it back."""
    saved = SavedBus()
    out = []
    for k in range(0, len(fixes), per_batch):
        chunk = fixes[k : k + per_batch]
        followed = follow({OPERATOR: model}, {}, _accepted(chunk, k), {KEY: saved}, chunk[-1].time_ms)
        saved = SavedBus(followed.progress[KEY], followed.states[KEY])
        out.append(followed)
    return out


def test_a_bus_on_its_trip_leaves_no_line_on_any_board_once_the_trip_is_over() -> None:
    feed, model = _model()
    fixes, _ = drive(feed, TRIP, every(8 * 3600, 8 * 3600 + 900, 5.0), named=True)
    boards: dict[str, set[str]] = {}
    predicted_stops: list[list[str]] = []
    for followed in _drive_batches(model, fixes, per_batch=6):
        for update in followed.etas:
            instance = f"{update.etas.trip_id}/{update.etas.start_date}/{update.etas.start_time}"
            for stop in update.etas.stops:
                boards.setdefault(stop.stop_id, set()).add(instance)
            for stop_id in update.gone_stop_ids:
                boards.get(stop_id, set()).discard(instance)
            if update.etas.stops:
                predicted_stops.append([s.stop_id for s in update.etas.stops])
    stop_ids = [f"straight-s{k}" for k in range(5)]
    assert predicted_stops, "the bus on its trip got predictions"
    assert all(stops == stop_ids[len(stop_ids) - len(stops) :] for stops in predicted_stops), (
        "each prediction is for the stops still ahead, in trip order"
    )
    assert [len(s) for s in predicted_stops] == sorted((len(s) for s in predicted_stops), reverse=True)
    assert {stop: lines for stop, lines in boards.items() if lines} == {}


def test_the_trip_block_and_visits_follow_the_bus() -> None:
    feed, model = _model()
    fixes, _ = drive(feed, TRIP, every(8 * 3600, 8 * 3600 + 900, 5.0), named=True)
    batches = _drive_batches(model, fixes, per_batch=6)
    first = batches[0].calculated[KEY]
    assert (first.state, first.trip_id) == ("assigned", TRIP)
    assert first.next_stop_eta_ms is not None
    assert first.estimated_arrival_ms is not None
    visited = [v.stop_id for b in batches for v in b.visits]
    assert visited == [f"straight-s{k}" for k in range(len(visited))]
    assert len(visited) >= 4


def test_progress_saved_for_another_feed_version_or_unreadable_starts_over() -> None:
    feed, model = _model()
    fixes, _ = drive(feed, TRIP, every(8 * 3600 + 120, 8 * 3600 + 150, 5.0), named=True)
    fresh = follow({OPERATOR: model}, {}, _accepted(fixes, 0), {}, fixes[-1].time_ms)
    other = PROGRESS_DECODER.decode(fresh.progress[KEY])
    other.feed_id = model.network.feed_id + 1
    other.along_m = 3_900.0
    for saved in (PROGRESS_ENCODER.encode(other), b"\xc1not msgpack"):
        again = follow({OPERATOR: model}, {}, _accepted(fixes, 0), {KEY: SavedBus(saved)}, fixes[-1].time_ms)
        assert again.calculated[KEY] == fresh.calculated[KEY]


def test_buses_of_operators_without_a_feed_get_no_trip_data_only_a_detector_state() -> None:
    feed, model = _model()
    fixes, _ = drive(feed, TRIP, every(8 * 3600, 8 * 3600 + 30, 5.0), named=True)
    followed = follow({"another-operator": model}, {}, _accepted(fixes, 0), {}, fixes[-1].time_ms)
    assert (followed.calculated, followed.progress, followed.etas, followed.visits) == ({}, {}, [], [])
    state = STATE_DECODER.decode(followed.states[KEY])
    assert (state.time_ms, state.lat, state.lon) == (fixes[-1].time_ms, fixes[-1].lat, fixes[-1].lon)


def test_a_detour_longer_than_release_lost_s_on_a_named_trip_is_one_deviation_of_a_trip_kept() -> None:
    feed, model = _model()
    before, away, back, _ = detour(feed, TRIP, 8 * 3600 + 30, off_m=3_000, fixes=90, named=True)
    # 15 minutes 3 km off the road, where a wrong inference would be given up
    events = [e for b in _drive_batches(model, before + away + back, per_batch=7) for e in b.events]
    told = [(e.kind, e.details.get("reason")) for e in events if e.kind.startswith(("deviation", "trip_"))]
    assert told == [
        ("trip_assigned", None),
        ("trip_started", None),
        ("deviation_started", None),
        ("deviation_ended", "returned"),
    ]
