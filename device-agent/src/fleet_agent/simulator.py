"""A simulated bus: drives a route and reports what its GNSS receiver would.

The core is pure. ``start`` and ``step`` turn a state, a time step and a
seeded ``random.Random`` into the next state and, when the receiver has one,
a fix; time lives in the state, never read from a clock, so the same route,
config, seed and start time replay the same fixes on any machine.
``SimulatedSource`` paces that core on the event loop as a ``FixSource``.

What the bus does: it accelerates and brakes within per-bus limits, cruises at
a per-bus speed, slows to town speed within ``town_radius_m`` of a stop, brakes
smoothly to serve every stop, dwells there, meets random traffic slow-downs,
and at the end of the route parks (ignition off) or, with ``loop``, lays over
and drives on: around again on a closed route, back the other way otherwise.
Given a ``Timetable`` (one instance of a GTFS trip, see ``fleet_agent.schedule``)
the bus follows it instead: it paces each segment to reach the next stop when
due, leaves no stop before its scheduled departure plus ``delay_s``, can start
wherever the schedule has it at the start time (a 5-hour trip joined in its
middle), and ``truth`` tells where it really is and when it served each stop.
The receiver adds a time-correlated Gaussian error sized by its hdop, holds its
position while the bus stands still (as receivers in static mode do), and
sometimes loses the sky for a few seconds. Scripted faults add tunnels, a
detour off the corridor, a long stop and a device reboot.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

import msgspec

from fleet_agent.errors import AgentError
from fleet_agent.fix import Fix
from fleet_agent.route import Point, Route, bearing_deg, destination, haversine_m
from fleet_schemas.geo import EARTH_RADIUS_M

logger = logging.getLogger("fleet_agent.simulator")

KMH = 1 / 3.6
"""One km/h in m/s: configs read better in km/h, the state stays SI."""

CLOSED_ROUTE_M = 100.0
"""A route whose ends are closer than this is a loop: ``loop`` drives it around again."""

TERMINUS_M = 30.0
"""Stops this close to either end are the termini, served by the start and the end of each leg."""

ERROR_TIME_CONSTANT_S = 20.0
"""Receiver error is a first-order Gauss-Markov process: it wanders over tens of seconds, not per fix."""

HDOP_SATELLITES = 10.0
"""hdop is taken as this over the satellite count: 0.8 with 12 satellites, 1.7 with 6, as under open sky."""

CIRCLE_68 = 1.515
"""A circular 2-D Gaussian of per-axis sigma puts 68 % of fixes within this many sigmas: accuracy_m."""

SPEED_NOISE_MPS = 0.1
HEADING_NOISE_DEG = 1.0
DETOUR_RAMP = 0.25
"""Share of a detour's length spent leaving the corridor, and again rejoining it."""


class Tunnel(msgspec.Struct, frozen=True, kw_only=True, tag="tunnel", tag_field="kind"):
    """No fix between ``at_m`` and ``at_m + length_m`` along the route, on every pass."""

    at_m: float
    length_m: float


class Detour(msgspec.Struct, frozen=True, kw_only=True, tag="detour", tag_field="kind"):
    """Once: from ``at_m``, over ``length_m`` of route, the bus drifts ``offset_m`` right, then rejoins."""

    at_m: float
    length_m: float = 3000.0
    offset_m: float = 400.0


class LongStop(msgspec.Struct, frozen=True, kw_only=True, tag="long_stop", tag_field="kind"):
    """Once: the bus halts ``duration_s`` at ``at_m`` (breakdown, check point, meal break)."""

    at_m: float
    duration_s: float = 1200.0


class Reboot(msgspec.Struct, frozen=True, kw_only=True, tag="reboot", tag_field="kind"):
    """Once: passing ``at_m``, the device goes dark for ``gap_s`` while the bus drives on."""

    at_m: float
    gap_s: float = 90.0


PACE_MARGIN = 1.05
"""A timetabled bus aims this much faster than the schedule's average, for the time braking and towns take."""

Fault = Tunnel | Detour | LongStop | Reboot
Span = tuple[float, float]
"""A (low, high) range a value is drawn from, uniformly."""


class SimConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How buses drive and receivers err. Spans are drawn per bus, per stop or per episode."""

    max_speed_mps: float = 100 * KMH
    """The bus's governor: no per-bus cruise speed may exceed it."""
    cruise_mps: Span = (70 * KMH, 90 * KMH)
    town_speed_mps: float = 50 * KMH
    town_radius_m: float = 800.0
    accel_mps2: Span = (1.0, 1.5)
    brake_mps2: float = 1.2
    """Planned deceleration towards stops and towns; a bus never brakes harder than ``max_brake_mps2``."""
    max_brake_mps2: float = 2.0
    dwell_s: Span = (20.0, 90.0)
    layover_s: Span = (300.0, 900.0)
    traffic_per_hour: float = 2.0
    traffic_s: Span = (60.0, 300.0)
    traffic_speed_mps: Span = (5 * KMH, 30 * KMH)
    outages_per_hour: float = 1.0
    outage_s: Span = (3.0, 20.0)
    uere_m: float = 3.0
    """User equivalent range error: ``accuracy_m`` is this times hdop."""
    loop: bool = False
    park_s: float = 60.0
    """After the last stop, how long a parked bus keeps reporting before ``trace`` ends."""
    faults: tuple[Fault, ...] = ()
    delay_s: float = 0.0
    """With a timetable: the bus runs this late (negative: early) against it from the start."""
    send_trip_id: bool = False
    """With a timetable: fixes carry its trip_id, as a driver's console would; else the server infers it."""

    def __post_init__(self) -> None:
        spans = {
            "cruise_mps": self.cruise_mps,
            "accel_mps2": self.accel_mps2,
            "dwell_s": self.dwell_s,
            "layover_s": self.layover_s,
            "traffic_s": self.traffic_s,
            "traffic_speed_mps": self.traffic_speed_mps,
            "outage_s": self.outage_s,
        }
        for name, (low, high) in spans.items():
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range 0 <= low <= high, got ({low}, {high})")
        if self.cruise_mps[1] > self.max_speed_mps:
            raise ValueError(f"cruise_mps {self.cruise_mps[1]} exceeds max_speed_mps {self.max_speed_mps}")
        if self.accel_mps2[0] <= 0 or self.traffic_speed_mps[0] <= 0 or self.town_speed_mps <= 0:
            raise ValueError("accel_mps2, traffic_speed_mps and town_speed_mps must be positive")
        if not 0 < self.brake_mps2 <= self.max_brake_mps2:
            raise ValueError(f"brake_mps2 must be in (0, max_brake_mps2], got {self.brake_mps2}")
        for fault in self.faults:
            if fault.at_m < 0 or (isinstance(fault, Tunnel | Detour) and fault.length_m <= 0):
                raise ValueError(f"{fault!r}: at_m must be >= 0 and length_m > 0")


class Timetable(msgspec.Struct, frozen=True, kw_only=True):
    """One instance of a GTFS trip: where its stops are along the route and when the bus is due there."""

    trip_id: str
    start_date: str
    """service day, YYYYMMDD"""
    stop_ids: tuple[str, ...]
    stop_sequences: tuple[int, ...]
    distances_m: tuple[float, ...]
    arrivals_ms: tuple[int, ...]
    departures_ms: tuple[int, ...]

    def __post_init__(self) -> None:
        count = len(self.stop_ids)
        if count < 2 or any(
            len(column) != count
            for column in (self.stop_sequences, self.distances_m, self.arrivals_ms, self.departures_ms)
        ):
            raise ValueError(f"timetable of {self.trip_id}: at least two stops, every column as long")
        times = [t for pair in zip(self.arrivals_ms, self.departures_ms, strict=True) for t in pair]
        if times != sorted(times) or list(self.distances_m) != sorted(self.distances_m):
            raise ValueError(f"timetable of {self.trip_id}: times and distances must never decrease")

    def scheduled_at(self, distance_m: float, time_ms: int) -> int:
        """When the schedule has the bus at ``distance_m``; at a stop, ``time_ms`` clamped to its dwell."""
        d, arrivals, departures = self.distances_m, self.arrivals_ms, self.departures_ms
        i = bisect.bisect_right(d, distance_m) - 1
        if i < 0:
            return departures[0]
        if d[i] == distance_m or i == len(d) - 1:
            return min(max(time_ms, arrivals[i]), departures[i])
        share = (distance_m - d[i]) / (d[i + 1] - d[i])
        return round(departures[i] + share * (arrivals[i + 1] - departures[i]))


class Trip(msgspec.Struct, frozen=True, kw_only=True):
    """A route and a config, with the lookups every step needs computed once."""

    route: Route
    config: SimConfig
    closed: bool
    stops: tuple[tuple[float, ...], tuple[float, ...]]
    """Stops served between the termini, as distances along a forward and a backward leg."""
    towns: tuple[tuple[float, ...], tuple[float, ...]]
    """Every stop, termini included, the same way: the centres of the town zones."""
    detour_sides: tuple[float, ...]
    """Per fault, the bearing a detour drifts towards (right of its chord); unused for other faults."""
    timetable: Timetable | None = None
    calls: tuple[int, ...] = ()
    """With a timetable: the call each of ``stops[0]`` is (its first stop is where the bus starts)."""


Phase = Literal["driving", "dwelling", "layover", "parked"]


class BusState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that evolves: the bus, its receiver and which scripted faults have played."""

    time_ms: int
    leg: int = 0
    """0 for the first run along the route; each ``loop`` layover starts the next one."""
    progress_m: float = 0.0
    """Distance driven along the current leg."""
    speed_mps: float = 0.0
    heading_deg: float
    phase: Phase = "driving"
    until_ms: int = 0
    """End of a dwell or layover; start of parking."""
    next_stop: int = 0
    cruise_mps: float
    accel_mps2: float
    traffic_mps: float = math.inf
    traffic_until_ms: int = 0
    sky_lost_until_ms: int = 0
    device_off_until_ms: int = 0
    reboots: int = 0
    played: frozenset[int] = frozenset()
    """Indexes of the one-shot faults (detour, long stop, reboot) already played."""
    at_call: int = -1
    """With a timetable: the call the bus stands at (dwelling, or parked at the last), else -1."""
    arrived_ms: int = 0
    """When the bus reached the call it stands at."""
    satellites: int
    error_m: tuple[float, float, float]
    """Receiver error east, north and up."""


class DeviceRebooted(AgentError):
    """A scripted ``Reboot`` began: the agent on the bus would die here and start again ``gap_s`` later."""

    code = "simulated_reboot"

    def __init__(self, time_ms: int, gap_s: float) -> None:
        super().__init__(f"simulated device reboot at {time_ms} ms, dark for {gap_s:g} s")
        self.time_ms = time_ms
        self.gap_s = gap_s


def plan_trip(route: Route, config: SimConfig | None = None, timetable: Timetable | None = None) -> Trip:
    """Prepare a route for simulation; with a timetable the bus serves its stops, at its times."""
    config = config or SimConfig()
    length = route.length_m
    centres = [stop.distance_m for stop in route.stops]
    served = [d for d in centres if TERMINUS_M < d < length - TERMINUS_M]
    calls: list[int] = []
    if timetable is not None:
        if config.loop:
            raise ValueError("a timetabled bus ends its trip at the last stop: loop must be off")
        if timetable.distances_m[-1] > length + 1.0:
            raise ValueError(f"timetable of {timetable.trip_id} runs past the end of route {route.name!r}")
        calls = [i for i, d in enumerate(timetable.distances_m) if i and d < length - TERMINUS_M]
        served = [timetable.distances_m[i] for i in calls]
    sides = []
    for fault in config.faults:
        side = 0.0
        if isinstance(fault, Detour):
            chord = bearing_deg(route.point_at(fault.at_m), route.point_at(fault.at_m + fault.length_m))
            side = (chord + 90.0) % 360.0
        sides.append(side)
    return Trip(
        route=route,
        config=config,
        closed=haversine_m(route.points[0], route.points[-1]) < CLOSED_ROUTE_M,
        stops=(tuple(served), tuple(sorted(length - d for d in served))),
        towns=(tuple(centres), tuple(sorted(length - d for d in centres))),
        detour_sides=tuple(sides),
        timetable=timetable,
        calls=tuple(calls),
    )


def _forward(trip: Trip, leg: int) -> bool:
    return trip.closed or leg % 2 == 0


def _flip(trip: Trip, leg: int, distance_m: float) -> float:
    """Route distance to leg distance and back: the same mirror both ways."""
    return distance_m if _forward(trip, leg) else trip.route.length_m - distance_m


def _sigma_m(config: SimConfig, satellites: int) -> float:
    """Per-axis horizontal error sigma for this sky."""
    return config.uere_m * HDOP_SATELLITES / satellites / CIRCLE_68


def start(trip: Trip, start_ms: int, rng: random.Random) -> BusState:
    """A bus at the start of the route, engine running, about to leave; with a timetable, where it has it."""
    config = trip.config
    satellites = rng.randint(8, 12)
    sigma = _sigma_m(config, satellites)
    state = BusState(
        time_ms=start_ms,
        heading_deg=trip.route.bearing_at(0.0),
        cruise_mps=rng.uniform(*config.cruise_mps),
        accel_mps2=rng.uniform(*config.accel_mps2),
        satellites=satellites,
        error_m=(rng.gauss(0, sigma), rng.gauss(0, sigma), rng.gauss(0, 1.5 * sigma)),
    )
    return state if trip.timetable is None else _on_schedule(trip, trip.timetable, state)


def with_faults_ahead(
    route: Route, config: SimConfig, timetable: Timetable | None, start_ms: int, faults: tuple[Fault, ...]
) -> SimConfig:
    """``config`` plus ``faults`` whose ``at_m`` counts from where the bus starts, not the route's start.

    A timetabled bus joins its trip where the schedule has it at ``start_ms``
    (the start does not depend on the seed), so faults written as "so far
    ahead" play on any trip joined at any time.
    """
    if not faults:
        return config
    origin = start(plan_trip(route, config, timetable), start_ms, random.Random(0)).progress_m  # noqa: S311
    shifted = tuple(msgspec.structs.replace(f, at_m=f.at_m + origin) for f in faults)
    return msgspec.structs.replace(config, faults=config.faults + shifted)


def _delay_ms(trip: Trip) -> int:
    return round(trip.config.delay_s * 1000)


def _on_schedule(trip: Trip, timetable: Timetable, state: BusState) -> BusState:
    """The bus where the timetable, run ``delay_s`` late, has it at the state's time."""
    now, delay = state.time_ms, _delay_ms(trip)
    clock = now - delay  # the schedule's time for where the bus is now
    d, arrivals, departures = timetable.distances_m, timetable.arrivals_ms, timetable.departures_ms
    last = len(d) - 1
    if clock >= arrivals[last]:
        return msgspec.structs.replace(
            state,
            progress_m=trip.route.length_m if last not in trip.calls else d[last],
            phase="parked",
            until_ms=now,
            next_stop=len(trip.calls),
            at_call=-1,
        )
    i = next(i for i in range(last + 1) if clock < departures[i])
    if i == 0 or clock >= arrivals[i]:
        return msgspec.structs.replace(
            state,
            progress_m=d[i],
            heading_deg=trip.route.bearing_at(d[i]),
            phase="dwelling",
            until_ms=departures[i] + delay,
            next_stop=bisect.bisect_right(trip.calls, i),
            at_call=i,
            arrived_ms=now,
        )
    share = (clock - departures[i - 1]) / (arrivals[i] - departures[i - 1])
    here = d[i - 1] + share * (d[i] - d[i - 1])
    moving = msgspec.structs.replace(
        state,
        progress_m=here,
        heading_deg=trip.route.bearing_at(here),
        next_stop=bisect.bisect_left(trip.calls, i),
    )
    return msgspec.structs.replace(
        moving, speed_mps=min(_cruise(trip, moving, now), trip.config.town_speed_mps)
    )


def _cruise(trip: Trip, state: BusState, time_ms: int) -> float:
    """Speed held between towns: the bus's own, or with a timetable what reaches the next stop on time."""
    timetable = trip.timetable
    if timetable is None:
        return state.cruise_mps
    config = trip.config
    target = trip.calls[state.next_stop] if state.next_stop < len(trip.calls) else len(timetable.stop_ids) - 1
    left_s = (timetable.arrivals_ms[target] + _delay_ms(trip) - time_ms) / 1000
    if left_s <= 0:
        return config.max_speed_mps
    needed = (timetable.distances_m[target] - state.progress_m) / left_s * PACE_MARGIN
    return min(config.max_speed_mps, max(config.town_speed_mps, needed))


def _detour(trip: Trip, state: BusState, distance_m: float) -> tuple[float, float, float]:
    """Drift of the bus off the route here: (metres, bearing, path length per metre of route)."""
    for index, fault in enumerate(trip.config.faults):
        if isinstance(fault, Detour) and index not in state.played:
            along = (distance_m - fault.at_m) / fault.length_m
            if 0.0 <= along <= 1.0:
                share = min(1.0, along / DETOUR_RAMP, (1.0 - along) / DETOUR_RAMP)
                slope = fault.offset_m / (DETOUR_RAMP * fault.length_m) if share < 1.0 else 0.0
                return fault.offset_m * share, trip.detour_sides[index], math.hypot(1.0, slope)
    return 0.0, 0.0, 1.0


def true_position(trip: Trip, state: BusState) -> Point:
    """Where the bus really is, detours included, before any receiver error."""
    distance = _flip(trip, state.leg, state.progress_m)
    on_route = trip.route.point_at(distance)
    drift, side, _ = _detour(trip, state, distance)
    return destination(on_route, side, drift) if drift else on_route


def _approach(speed: float, gap_m: float, target: float, brake: float, dt: float) -> float:
    """Fastest speed after ``dt`` that still lets the bus reach ``target`` in ``gap_m`` braking at ``brake``.

    Solves v'^2 = target^2 + 2 b (gap - (v + v') dt / 2), the distance covered
    during the step included, so the bus rides the braking curve exactly and
    comes to rest on the mark.
    """
    c = target * target + 2 * brake * gap_m - brake * speed * dt
    return max(target, (-brake * dt + math.sqrt(brake * brake * dt * dt + 4 * max(c, 0.0))) / 2)


def _next_halt(trip: Trip, state: BusState) -> tuple[float, int | None]:
    """Leg distance of the next place the bus must stand, and the long-stop fault it is, if one."""
    leg_stops = trip.stops[0 if _forward(trip, state.leg) else 1]
    best: tuple[float, int | None] = (trip.route.length_m, None)
    if state.next_stop < len(leg_stops):
        best = (leg_stops[state.next_stop], None)
    for index, fault in enumerate(trip.config.faults):
        if isinstance(fault, LongStop) and index not in state.played:
            at = _flip(trip, state.leg, fault.at_m)
            if state.progress_m <= at < best[0]:
                best = (at, index)
    return best


def _drive(trip: Trip, state: BusState, dt: float, time_ms: int, rng: random.Random) -> BusState:
    """One step of motion: pick a speed within every limit, move, and stand at a halt when reached."""
    config = trip.config
    here = state.progress_m
    speed = state.speed_mps
    towns = trip.towns[0 if _forward(trip, state.leg) else 1]
    radius = config.town_radius_m

    soft = _cruise(trip, state, time_ms)
    after = bisect.bisect_left(towns, here)
    if any(abs(towns[i] - here) <= radius for i in (after - 1, after) if 0 <= i < len(towns)):
        soft = min(soft, config.town_speed_mps)
    if time_ms <= state.traffic_until_ms:
        soft = min(soft, state.traffic_mps)

    halt, long_stop = _next_halt(trip, state)
    hard = _approach(speed, halt - here, 0.0, config.brake_mps2, dt)
    zone = bisect.bisect_right(towns, here + radius)
    if zone < len(towns):
        gap = towns[zone] - radius - here
        hard = min(hard, _approach(speed, gap, config.town_speed_mps, config.brake_mps2, dt))

    wanted = (
        min(soft, speed + state.accel_mps2 * dt)
        if speed < soft
        else max(soft, speed - config.brake_mps2 * dt)
    )
    new_speed = max(min(wanted, hard), speed - config.max_brake_mps2 * dt, 0.0)
    _, _, stretch = _detour(trip, state, _flip(trip, state.leg, here))
    moved = (speed + new_speed) / 2 * dt / stretch
    if moved < halt - here - 1e-6:
        return msgspec.structs.replace(state, progress_m=here + moved, speed_mps=new_speed)

    arrived = msgspec.structs.replace(state, progress_m=halt, speed_mps=0.0)
    if long_stop is not None:
        fault = trip.config.faults[long_stop]
        assert isinstance(fault, LongStop)
        return msgspec.structs.replace(
            arrived,
            phase="dwelling",
            until_ms=time_ms + round(fault.duration_s * 1000),
            played=state.played | {long_stop},
        )
    if halt < trip.route.length_m:
        until = time_ms + round(rng.uniform(*config.dwell_s) * 1000)
        call = -1
        if trip.timetable is not None:
            call = trip.calls[state.next_stop]
            until = max(until, trip.timetable.departures_ms[call] + _delay_ms(trip))
        return msgspec.structs.replace(
            arrived,
            phase="dwelling",
            until_ms=until,
            next_stop=state.next_stop + 1,
            at_call=call,
            arrived_ms=time_ms,
        )
    if config.loop:
        layover = rng.uniform(*config.layover_s)
        return msgspec.structs.replace(arrived, phase="layover", until_ms=time_ms + round(layover * 1000))
    last = -1 if trip.timetable is None else len(trip.timetable.stop_ids) - 1
    return msgspec.structs.replace(
        arrived,
        phase="parked",
        until_ms=time_ms,
        at_call=-1 if last in trip.calls else last,
        arrived_ms=time_ms,
    )


def _crossed(trip: Trip, before: BusState, after: BusState, distance_m: float) -> bool:
    """Whether this step drove past ``distance_m`` of the route (within one leg)."""
    mark = _flip(trip, after.leg, distance_m)
    return before.leg == after.leg and before.progress_m < mark <= after.progress_m


def _play_faults(trip: Trip, before: BusState, after: BusState, time_ms: int) -> BusState:
    """Start a reboot, or close a detour, that this step drove past."""
    for index, fault in enumerate(trip.config.faults):
        if index in after.played:
            continue
        if isinstance(fault, Reboot) and _crossed(trip, before, after, fault.at_m):
            after = msgspec.structs.replace(
                after,
                device_off_until_ms=time_ms + round(fault.gap_s * 1000),
                reboots=after.reboots + 1,
                played=after.played | {index},
            )
        elif isinstance(fault, Detour):
            end = fault.at_m + fault.length_m if _forward(trip, after.leg) else fault.at_m
            if _crossed(trip, before, after, end):
                after = msgspec.structs.replace(after, played=after.played | {index})
    return after


def _episodes(trip: Trip, state: BusState, dt: float, time_ms: int, rng: random.Random) -> BusState:
    """Random traffic slow-downs and losses of sky, as Poisson arrivals."""
    config = trip.config
    driving = state.phase == "driving" and time_ms > state.traffic_until_ms
    if driving and rng.random() < config.traffic_per_hour * dt / 3600:
        state = msgspec.structs.replace(
            state,
            traffic_until_ms=time_ms + round(rng.uniform(*config.traffic_s) * 1000),
            traffic_mps=rng.uniform(*config.traffic_speed_mps),
        )
    if time_ms > state.sky_lost_until_ms and rng.random() < config.outages_per_hour * dt / 3600:
        state = msgspec.structs.replace(
            state, sky_lost_until_ms=time_ms + round(rng.uniform(*config.outage_s) * 1000)
        )
    return state


def _receiver(trip: Trip, state: BusState, dt: float, rng: random.Random) -> BusState:
    """Satellites come and go; the error wanders while moving and holds while the bus stands."""
    satellites = state.satellites
    if rng.random() < 0.05 * dt:
        satellites = min(14, max(6, satellites + rng.choice((-1, 1))))
    if state.speed_mps == 0.0:
        return msgspec.structs.replace(state, satellites=satellites)
    sigma = _sigma_m(trip.config, satellites)
    keep = math.exp(-dt / ERROR_TIME_CONSTANT_S)
    fresh = math.sqrt(1 - keep * keep)
    east, north, up = state.error_m
    error = (
        keep * east + fresh * rng.gauss(0, sigma),
        keep * north + fresh * rng.gauss(0, sigma),
        keep * up + fresh * rng.gauss(0, 1.5 * sigma),
    )
    return msgspec.structs.replace(state, satellites=satellites, error_m=error)


def _in_tunnel(trip: Trip, distance_m: float) -> bool:
    return any(
        isinstance(f, Tunnel) and f.at_m <= distance_m <= f.at_m + f.length_m for f in trip.config.faults
    )


def _fix(trip: Trip, state: BusState, position: Point, rng: random.Random) -> Fix:
    east, north, up = state.error_m
    lat = position.lat + math.degrees(north / EARTH_RADIUS_M)
    lon = position.lon + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(position.lat))))
    hdop = HDOP_SATELLITES / state.satellites
    moving = state.speed_mps > 0.0
    speed = max(0.0, state.speed_mps + rng.gauss(0, SPEED_NOISE_MPS)) if moving else 0.0
    heading = (state.heading_deg + rng.gauss(0, HEADING_NOISE_DEG)) % 360.0 if moving else state.heading_deg
    return Fix(
        time_ms=state.time_ms,
        lat=round(lat, 7),
        lon=round(lon, 7),
        mode=3,
        speed_mps=round(speed, 2),
        heading_deg=round(heading, 1),
        altitude_m=None if position.alt_m is None else round(position.alt_m + up, 1),
        hdop=round(hdop, 2),
        satellites=state.satellites,
        accuracy_m=round(trip.config.uere_m * hdop, 1),
        ignition=state.phase != "parked",
        trip_id=_declared_trip(trip, state),
        source="sim",
    )


def _declared_trip(trip: Trip, state: BusState) -> str | None:
    """The trip_id a driver's console would send: while on a timetabled trip, when told to send it."""
    if trip.timetable is None or not trip.config.send_trip_id or state.phase == "parked":
        return None
    return trip.timetable.trip_id


def step(trip: Trip, state: BusState, dt_s: float, rng: random.Random) -> tuple[BusState, Fix | None]:
    """Advance the bus ``dt_s`` seconds; the fix is None while the receiver or the device is dark."""
    time_ms = state.time_ms + round(dt_s * 1000)
    before = state
    if state.phase == "driving":
        state = _drive(trip, state, dt_s, time_ms, rng)
    elif state.phase == "dwelling" and time_ms >= state.until_ms:
        state = msgspec.structs.replace(state, phase="driving", at_call=-1)
    elif state.phase == "layover" and time_ms >= state.until_ms:
        state = msgspec.structs.replace(
            state, phase="driving", leg=state.leg + 1, progress_m=0.0, next_stop=0
        )
    state = _play_faults(trip, before, state, time_ms)
    state = _episodes(trip, state, dt_s, time_ms, rng)
    old, new = true_position(trip, before), true_position(trip, state)
    heading = state.heading_deg
    if state.leg == before.leg and haversine_m(old, new) > 0.5:
        heading = bearing_deg(old, new)
    state = _receiver(trip, msgspec.structs.replace(state, time_ms=time_ms, heading_deg=heading), dt_s, rng)
    dark = (
        time_ms < state.device_off_until_ms
        or time_ms < state.sky_lost_until_ms
        or _in_tunnel(trip, _flip(trip, state.leg, state.progress_m))
    )
    return state, None if dark else _fix(trip, state, new, rng)


def finished(trip: Trip, state: BusState) -> bool:
    """Whether the bus has stood parked for ``park_s``: where a trip without ``loop`` ends."""
    return state.phase == "parked" and state.time_ms - state.until_ms >= trip.config.park_s * 1000


def steps(
    trip: Trip, start_ms: int, seed: int, *, dt_s: float = 1.0
) -> Iterator[tuple[BusState, BusState, Fix | None]]:
    """Every step of one bus from ``start_ms`` as (before, after, fix), until ``finished``."""
    rng = random.Random(seed)  # noqa: S311 - a simulation wants a seeded generator, not secrecy
    state = start(trip, start_ms, rng)
    while not finished(trip, state):
        before = state
        state, fix = step(trip, state, dt_s, rng)
        yield before, state, fix


def trace(
    trip: Trip, start_ms: int, seed: int, *, dt_s: float = 1.0
) -> Iterator[tuple[BusState, Fix | None]]:
    """Every state of one bus after each step from ``start_ms``, until ``finished`` (never, with ``loop``)."""
    for _, state, fix in steps(trip, start_ms, seed, dt_s=dt_s):
        yield state, fix


class TruthPosition(msgspec.Struct, frozen=True, kw_only=True, tag="position", tag_field="kind"):
    """Where the bus really was after one step, what the receiver made of it aside."""

    time_ms: int
    dist_m: float
    """along the route (a GTFS shape: metres from its first point, as shape_dist_traveled)"""
    lat: float
    lon: float
    speed_mps: float
    phase: Phase
    fix: bool
    """whether the receiver gave a fix at this step"""
    trip_id: str | None = None
    start_date: str | None = None
    scheduled_ms: int | None = None
    """when the timetable has the bus at ``dist_m`` (at a stop: the time, clamped to its dwell)"""
    delay_s: float | None = None
    """time_ms - scheduled_ms: late when positive"""
    bus: str | None = None


class TruthStop(msgspec.Struct, frozen=True, kw_only=True, tag="stop", tag_field="kind"):
    """The bus served one stop of its timetable: written when it leaves (at the last stop, on arrival)."""

    trip_id: str
    start_date: str
    stop_id: str
    stop_sequence: int
    dist_m: float
    scheduled_arrival_ms: int
    scheduled_departure_ms: int
    arrived_ms: int
    departed_ms: int
    bus: str | None = None


TruthRecord = TruthPosition | TruthStop
_TRUTH = msgspec.json.Encoder()
TRUTH_DECODER = msgspec.json.Decoder(TruthRecord)
"""Reads one line of a truth file back."""


def truth(trip: Trip, before: BusState, after: BusState, fix: Fix | None) -> list[TruthRecord]:
    """What really happened in one step: the position, and the stop the bus just left or ended at."""
    position = true_position(trip, after)
    dist = _flip(trip, after.leg, after.progress_m)
    timetable = trip.timetable
    record = TruthPosition(
        time_ms=after.time_ms,
        dist_m=round(dist, 2),
        lat=round(position.lat, 7),
        lon=round(position.lon, 7),
        speed_mps=round(after.speed_mps, 3),
        phase=after.phase,
        fix=fix is not None,
    )
    if timetable is None:
        return [record]
    scheduled = timetable.scheduled_at(dist, after.time_ms)
    records: list[TruthRecord] = [
        msgspec.structs.replace(
            record,
            trip_id=timetable.trip_id,
            start_date=timetable.start_date,
            scheduled_ms=scheduled,
            delay_s=(after.time_ms - scheduled) / 1000,
        )
    ]
    left = before.at_call >= 0 and before.phase == "dwelling" and after.phase == "driving"
    ended = after.at_call >= 0 and after.phase == "parked" and before.phase != "parked"
    call = before.at_call if left else after.at_call
    if left or ended:
        records.append(
            TruthStop(
                trip_id=timetable.trip_id,
                start_date=timetable.start_date,
                stop_id=timetable.stop_ids[call],
                stop_sequence=timetable.stop_sequences[call],
                dist_m=round(timetable.distances_m[call], 2),
                scheduled_arrival_ms=timetable.arrivals_ms[call],
                scheduled_departure_ms=timetable.departures_ms[call],
                arrived_ms=before.arrived_ms if left else after.arrived_ms,
                departed_ms=after.time_ms,
            )
        )
    return records


class SimulatedSource:
    """A ``FixSource`` driving one simulated bus at 1 Hz of simulated time.

    ``speedup`` 1 paces fixes in real time, 10 ten times faster, 0 as fast as
    the consumer takes them. A scripted ``Reboot`` makes ``fixes()`` raise
    ``DeviceRebooted``; calling ``fixes()`` again resumes after the gap, as a
    restarted agent would. With ``truth_file`` every step's ``truth`` is
    appended to it as JSON lines, tagged with ``bus``.
    """

    def __init__(
        self,
        route: Route,
        *,
        seed: int,
        start_ms: int,
        config: SimConfig | None = None,
        speedup: float = 1.0,
        timetable: Timetable | None = None,
        truth_file: Path | None = None,
        bus: str | None = None,
    ) -> None:
        if speedup < 0:
            raise ValueError(f"speedup must be >= 0, got {speedup}")
        self.trip = plan_trip(route, config, timetable)
        self.speedup = speedup
        self.state: BusState | None = None
        """The bus after the last step taken, for callers that watch it."""
        self._time_ms = start_ms
        self._reboots = 0
        self._steps = steps(self.trip, start_ms, seed)
        self._truth_file = truth_file
        self._bus = bus
        logger.info("simulating %s from %d ms, seed %d, speedup %g", route.name, start_ms, seed, speedup)

    async def fixes(self) -> AsyncIterator[Fix]:
        with contextlib.ExitStack() as files:
            log = files.enter_context(self._truth_file.open("ab")) if self._truth_file else None
            async for fix in self._paced(log):
                yield fix

    async def _paced(self, log: BinaryIO | None) -> AsyncIterator[Fix]:
        loop = asyncio.get_running_loop()
        wall_start, sim_start = loop.time(), self._time_ms
        for before, state, fix in self._steps:
            if self.speedup:
                due = wall_start + (state.time_ms - sim_start) / 1000 / self.speedup
                await asyncio.sleep(max(0.0, due - loop.time()))
            else:
                await asyncio.sleep(0)
            self.state, self._time_ms = state, state.time_ms
            if log is not None:
                records = [
                    msgspec.structs.replace(r, bus=self._bus) for r in truth(self.trip, before, state, fix)
                ]
                log.write(b"".join(_TRUTH.encode(r) + b"\n" for r in records))
                log.flush()
            if state.reboots > self._reboots:
                self._reboots = state.reboots
                gap_s = (state.device_off_until_ms - state.time_ms) / 1000
                logger.info("simulated reboot at %d ms: device dark for %g s", state.time_ms, gap_s)
                raise DeviceRebooted(state.time_ms, gap_s)
            if fix is not None:
                yield fix
