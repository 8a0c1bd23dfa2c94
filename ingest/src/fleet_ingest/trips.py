"""Ingest's processing step: the kept frames of a micro-batch become trip progress, ETAs, visits and events.

Pure translation around :mod:`fleet_processing`: the caller hands in each
operator's run-time network and travel-time history (:class:`Networks` keeps
them fresh), each operator's detector context (fences, thresholds), the saved
progress and detector state of the batch's buses (from Redis) and the clock.
Out come, per bus, the live position's ``calculated`` block, the progress and
detector state to save with it and the events of its fixes; per trip
instance, the prediction for every upcoming stop and the stops it no longer
comes to (off their boards); and the stop visits to store as history.

Every bus runs through the detectors (offline, fences); buses of an operator
with a feed also through progress, whose per-fix trace the trip detectors read.
Only the newest fix of each bus gets an ETA: the older ones of the same batch
advance its progress and would be overwritten in the same write.
"""

from __future__ import annotations

import operator as op
from collections import defaultdict
from collections.abc import Iterable, Mapping

import msgspec

from fleet_ingest.assess import Accepted, BusKey
from fleet_processing.detect import STATE_ENCODER, DetectContext, detect_bus, load_state
from fleet_processing.detection import Observation
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
    TripAt,
    advance_batch,
)
from fleet_schemas.events import Event
from fleet_schemas.frames import Frame
from fleet_schemas.trips import Calculated, StopEta, StopVisit, TripEtas
from fleet_store.etas import EtaUpdate


class OperatorModel(msgspec.Struct, frozen=True):
    """What the trip step needs of one operator: its active feed's network and its driven history."""

    network: Network
    history: SegmentHistory


_FRAME_ORDER = op.attrgetter("time_ms", "seq")


class SavedBus(msgspec.Struct, frozen=True, gc=False):
    """What Redis holds for one bus between batches (None: nothing yet); untracked by the garbage
    collector, as thousands are held at once and none can be in a cycle."""

    progress: bytes | None = None
    state: bytes | None = None


NOTHING_SAVED = SavedBus()


class Followed(msgspec.Struct, frozen=True):
    """The processing step's output for one batch."""

    calculated: dict[BusKey, Calculated]
    """the trip block of each bus's newest position (buses on a feed only)"""
    progress: dict[BusKey, bytes]
    """each bus's progress to save with that position (buses on a feed only)"""
    states: dict[BusKey, bytes]
    """each bus's detector state to save with it (every bus with a fix newer than its state)"""
    etas: list[EtaUpdate]
    visits: list[StopVisit]
    events: list[Event]
    late: dict[BusKey, int]
    """per bus, fixes not newer than its state: stored in history, no event"""

    def carried(self, saved: Mapping[BusKey, SavedBus]) -> dict[BusKey, SavedBus]:
        """What Redis would hold after this batch's write, from what it held before (replays, benches)."""
        out = dict(saved)
        for key in self.progress.keys() | self.states.keys():
            held = out.get(key, NOTHING_SAVED)
            out[key] = SavedBus(self.progress.get(key, held.progress), self.states.get(key, held.state))
        return out

    def only(self, buses: set[BusKey]) -> Followed:
        """The part of the output about ``buses`` (those whose write won the compare-and-set)."""
        return Followed(
            {k: v for k, v in self.calculated.items() if k in buses},
            {k: v for k, v in self.progress.items() if k in buses},
            {k: v for k, v in self.states.items() if k in buses},
            [e for e in self.etas if (e.etas.operator, e.etas.bus) in buses],
            [v for v in self.visits if (v.operator, v.bus) in buses],
            [e for e in self.events if (e.operator, e.bus) in buses],
            {k: v for k, v in self.late.items() if k in buses},
        )


def follow(
    models: Mapping[str, OperatorModel],
    contexts: Mapping[str, DetectContext],
    kept: Iterable[Accepted],
    saved: Mapping[BusKey, SavedBus],
    now_ms: int,
) -> Followed:
    """Advance every bus through its kept frames: progress and ETAs on a feed, detectors for all.

    ``contexts`` lacking an operator means no fences and the default thresholds for it.
    """
    by_operator: dict[str, dict[str, list[Frame]]] = defaultdict(lambda: defaultdict(list))
    for accepted in kept:
        by_operator[accepted.operator][accepted.frame.bus].append(accepted.frame)
    calculated: dict[BusKey, Calculated] = {}
    progress: dict[BusKey, bytes] = {}
    states: dict[BusKey, bytes] = {}
    etas: list[EtaUpdate] = []
    visits: list[StopVisit] = []
    events: list[Event] = []
    late: dict[BusKey, int] = {}
    for operator, buses in by_operator.items():
        for frames in buses.values():
            if len(frames) > 1:  # most buses have one frame a batch
                frames.sort(key=_FRAME_ORDER)
        model = models.get(operator)
        traces: dict[str, tuple[int, tuple[TripAt, ...]]] = {}
        if model is not None:
            traced = _follow_trips(model, operator, buses, saved, now_ms)
            calculated |= traced.calculated
            progress |= traced.progress
            etas += traced.etas
            visits += traced.visits
            traces = traced.traces
        detected = detect(contexts.get(operator) or DetectContext(operator), buses, traces, saved)
        states |= detected.states
        events += detected.events
        late |= detected.late
    return Followed(calculated, progress, states, etas, visits, events, late)


class Detected(msgspec.Struct, frozen=True):
    """The detectors' output for one operator's buses of a batch (as in :class:`Followed`)."""

    states: dict[BusKey, bytes]
    events: list[Event]
    late: dict[BusKey, int]


def detect(
    context: DetectContext,
    buses: Mapping[str, list[Frame]],
    traces: Mapping[str, tuple[int, tuple[TripAt, ...]]],
    saved: Mapping[BusKey, SavedBus],
) -> Detected:
    """Every detector over each bus's frames (in time order), reading progress's trace where it has one.

    ``traces``: per bus, how many of its first frames progress left out (stale) and where it put the
    others; a bus without one (its operator has no feed) gets no trip detectors.
    """
    operator = context.operator
    states: dict[BusKey, bytes] = {}
    events: list[Event] = []
    late: dict[BusKey, int] = {}
    context.fences.prefetch((f.lat, f.lon) for frames in buses.values() for f in frames)
    for bus, frames in buses.items():
        key = (operator, bus)
        before = load_state(saved.get(key, NOTHING_SAVED).state)
        stale, trace = traces.get(bus, (len(frames), ()))
        observations = [
            Observation(
                bus, f.time_ms, f.seq, f.lat, f.lon, f.speed_mps, trace[i - stale] if i >= stale else None
            )
            for i, f in enumerate(frames)
        ]
        after, found, skipped = detect_bus(before, observations, context)
        if skipped:
            late[key] = skipped
        if after is not before:
            states[key] = STATE_ENCODER.encode(after)
        events += found
    return Detected(states, events, late)


class _Traced(msgspec.Struct, frozen=True):
    calculated: dict[BusKey, Calculated]
    progress: dict[BusKey, bytes]
    etas: list[EtaUpdate]
    visits: list[StopVisit]
    traces: dict[str, tuple[int, tuple[TripAt, ...]]]
    """per bus, how many of its first fixes progress left out (stale) and the trace of the others"""


def _follow_trips(
    model: OperatorModel,
    operator: str,
    buses: Mapping[str, list[Frame]],
    saved: Mapping[BusKey, SavedBus],
    now_ms: int,
) -> _Traced:
    """Progress (with its per-fix trace) and ETAs of one operator's buses."""
    calculated: dict[BusKey, Calculated] = {}
    progress: dict[BusKey, bytes] = {}
    etas: list[EtaUpdate] = []
    visits: list[StopVisit] = []
    traces: dict[str, tuple[int, tuple[TripAt, ...]]] = {}
    feed_id = model.network.feed_id
    items = [
        BusFixes(
            bus, _saved_progress(saved.get((operator, bus), NOTHING_SAVED).progress, feed_id), _fixes(frames)
        )
        for bus, frames in buses.items()
    ]
    network = model.network
    results = advance_batch(network, items, now_ms, trace=True)
    requests: list[EtaRequest] = []
    predicted: list[tuple[BusProgress | None, Progressed, tuple[str, str], bool]] = []
    encode = PROGRESS_ENCODER.encode
    for item, result in zip(items, results, strict=True):
        key = (operator, result.bus)
        progress[key] = encode(result.progress)
        if result.visits:
            visits += result.visits
        traces[result.bus] = (result.stale, result.trace)
        previous, instance = item.previous, result.instance
        # The instance's label, and whether the saved progress was on it, found once per bus.
        label = _label(network, instance) if instance is not None else None
        same = (
            previous is not None
            and label is not None
            and instance is not None
            and previous.trip_id == instance.plan.trip_id
            and (previous.start_date, previous.start_time) == label
        )
        request = EtaRequest.from_progress(result, item.fixes[-1].time_ms)
        if request is None or label is None:
            calculated[key] = result.calculated
        else:
            requests.append(request)
            predicted.append((previous, result, label, same))
        if previous is not None and not same:
            etas += _released(network, operator, previous, result, now_ms)
    for (before, result, label, same), request, stops in zip(
        predicted, requests, predict_batch(requests, model.history, now_ms), strict=True
    ):
        calculated[(operator, result.bus)] = _with_eta(result.calculated, stops)
        etas.append(_trip_update(network, operator, before, result, request, stops, label, same, now_ms))
    return _Traced(calculated, progress, etas, visits, traces)


def _saved_progress(raw: bytes | None, feed_id: int) -> BusProgress | None:
    """The bus's saved progress, if it is of the active feed version and still decodes."""
    if raw is None:
        return None
    try:
        saved = PROGRESS_DECODER.decode(raw)
    except msgspec.DecodeError:
        return None  # written by another version of fleet: start over, as for a new bus
    return saved if saved.feed_id == feed_id else None


def _fixes(frames: list[Frame]) -> list[FixPoint]:
    """A bus's frames (in time order) as progress reads them."""
    return [
        FixPoint(f.time_ms, f.lat, f.lon, f.speed_mps, f.heading_deg, f.accuracy_m, f.trip_id) for f in frames
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
    label: tuple[str, str],
    same: bool,
    now_ms: int,
) -> EtaUpdate:
    """The prediction of the instance ``label`` names; ``same``: the saved progress was on it too."""
    plan = request.instance.plan
    etas = _trip_etas(
        operator,
        result.bus,
        network.feed_id,
        plan,
        label[0],
        label[1],
        request.time_ms,
        request.delay_s,
        stops,
        now_ms,
    )
    # The stops passed since the saved progress leave their boards (all before it, on a new trip).
    first = _first_upcoming(previous) if same else 0
    return EtaUpdate(etas, plan.stop_ids[first : request.next_stop])


def _first_upcoming(progress: BusProgress | None) -> int:
    """The first stop the saved progress predicted: its next stop, or the one after while dwelling there."""
    if progress is None:
        return 0
    return progress.next_stop + (1 if progress.stop_arrived_ms > 0 else 0)


def _label(network: Network, instance: TripInstance) -> tuple[str, str]:
    """(start_date, start_time) of an instance: the network's labels have them formatted once per day,
    where ``TripInstance.start_date`` formats a date on every call (a tenth of the step's time)."""
    label = network.labels.get(instance)
    if label is None:  # its day was just evicted from the network's cache
        return instance.start_date, instance.start_time
    return label.start_date, label.start_time


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
    network: Network, operator: str, previous: BusProgress, result: Progressed, now_ms: int
) -> list[EtaUpdate]:
    """A final, empty prediction for the trip the bus left (ended, or reassigned), off every board."""
    if previous.trip_id is None:
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
