"""The trip detectors: corridor deviation, stop arrivals and departures, delay bands, trip lifecycle.

They read where progress put the bus at each fix (``Observation.trip``,
a ``fleet_processing.progress.TripAt``), so they follow the same trip
instance, stops and delay as the ETAs, and give the same events whatever
the batch split (a ``TripAt`` is). Only an *assigned* instance counts: a
candidate raises nothing, and leaving the assigned state leaves the trip.

The events of one fix come in this order:

1. the stops it served of the trip the bus was on (each: ``stop_arrived`` unless already sent, then
   ``stop_departed``; ``stop_skipped`` instead for the stops a jump of the progress went over), then
   ``trip_started`` if they were its first, ``trip_completed`` if its last stop was among them;
2. if the bus left that trip at this fix: ``deviation_ended`` (``reason`` ``completed``, ``released`` or
   ``reassigned``) for a deviation still open, then ``trip_unassigned`` unless it completed;
3. if it was assigned a new instance: ``trip_assigned``, then ``trip_started`` if already past its
   first stop;
4. on the assigned instance: ``stop_arrived`` at the next stop (the bus came within its radius),
   ``deviation_started`` or ``deviation_ended``, ``delay_changed``.

Choices:

* The last stop gets ``stop_arrived`` and no ``stop_departed``: progress ends the trip on arrival
  there, so a departure would only repeat the arrival's time. ``trip_completed`` stands for it.
* A stop whose arrival was sent gets its departure even when a jump passes it (it was served).
* Every trip starts in the ``on_time`` band: a bus assigned already 20 minutes late raises
  ``delay_changed`` (``on_time`` to ``late_15``) at its assignment fix; one on time raises nothing.
* A band is entered upwards as soon as the delay reaches its lower limit and left downwards only
  ``delay_hysteresis_s`` below it.
* A deviation starts at the first fix beyond ``leave_m`` (``started_ms``, ``distance_m``), lasts
  until a fix is back under ``return_m``, and is sent only once it lasted ``deviation_min_s``, by the
  fix that reached that duration; an excursion shorter than that raises nothing.

Most fixes change nothing: same instance, no stop, same band, inside the corridor. ``trip_step``
recognises them with a few comparisons and returns the state it was given, unchanged.
"""

from __future__ import annotations

import bisect
from typing import Any

import msgspec

from fleet_processing.detection import DetectorPolicy, Observation, make_event
from fleet_processing.plan import TripInstance
from fleet_processing.progress import TripAt
from fleet_schemas.events import DelayBand, Event, EventKind, stop_key, trip_key
from fleet_schemas.trips import StopVisit

BANDS: tuple[DelayBand, ...] = DelayBand.__args__  # type: ignore[attr-defined]
ON_TIME = BANDS.index("on_time")


class TripEventsState(msgspec.Struct, array_like=True, gc=False):
    """What the trip detectors remember of a bus (part of ``fleet_processing.detect.BusState``).

    The assigned trip instance by its label (empty ``trip_id``: none), and what was already sent.
    """

    trip_id: str = ""
    start_date: str = ""
    start_time: str = ""
    route_id: str = ""
    origin_ms: int = 0
    offset_s: int = 0
    """with ``trip_id``, tells the instance of a ``TripAt`` apart cheaply (no date formatting)"""
    last_seq: int = 0
    """stop_sequence of the trip's last stop: visiting it completes the trip"""
    started: bool = False
    arrived_ms: int = 0
    """arrival time of the next stop, once its ``stop_arrived`` was sent (0: not yet)"""
    band: int = ON_TIME
    """index in ``BANDS`` of the current delay band"""
    out_ms: int = 0
    """first fix beyond the corridor of the current excursion (0: in the corridor)"""
    out_m: float = 0.0
    """its distance from the line"""
    max_m: float = 0.0
    deviating: bool = False
    """``deviation_started`` was sent for the current excursion"""


def trip_step(
    state: TripEventsState, obs: Observation, operator: str, policy: DetectorPolicy
) -> tuple[TripEventsState, list[Event]]:
    """The trip events of ``obs``, in the order of the module docstring."""
    at = obs.trip
    if at is None:
        return state, []
    inst = at.instance if at.state == "assigned" else None
    same = (
        inst is not None
        and inst.origin_ms == state.origin_ms
        and inst.offset_s == state.offset_s
        and inst.plan.trip_id == state.trip_id
    )
    if same and not at.visits and at.arrived_ms == state.arrived_ms and not state.out_ms:
        leave_m = policy.deviation_limits(state.route_id)[0]
        if at.deviation_m <= leave_m and _band(policy, state.band, at.delay_s) == state.band:
            return state, []
    elif inst is None and not state.trip_id:
        return state, []
    return _Step(state, obs, operator, policy).run(at, inst, same)


def _band(policy: DetectorPolicy, band: int, delay_s: float) -> int:
    """The band of ``delay_s`` for a bus in ``band``: up at once, down only past the hysteresis."""
    limits = policy.delay_bands_s
    up = bisect.bisect_right(limits, delay_s)
    if up >= band:
        return up
    return min(band, bisect.bisect_right(limits, delay_s + policy.delay_hysteresis_s))


class _Step:
    """One fix that changes something: a copy of the state, mutated, and the events in order."""

    def __init__(
        self, state: TripEventsState, obs: Observation, operator: str, policy: DetectorPolicy
    ) -> None:
        self.s = msgspec.structs.replace(state)
        self.obs, self.operator, self.policy = obs, operator, policy
        self.events: list[Event] = []

    def run(self, at: TripAt, inst: TripInstance | None, same: bool) -> tuple[TripEventsState, list[Event]]:
        s = self.s
        visits = at.visits
        if s.trip_id and not same:
            label = (s.trip_id, s.start_date, s.start_time)
            mine = [v for v in visits if (v.trip_id, v.start_date, v.start_time) == label]
            visits = tuple(v for v in visits if (v.trip_id, v.start_date, v.start_time) != label)
            completed = self.serve(mine, jumped=at.jumped)
            self.leave("completed" if completed else "reassigned" if inst is not None else "released")
        if inst is None:
            return self.s, self.events
        if not same:
            self.assign(inst, at)
        if visits:
            self.serve(visits, jumped=at.jumped)
        if at.arrived_ms and at.arrived_ms != self.s.arrived_ms:
            self.arrive(inst, at)
        self.deviation(at)
        self.delay(at)
        return self.s, self.events

    # --- building events -------------------------------------------------------------------------------
    @property
    def trip(self) -> str:
        return trip_key(self.s.trip_id, self.s.start_date, self.s.start_time)

    def emit(self, kind: EventKind, subject: str, details: dict[str, Any]) -> None:
        """An event on the bus's trip (kept in the state: the instance may already be gone from progress)."""
        s = self.s
        event = make_event(self.operator, self.obs, kind, subject, details)
        self.events.append(
            msgspec.structs.replace(
                event,
                trip_id=s.trip_id,
                start_date=s.start_date,
                start_time=s.start_time,
                route_id=s.route_id,
            )
        )

    def stop_event(
        self, kind: EventKind, v: StopVisit, scheduled_ms: int, at_ms: int, interpolated: bool
    ) -> None:
        details = {
            "stop_id": v.stop_id,
            "stop_sequence": v.stop_sequence,
            "scheduled_ms": scheduled_ms,
            "at_ms": at_ms,
            "delay_s": (at_ms - scheduled_ms) / 1000,
            "interpolated": interpolated,
        }
        self.emit(kind, stop_key(self.trip, v.stop_sequence), details)

    # --- lifecycle -------------------------------------------------------------------------------------
    def assign(self, inst: TripInstance, at: TripAt) -> None:
        plan = inst.plan
        self.s = s = TripEventsState(
            trip_id=plan.trip_id,
            start_date=inst.start_date,
            start_time=inst.start_time,
            route_id=plan.route_id,
            origin_ms=inst.origin_ms,
            offset_s=inst.offset_s,
            last_seq=int(plan.stop_sequences[-1]),
            started=at.next_stop > 0,
        )
        self.emit("trip_assigned", self.trip, {"route_id": s.route_id})
        if s.started:
            self.emit("trip_started", self.trip, {"route_id": s.route_id})

    def leave(self, reason: str) -> None:
        """The bus is no longer on its trip: close an open deviation, say why it left, forget the trip."""
        s = self.s
        if s.deviating:
            self.deviation_ended(reason)
        if reason != "completed":
            self.emit("trip_unassigned", self.trip, {"route_id": s.route_id, "reason": reason})
        self.s = TripEventsState()

    # --- stops -----------------------------------------------------------------------------------------
    def serve(self, visits: list[StopVisit] | tuple[StopVisit, ...], *, jumped: bool) -> bool:
        """Events of the stops served (or jumped over) at this fix; True when the last one ends the trip."""
        s = self.s
        completed = False
        for v in visits:
            arrived = not v.interpolated and v.arrived_ms == s.arrived_ms
            if jumped and not arrived:
                self.stop_event("stop_skipped", v, v.scheduled_arrival_ms, v.arrived_ms, True)
            else:
                if not arrived:
                    self.stop_event("stop_arrived", v, v.scheduled_arrival_ms, v.arrived_ms, v.interpolated)
                if v.stop_sequence != s.last_seq:
                    self.stop_event(
                        "stop_departed", v, v.scheduled_departure_ms, v.departed_ms, v.interpolated
                    )
            s.arrived_ms = 0
            completed = completed or v.stop_sequence == s.last_seq
        if visits and not s.started:
            s.started = True
            self.emit("trip_started", self.trip, {"route_id": s.route_id})
        if completed:
            last = visits[-1]
            delay = (last.arrived_ms - last.scheduled_arrival_ms) / 1000
            self.emit("trip_completed", self.trip, {"route_id": s.route_id, "delay_s": delay})
        return completed

    def arrive(self, inst: TripInstance, at: TripAt) -> None:
        """The bus came within the radius of its next stop."""
        plan, k = inst.plan, at.next_stop
        sequence = int(plan.stop_sequences[k])
        scheduled = inst.origin_ms + (int(plan.arrival_s[k]) + inst.offset_s) * 1000
        details = {
            "stop_id": plan.stop_ids[k],
            "stop_sequence": sequence,
            "scheduled_ms": scheduled,
            "at_ms": at.arrived_ms,
            "delay_s": (at.arrived_ms - scheduled) / 1000,
            "interpolated": False,
        }
        self.emit("stop_arrived", stop_key(self.trip, sequence), details)
        self.s.arrived_ms = at.arrived_ms

    # --- corridor and delay ----------------------------------------------------------------------------
    def deviation(self, at: TripAt) -> None:
        s, policy, t, d = self.s, self.policy, self.obs.time_ms, at.deviation_m
        leave_m, return_m = policy.deviation_limits(s.route_id)
        if not s.out_ms:
            if d <= leave_m:
                return
            s.out_ms, s.out_m, s.max_m = t, d, d
        elif d < return_m:
            if s.deviating:
                self.deviation_ended("returned")
            s.out_ms, s.out_m, s.max_m, s.deviating = 0, 0.0, 0.0, False
            return
        else:
            s.max_m = max(s.max_m, d)
        if not s.deviating and t - s.out_ms >= policy.deviation_min_s * 1000:
            s.deviating = True
            details = {"distance_m": s.out_m, "threshold_m": leave_m, "started_ms": s.out_ms}
            self.emit("deviation_started", self.trip, details)

    def deviation_ended(self, reason: str) -> None:
        s = self.s
        details = {
            "max_distance_m": s.max_m,
            "duration_s": (self.obs.time_ms - s.out_ms) / 1000,
            "started_ms": s.out_ms,
            "reason": reason,
        }
        self.emit("deviation_ended", self.trip, details)

    def delay(self, at: TripAt) -> None:
        s = self.s
        band = _band(self.policy, s.band, at.delay_s)
        if band != s.band:
            details = {"band": BANDS[band], "previous_band": BANDS[s.band], "delay_s": at.delay_s}
            self.emit("delay_changed", self.trip, details)
            s.band = band
