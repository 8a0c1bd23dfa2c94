"""Ingest's trip step: the kept frames of a micro-batch become trip progress, ETAs and stop visits.

Pure translation around :mod:`fleet_processing`: the caller hands in each
operator's run-time network and travel-time history (:class:`Networks` keeps
them fresh), the saved progress of the batch's buses (from their Redis
hashes) and the clock. Out come, per bus, the live position's ``calculated``
block and the progress to save with it; per trip instance, the prediction for
every upcoming stop and the stops it no longer comes to (off their boards);
and the stop visits to store as history.

Only the newest fix of each bus gets an ETA: the older ones of the same batch
advance its progress and would be overwritten in the same write.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import msgspec

from fleet_ingest.assess import Accepted, BusKey
from fleet_processing.eta import EtaRequest, SegmentHistory, predict_batch
from fleet_processing.network import Network
from fleet_processing.plan import TripInstance, TripPlan
from fleet_processing.progress import (
    PROGRESS_DECODER,
    PROGRESS_ENCODER,
    BusFixes,
    BusProgress,
    FixPoint,
    Progressed,
    advance_batch,
)
from fleet_schemas.trips import Calculated, StopEta, StopVisit, TripEtas
from fleet_store.etas import EtaUpdate


class OperatorModel(msgspec.Struct, frozen=True):
    """What the trip step needs of one operator: its active feed's network and its driven history."""

    network: Network
    history: SegmentHistory


class Followed(msgspec.Struct, frozen=True):
    """The trip step's output for one batch."""

    calculated: dict[BusKey, Calculated]
    """the trip block of each bus's newest position"""
    progress: dict[BusKey, bytes]
    """each bus's progress to save with that position"""
    etas: list[EtaUpdate]
    visits: list[StopVisit]


NOTHING_FOLLOWED = Followed({}, {}, [], [])
"""The output for a batch with no bus on a feed: positions go live without a trip block."""


def follow(
    models: Mapping[str, OperatorModel],
    kept: Iterable[Accepted],
    saved: Mapping[BusKey, bytes | None],
    now_ms: int,
) -> Followed:
    """Advance every bus with a network through its kept frames; predict its trip's upcoming stops."""
    by_operator: dict[str, dict[str, list[Accepted]]] = defaultdict(lambda: defaultdict(list))
    for accepted in kept:
        if accepted.operator in models:
            by_operator[accepted.operator][accepted.frame.bus].append(accepted)
    calculated: dict[BusKey, Calculated] = {}
    progress: dict[BusKey, bytes] = {}
    etas: list[EtaUpdate] = []
    visits: list[StopVisit] = []
    for operator, buses in by_operator.items():
        model = models[operator]
        items = [
            BusFixes(bus, _saved_progress(saved.get((operator, bus)), model.network.feed_id), _fixes(frames))
            for bus, frames in buses.items()
        ]
        results = advance_batch(model.network, items, now_ms)
        requests: list[EtaRequest] = []
        predicted: list[tuple[BusProgress | None, Progressed]] = []
        for item, result in zip(items, results, strict=True):
            key = (operator, result.bus)
            progress[key] = PROGRESS_ENCODER.encode(result.progress)
            visits += result.visits
            request = EtaRequest.from_progress(result, item.fixes[-1].time_ms)
            if request is None:
                calculated[key] = result.calculated
            else:
                requests.append(request)
                predicted.append((item.previous, result))
            etas += _released(model.network, operator, item.previous, result, now_ms)
        for (before, result), request, stops in zip(
            predicted, requests, predict_batch(requests, model.history, now_ms), strict=True
        ):
            calculated[(operator, result.bus)] = _with_eta(result.calculated, stops)
            etas.append(_trip_update(model.network, operator, before, result, request, stops, now_ms))
    return Followed(calculated, progress, etas, visits)


def _saved_progress(raw: bytes | None, feed_id: int) -> BusProgress | None:
    """The bus's saved progress, if it is of the active feed version and still decodes."""
    if raw is None:
        return None
    try:
        saved = PROGRESS_DECODER.decode(raw)
    except msgspec.DecodeError:
        return None  # written by another version of fleet: start over, as for a new bus
    return saved if saved.feed_id == feed_id else None


def _fixes(frames: list[Accepted]) -> list[FixPoint]:
    ordered = sorted(frames, key=lambda a: (a.frame.time_ms, a.frame.seq))
    return [
        FixPoint(f.time_ms, f.lat, f.lon, f.speed_mps, f.heading_deg, f.accuracy_m, f.trip_id)
        for f in (a.frame for a in ordered)
    ]


def _with_eta(calculated: Calculated, stops: list[StopEta]) -> Calculated:
    if not stops:
        return calculated
    return msgspec.structs.replace(
        calculated,
        estimated_arrival_ms=stops[-1].arrival_ms,
        next_stop_id=stops[0].stop_id,
        next_stop_sequence=stops[0].stop_sequence,
        next_stop_eta_ms=stops[0].arrival_ms,
    )


def _trip_update(
    network: Network,
    operator: str,
    previous: BusProgress | None,
    result: Progressed,
    request: EtaRequest,
    stops: list[StopEta],
    now_ms: int,
) -> EtaUpdate:
    instance = request.instance
    etas = _trip_etas(
        operator,
        result.bus,
        network.feed_id,
        instance.plan,
        instance.start_date,
        instance.start_time,
        request.time_ms,
        request.delay_s,
        stops,
        now_ms,
    )
    # The stops passed since the saved progress leave their boards (all before it, on a new trip).
    first = _first_upcoming(previous) if _same_instance(previous, instance) else 0
    return EtaUpdate(etas, instance.plan.stop_ids[first : request.next_stop])


def _first_upcoming(progress: BusProgress | None) -> int:
    """The first stop the saved progress predicted: its next stop, or the one after while dwelling there."""
    if progress is None:
        return 0
    return progress.next_stop + (1 if progress.stop_arrived_ms > 0 else 0)


def _same_instance(progress: BusProgress | None, instance: TripInstance | None) -> bool:
    return (
        progress is not None
        and instance is not None
        and progress.trip_id == instance.plan.trip_id
        and progress.start_date == instance.start_date
        and progress.start_time == instance.start_time
    )


def _trip_etas(
    operator: str,
    bus: str,
    feed_id: int,
    plan: TripPlan,
    start_date: str,
    start_time: str,
    time_ms: int,
    delay_s: float,
    stops: list[StopEta],
    now_ms: int,
) -> TripEtas:
    return TripEtas(
        operator=operator,
        trip_id=plan.trip_id,
        route_id=plan.route_id,
        start_date=start_date,
        start_time=start_time,
        bus=bus,
        feed_id=feed_id,
        time_ms=time_ms,
        updated_ms=now_ms,
        delay_s=delay_s,
        stops=stops,
    )


def _released(
    network: Network, operator: str, previous: BusProgress | None, result: Progressed, now_ms: int
) -> list[EtaUpdate]:
    """A final, empty prediction for the trip the bus left (ended, or reassigned), off every board."""
    if previous is None or previous.trip_id is None or _same_instance(previous, result.instance):
        return []
    index = network.plan_index.get(previous.trip_id)
    if index is None or previous.start_date is None or previous.start_time is None:
        return []
    plan = network.plans[index]
    etas = _trip_etas(
        operator,
        result.bus,
        network.feed_id,
        plan,
        previous.start_date,
        previous.start_time,
        result.progress.time_ms,
        previous.delay_s,
        [],
        now_ms,
    )
    return [EtaUpdate(etas, plan.stop_ids[_first_upcoming(previous) :])]
