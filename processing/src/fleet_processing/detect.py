"""Every detector of one bus, fix after fix, and the state ingest keeps for it between batches.

``step(state, observation, context) -> (state, events)`` runs the fence
detectors (``fleet_processing.geofences``), the trip detectors
(``fleet_processing.trip_events``) and the online/offline rule on one fix.
``detect_bus`` folds it over a bus's fixes of a batch; ``went_offline`` is
what ingest's periodic sweep applies to a bus that sent nothing.

A bus's :class:`BusState` is kept in Redis beside its live position (any
ingest process may run its next fixes), so it is small and msgpack-encoded.
A fix not newer than the state's (a late or redelivered frame) runs through
no detector: it is history, not news.

Offline is found two ways that give the same event: by the sweep, when the
bus has sent nothing for ``offline_s`` (live), and by the gap between two
consecutive fixes (a replay, or a silence no sweep saw because ingest was
down). Either way the event is dated ``offline_s`` after the last fix and
caused by it, so its key is the same and it is stored once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from fleet_processing.detection import DetectorPolicy, Observation, make_event
from fleet_processing.geofences import EMPTY_INDEX, FenceIndex, FenceState, fence_step
from fleet_processing.trip_events import TripEventsState, trip_step
from fleet_schemas.events import Event


class BusState(msgspec.Struct, array_like=True, gc=False):
    """What the detectors remember of one bus: its last fix and each detector's own state."""

    time_ms: int = 0
    """the newest fix run through (0: none yet); fixes not newer are late"""
    seq: int = 0
    lat: float = 0.0
    lon: float = 0.0
    speed_mps: float | None = None
    fences: FenceState = msgspec.field(default_factory=FenceState)
    trip: TripEventsState = msgspec.field(default_factory=TripEventsState)
    offline_ms: int = 0
    """when the bus went offline (the ``bus_offline`` event's time); 0 while online"""

    def last_fix(self, bus: str) -> Observation | None:
        """The newest fix run through, as an observation (None for a bus never seen)."""
        if self.time_ms == 0:
            return None
        return Observation(bus, self.time_ms, self.seq, self.lat, self.lon, self.speed_mps)


DEFAULT_POLICY = DetectorPolicy()
STATE_ENCODER = msgspec.msgpack.Encoder()
STATE_DECODER = msgspec.msgpack.Decoder(BusState)


def load_state(raw: bytes | None) -> BusState:
    """A bus's saved state; a new one if there is none or it no longer decodes."""
    if raw is None:
        return BusState()
    try:
        return STATE_DECODER.decode(raw)
    except msgspec.DecodeError:
        return BusState()  # written by another version of fleet: start over, as for a new bus


@dataclass(frozen=True, slots=True)
class DetectContext:
    """What the detectors of one operator's buses need besides their state: fences and thresholds."""

    operator: str
    fences: FenceIndex = EMPTY_INDEX
    policy: DetectorPolicy = DEFAULT_POLICY


def step(state: BusState, obs: Observation, ctx: DetectContext) -> tuple[BusState, list[Event]]:
    """Run every detector on one fix newer than ``state``'s.

    The previous fix becomes an observation only for a detector that reads it (fences, offline): most
    fixes of a fleet without fences need none.
    """
    events: list[Event] = []
    offline_ms = state.offline_ms
    previous: Observation | None = None
    if state.time_ms:
        if offline_ms == 0 and obs.time_ms - state.time_ms >= _offline_ms(ctx):
            previous = state.last_fix(obs.bus)
            assert previous is not None
            silent = _offline_event(previous, ctx)
            events.append(silent)
            offline_ms = silent.time_ms
        if offline_ms:
            events.append(
                make_event(
                    ctx.operator,
                    obs,
                    "bus_online",
                    details={"silent_s": (obs.time_ms - state.time_ms) / 1000, "offline_ms": offline_ms},
                )
            )
    fences = state.fences
    if ctx.fences.fences:
        if previous is None:
            previous = state.last_fix(obs.bus)
        fences, fence_events = fence_step(fences, previous, obs, ctx.fences, ctx.operator, ctx.policy)
        events += fence_events
    trip, trip_events = trip_step(state.trip, obs, ctx.operator, ctx.policy)
    if trip_events:
        events += trip_events
    return BusState(obs.time_ms, obs.seq, obs.lat, obs.lon, obs.speed_mps, fences, trip, 0), events


def is_late(state: BusState, obs: Observation) -> bool:
    """Whether a fix is not newer than what the bus's state has run through (as progress judges it)."""
    return obs.time_ms <= state.time_ms


def detect_bus(
    state: BusState, observations: Iterable[Observation], ctx: DetectContext
) -> tuple[BusState, list[Event], int]:
    """Fold ``step`` over one bus's fixes in time order; also returns how many were late (skipped)."""
    events: list[Event] = []
    late = 0
    for obs in observations:
        if is_late(state, obs):
            late += 1
            continue
        state, found = step(state, obs, ctx)
        events += found
    return state, events, late


def went_offline(bus: str, state: BusState, ctx: DetectContext) -> tuple[BusState, Event] | None:
    """The sweep's rule for a bus that sent nothing for ``offline_s``: its ``bus_offline``, once."""
    previous = state.last_fix(bus)
    if previous is None or state.offline_ms:
        return None
    event = _offline_event(previous, ctx)
    return msgspec.structs.replace(state, offline_ms=event.time_ms), event


def _offline_ms(ctx: DetectContext) -> int:
    return round(ctx.policy.offline_s * 1000)


def _offline_event(last: Observation, ctx: DetectContext) -> Event:
    return make_event(
        ctx.operator,
        last,
        "bus_offline",
        time_ms=last.time_ms + _offline_ms(ctx),
        details={"last_fix_ms": last.time_ms, "silent_s": ctx.policy.offline_s},
    )
