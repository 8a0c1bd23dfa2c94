"""Where each bus is on its trip, batch after batch: assignment, progress, delay, stops served.

Ingest is stateless, so everything a bus's next batch needs is in its
``BusProgress`` (msgpack-encodable, kept in Redis between batches): the next
batch may run in another process and gives the same result.

``advance_batch`` walks the fixes of a batch in rounds (the first fix of
every bus, then the second, …) so each round is one vectorized pass over
every assigned bus: windowed projection (``fleet_processing.locate``), the
monotone filter, the smoothed speed, the delay (``fleet_processing.schedule``)
and the test for stops, all with numpy. Only the rare events go through
Python one bus at a time: a stop reached or passed, a bus lost or released,
and the buses not yet assigned (``fleet_processing.assign``).

Progress never goes backwards: a fix projecting behind the previous progress
leaves it where it was; a fix further than ``off_route_m`` plus its accuracy
from its window of the line moves nothing, and only ``relocate_fixes`` such
fixes agreeing with each other (each within reach of the one before, on the
line ahead) make the progress jump there.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt

from fleet_processing.assign import ActiveByShape, Guess, active_by_shape, infer, place
from fleet_processing.errors import FixOrderError
from fleet_processing.geodesy import haversine_many
from fleet_processing.locate import locate
from fleet_processing.network import Network
from fleet_processing.plan import Floats, Ints, TripInstance
from fleet_processing.policy import ProgressPolicy
from fleet_processing.schedule import delay_s, scheduled_window
from fleet_processing.service_day import find_instance, instances_between
from fleet_schemas.geo import haversine_m
from fleet_schemas.trips import AssignmentState, Calculated, StopVisit

Bools = npt.NDArray[np.bool_]
UNASSIGNED, CANDIDATE, ASSIGNED = 0, 1, 2
STATES: tuple[AssignmentState, ...] = ("unassigned", "candidate", "assigned")
STATE_CODES: dict[str, int] = {name: code for code, name in enumerate(STATES)}
MINUTE_MS = 60_000
UNASSIGNED_BLOCK = Calculated(state="unassigned")


class FixPoint(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An accepted fix of a bus, as progress needs it."""

    time_ms: int
    lat: float
    lon: float
    speed_mps: float | None = None
    heading_deg: float | None = None
    accuracy_m: float | None = None
    trip_id: str | None = None
    """the trip the driver's app says the bus drives, if it says"""


class BusProgress(msgspec.Struct, array_like=True, gc=False):
    """What a bus's next batch needs to know: kept per bus in Redis (``PROGRESS_ENCODER``)."""

    feed_id: int
    state: AssignmentState = "unassigned"
    trip_id: str | None = None
    start_date: str | None = None
    start_time: str | None = None
    confidence: float = 0.0
    time_ms: int = 0
    """the newest fix taken into account"""
    along_m: float = 0.0
    off_m: float = 0.0
    speed_mps: float = 0.0
    delay_s: float = 0.0
    next_stop: int = 0
    """index in the trip of the first stop not yet served"""
    stop_arrived_ms: int = 0
    """when the bus came within the radius of ``next_stop`` (0: not yet)"""
    stop_left_ms: int = 0
    """its last fix within that radius"""
    lost: int = 0
    """consecutive off-line fixes agreeing with each other"""
    lost_since_ms: int = 0
    lost_along_m: float = 0.0
    streak: int = 0
    """fixes followed forward along the candidate's line since it was last judged"""
    recent: list[tuple[int, float, float, float]] = msgspec.field(default_factory=list)
    """(time_ms, lon, lat, accuracy_m) of the last fixes, while the trip is not known"""
    ended: str | None = None
    """``TripInstance.key`` of the trip this bus last completed: never assigned to it again"""


_SAVED_FIELDS = (
    "confidence",
    "time_ms",
    "along_m",
    "off_m",
    "speed_mps",
    "delay_s",
    "next_stop",
    "stop_arrived_ms",
    "stop_left_ms",
    "lost",
    "lost_since_ms",
    "lost_along_m",
    "streak",
)
_SAVED = operator.attrgetter(*_SAVED_FIELDS)
_TIME = operator.itemgetter(0)
"""a recent fix's time"""
_FIX = operator.attrgetter("time_ms", "lat", "lon", "accuracy_m")
"""a fix's numbers; numpy reads a missing accuracy (None) as NaN"""
"""the numeric fields of a saved progress, in their order in ``BusProgress``"""

PROGRESS_ENCODER = msgspec.msgpack.Encoder()
PROGRESS_DECODER = msgspec.msgpack.Decoder(BusProgress)


class BusFixes(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One bus's part of a batch: its saved progress and its accepted fixes, in time order."""

    bus: str
    previous: BusProgress | None
    fixes: list[FixPoint]


class TripAt(msgspec.Struct, frozen=True, gc=False):
    """Where progress put a bus at one of its fixes.

    What the trip detectors (``fleet_processing.trip_events``) read, fix after fix, so that their
    events do not depend on how the fixes were split into batches.
    """

    time_ms: int
    instance: TripInstance | None
    """the trip instance the bus is on after this fix (None: unassigned, or released by this fix)"""
    state: AssignmentState
    along_m: float
    deviation_m: float
    """distance from the trip's line: to its window on the line while followed, to the rest of the line
    ahead while lost (a detour that leaves the road)"""
    delay_s: float
    next_stop: int
    """index in the trip of the first stop not yet served"""
    arrived_ms: int
    """when the bus came within the radius of ``next_stop`` (0: not there)"""
    jumped: bool
    """the progress jumped ahead to this fix after the bus was lost from its line"""
    visits: tuple[StopVisit, ...]
    """stops served or passed at this fix (of the instance before it, when this fix released it)"""


class Progressed(msgspec.Struct, frozen=True, gc=False):
    """Where one bus is after its fixes of the batch.

    Structs here skip the garbage collector's tracking (``gc=False``: they hold no cycles), which keeps
    a batch's thousands of records from triggering collections.
    """

    bus: str
    progress: BusProgress
    instance: TripInstance | None
    along_m: float | None
    off_m: float | None
    delay_s: float | None
    """seconds late (positive) at the current progress, interpolated between stops"""
    next_stop: int | None
    """index in the trip of the next stop not yet passed (None past the last)"""
    speed_mps: float | None
    """smoothed speed along the line"""
    calculated: Calculated
    """the live position's trip block, without the ETA fields"""
    visits: list[StopVisit]
    """stops served (or passed) by these fixes"""
    stale: int = 0
    """fixes not newer than the saved progress (a redelivery, a late fix), left out"""
    trace: tuple[TripAt, ...] = ()
    """one entry per fix taken into account (the fixes after the ``stale`` first ones), when asked for"""


@dataclass(slots=True)
class _Active:
    by_shape: ActiveByShape
    by_trip: dict[str, list[tuple[int, TripInstance]]]


class _Batch:
    """Every bus of the batch as columns; one round updates many buses at once."""

    def __init__(self, net: Network, items: Sequence[BusFixes], now_ms: int, policy: ProgressPolicy) -> None:
        self.net, self.now_ms, self.policy = net, now_ms, policy
        n = len(items)
        self.bus = [item.bus for item in items]
        self.inst: list[TripInstance | None] = []
        self.visits: list[list[StopVisit]] = [[] for _ in range(n)]
        self.active: dict[int, _Active] = {}
        saved: list[BusProgress] = []
        plans, states, bases = [], [], []
        by_label, labels, feed_id = net.by_label, net.labels, net.feed_id
        for item in items:
            prev = item.previous
            if prev is None or prev.feed_id != feed_id:
                prev = BusProgress(feed_id, time_ms=prev.time_ms if prev else 0)
            saved.append(prev)
            inst = by_label.get((prev.trip_id, prev.start_date, prev.start_time))  # type: ignore[arg-type]
            if inst is None and prev.trip_id is not None and prev.start_date and prev.start_time:
                inst = find_instance(net, prev.trip_id, prev.start_date, prev.start_time)
            self.inst.append(inst)
            if inst is None:
                plans.append(0)
                states.append(UNASSIGNED)
                bases.append(0)
            else:
                label = labels[inst]
                plans.append(label.plan)
                states.append(STATE_CODES[prev.state])
                bases.append(label.base_ms)
        self.recent = [p.recent for p in saved]
        self.ended = [p.ended for p in saved]
        self.state = np.array(states, dtype=np.int64)
        self.plan = np.array(plans, dtype=np.int64)
        self.base_ms = np.array(bases, dtype=np.int64)
        self.shape = net.plan_shape[self.plan] if net.plans else np.zeros(n, dtype=np.int64)
        width = len(_SAVED_FIELDS)  # fromiter over the flat numbers: np.array reads a list of tuples slower
        flat = itertools.chain.from_iterable(map(_SAVED, saved))
        cols = np.fromiter(flat, dtype=np.float64, count=n * width).reshape(n, width).T.copy()
        self.conf, time, self.along, self.off, self.speed, self.delay = cols[:6]
        ints = cols[6:].astype(np.int64)
        self.next_stop, self.arrived, self.left, self.lost, self.lost_since = ints[:5]
        self.lost_along, self.streak = cols[11], ints[6]
        self.time_ms = time.astype(np.int64)
        self.deviation = self.off.copy()
        self.jumped = np.zeros(n, dtype=bool)
        self.held_to = np.zeros(n, dtype=np.int64)
        """index of the first fix of each bus not yet taken in (:func:`_park`: a parked bus's run of fixes
        taken in at once); rounds before it only record the bus"""

    # --- running instances, once per minute of fix time ------------------------------------------------
    def active_at(self, time_ms: int) -> _Active:
        minute = time_ms // MINUTE_MS
        found = self.active.get(minute)
        if found is None:
            start = minute * MINUTE_MS
            instances = instances_between(self.net, start, start + MINUTE_MS, slack_s=self.policy.slack_s)
            by_trip: dict[str, list[tuple[int, TripInstance]]] = {}
            for instance in instances:
                by_trip.setdefault(instance.plan.trip_id, []).append(
                    (self.net.plan_index[instance.plan.trip_id], instance)
                )
            found = self.active[minute] = _Active(active_by_shape(self.net, instances), by_trip)
        return found

    # --- state changes of one bus ----------------------------------------------------------------------
    def take(self, b: int, guess: Guess, state: int, time_ms: int) -> None:
        """Put bus ``b`` on ``guess``'s trip instance at its position."""
        net, policy = self.net, self.policy
        same = self.inst[b] is guess.instance
        tracked = same and self.state[b] == ASSIGNED
        self.plan[b] = guess.plan
        self.shape[b] = net.plan_shape[guess.plan]
        self.base_ms[b] = guess.instance.origin_ms + guess.instance.offset_s * 1000
        self.inst[b] = guess.instance
        self.state[b] = state
        self.conf[b] = guess.confidence
        self.along[b] = max(guess.along_m, float(self.along[b])) if same else guess.along_m
        self.off[b], self.delay[b], self.time_ms[b] = guess.off_m, guess.delay_s, time_ms
        self.deviation[b] = guess.off_m
        if not same:
            self.speed[b] = guess.speed_mps
        if not tracked:
            stops = guess.instance.plan.stop_dist_m
            self.next_stop[b] = int(np.searchsorted(stops + policy.stop_radius_m, self.along[b], side="left"))
            self.arrived[b] = self.left[b] = 0
        self.lost[b] = self.lost_since[b] = 0

    def release(self, b: int, time_ms: int, lon: float, lat: float, acc: float, *, ended: bool) -> None:
        """The trip ended (or was lost): the bus is unassigned and must move along a trip again."""
        inst = self.inst[b]
        if ended and inst is not None:
            self.ended[b] = inst.key
        self.inst[b] = None
        self.state[b] = UNASSIGNED
        self.conf[b] = self.along[b] = self.off[b] = self.delay[b] = self.deviation[b] = 0.0
        self.next_stop[b] = self.arrived[b] = self.left[b] = self.lost[b] = self.lost_since[b] = 0
        self.streak[b] = 0
        self.time_ms[b] = time_ms
        self.recent[b] = [(time_ms, lon, lat, acc)]

    def visit(self, b: int, stop: int, arrived_ms: int, departed_ms: int, *, interpolated: bool) -> None:
        inst = self.inst[b]
        assert inst is not None
        plan = inst.plan
        base = int(self.base_ms[b])
        start_date, start_time, _, _ = self.net.labels[inst]
        self.visits[b].append(
            StopVisit(
                operator=self.net.operator,
                bus=self.bus[b],
                feed_id=self.net.feed_id,
                trip_id=plan.trip_id,
                start_date=start_date,
                start_time=start_time,
                stop_sequence=int(plan.stop_sequences[stop]),
                stop_id=plan.stop_ids[stop],
                arrived_ms=arrived_ms,
                departed_ms=departed_ms,
                scheduled_arrival_ms=base + int(plan.arrival_s[stop]) * 1000,
                scheduled_departure_ms=base + int(plan.departure_s[stop]) * 1000,
                interpolated=interpolated,
            )
        )

    def serve_stops(self, b: int, a0: float, t0: int, a1: float, t1: int, *, inside_ok: bool) -> bool:
        """Stops reached or passed between (a0, t0) and (a1, t1); True when the last stop ends the trip."""
        inst = self.inst[b]
        assert inst is not None
        dist, r = inst.plan.stop_dist_m, self.policy.stop_radius_m
        ns = int(self.next_stop[b])
        while ns < len(dist):
            d = float(dist[ns])
            inside = inside_ok and abs(a1 - d) <= r
            crossed = _crossing_ms(d, a0, t0, a1, t1)
            if ns == len(dist) - 1 and (inside or a1 > d + r):
                arrived = int(self.arrived[b]) or (t1 if inside else crossed)
                self.visit(b, ns, arrived, arrived, interpolated=not inside and not self.arrived[b])
                self.next_stop[b] = ns + 1
                return True
            if inside:
                self.arrived[b] = self.arrived[b] or t1
                self.left[b] = t1
                break
            if a1 <= d + r:
                break
            if self.arrived[b]:
                self.visit(b, ns, int(self.arrived[b]), int(self.left[b]), interpolated=False)
            else:
                self.visit(b, ns, crossed, crossed, interpolated=True)
            self.arrived[b] = self.left[b] = 0
            ns += 1
            self.next_stop[b] = ns
        return False


def _crossing_ms(d: float, a0: float, t0: int, a1: float, t1: int) -> int:
    """When the bus passed ``d`` metres along, interpolated in time between two progress points."""
    if a1 <= a0:
        return t1
    return round(t0 + (t1 - t0) * min(max((d - a0) / (a1 - a0), 0.0), 1.0))


class _Fixes:
    """The batch's fixes as columns, projected once; fixes not newer than a bus's progress left out."""

    def __init__(self, net: Network, items: Sequence[BusFixes], policy: ProgressPolicy) -> None:
        points = [f for item in items for f in item.fixes]
        given = np.array([len(item.fixes) for item in items], dtype=np.int64)
        owner = np.repeat(np.arange(len(items)), given)
        cols = np.array(list(map(_FIX, points)), dtype=np.float64).reshape(len(points), 4).T
        since = np.array([p.previous.time_ms if p.previous else -1 for p in items], dtype=np.float64)
        keep = cols[0] > since[owner]
        if not keep.all():
            points = list(itertools.compress(points, keep.tolist()))
            cols, owner = cols[:, keep], owner[keep]
        self.counts = np.bincount(owner, minlength=len(items)).astype(np.int64)
        self.stale = (given - self.counts).tolist()
        backwards = np.flatnonzero((np.diff(cols[0]) < 0) & (owner[1:] == owner[:-1]))
        if len(backwards):
            bus = items[int(owner[backwards[0]])].bus
            raise FixOrderError(f"the fixes of bus {bus!r} are not in time order")
        self.points = points
        self.start = (np.cumsum(self.counts) - self.counts).astype(np.int64)
        self.time = cols[0].astype(np.int64)
        self.lat, self.lon = cols[1], cols[2]
        self.x, self.y = net.project(self.lon, self.lat)
        self.acc = np.where(np.isnan(cols[3]), policy.assumed_accuracy_m, cols[3])
        self.named = np.array([f.trip_id is not None for f in points], dtype=bool)


class _Trace:
    """The state of each bus after each of its fixes, as columns over the batch's kept fixes."""

    def __init__(self, size: int) -> None:
        self.state = np.zeros(size, dtype=np.int64)
        self.along = np.zeros(size, dtype=np.float64)
        self.deviation = np.zeros(size, dtype=np.float64)
        self.delay = np.zeros(size, dtype=np.float64)
        self.next_stop = np.zeros(size, dtype=np.int64)
        self.arrived = np.zeros(size, dtype=np.int64)
        self.jumped = np.zeros(size, dtype=bool)
        self.visits = [0] * size
        self.inst: list[TripInstance | None] = [None] * size

    def record(self, work: _Batch, buses: Ints, at: Ints) -> None:
        states = work.state[buses]
        self.state[at] = states
        self.along[at] = work.along[buses]
        self.deviation[at] = work.deviation[buses]
        self.delay[at] = work.delay[buses]
        self.next_stop[at] = work.next_stop[buses]
        self.arrived[at] = work.arrived[buses]
        self.jumped[at] = work.jumped[buses]
        work.jumped[buses] = False
        visits, inst = work.visits, work.inst
        for b, f, state in zip(buses.tolist(), at.tolist(), states.tolist(), strict=True):
            self.visits[f] = len(visits[b])
            self.inst[f] = inst[b] if state != UNASSIGNED else None

    def entries(self, fixes: _Fixes, visits: list[list[StopVisit]]) -> list[tuple[TripAt, ...]]:
        """Every bus's trace, from the columns turned into Python values once for the whole batch (slicing
        seven arrays per bus would cost more than the records)."""
        rows = list(
            zip(
                fixes.time.tolist(), self.state.tolist(), self.along.tolist(), self.deviation.tolist(),
                self.delay.tolist(), self.next_stop.tolist(), self.arrived.tolist(), self.jumped.tolist(),
                self.visits, self.inst, strict=True,
            )
        )  # fmt: skip
        out = []
        for first, count, served in zip(fixes.start.tolist(), fixes.counts.tolist(), visits, strict=True):
            done = 0
            trace = []
            for time_ms, state, along, deviation, delay, ns, arrived, jumped, upto, inst in rows[
                first : first + count
            ]:
                trace.append(
                    TripAt(
                        time_ms, inst, STATES[state], along, deviation, delay, ns, arrived, jumped,
                        tuple(served[done:upto]),
                    )
                )  # fmt: skip
                done = upto
            out.append(tuple(trace))
        return out


def advance_batch(
    network: Network,
    items: Sequence[BusFixes],
    now_ms: int,
    policy: ProgressPolicy | None = None,
    *,
    trace: bool = False,
) -> list[Progressed]:
    """Advance every bus of the batch through its fixes; one ``Progressed`` per item, in the same order.

    Everything is judged at each fix's own time, so a backlog replayed hours later gives the same
    result as live; ``now_ms`` (the batch's clock) only bounds it, so a fix stamped in the future
    cannot end a trip early. With ``trace``, each result also says where the bus was at each fix.
    """
    policy = policy or ProgressPolicy()
    work = _Batch(network, items, now_ms, policy)
    fixes = _Fixes(network, items, policy)
    recorder = _Trace(len(fixes.points)) if trace else None
    for r in range(int(fixes.counts.max()) if len(items) else 0):
        buses = np.flatnonzero(fixes.counts > r)
        at = fixes.start[buses] + r
        state = work.state[buses]
        followed = (state == ASSIGNED) | (
            (state == CANDIDATE) & (work.streak[buses] < _judge_after(work, buses))
        )
        due = work.held_to[buses] <= at
        tracked = followed & ~fixes.named[at] & due
        others = ~tracked & due
        fast = [
            b
            for b, f in zip(buses[others].tolist(), at[others].tolist(), strict=True)
            if not _infer_step(work, fixes, b, f)
        ]
        chosen = np.concatenate([buses[tracked], np.array(fast, dtype=np.int64)])
        if len(chosen):
            _track(work, fixes, chosen, fixes.start[chosen] + r)
        if recorder is not None:
            recorder.record(work, buses, at)
    return _results(work, fixes, recorder)


def _infer_step(work: _Batch, fixes: _Fixes, b: int, f: int) -> bool:
    """Handle fix ``f`` of bus ``b`` if its trip is not known yet (or its frame names another); else False."""
    point = fixes.points[f]
    state, net, policy = int(work.state[b]), work.net, work.policy
    current = work.inst[b]
    named = point.trip_id
    if state == ASSIGNED and (named is None or (current is not None and named == current.plan.trip_id)):
        return False
    if state == CANDIDATE and named is None and work.streak[b] < _judge_after(work, np.array([b]))[0]:
        return False  # a candidate is followed along its line, and judged again after a few fixes
    t, x, y = point.time_ms, float(fixes.x[f]), float(fixes.y[f])
    acc = float(fixes.acc[f])
    if named is not None and named in net.plan_index:
        ended = work.ended[b]
        options = [o for o in work.active_at(t).by_trip.get(named, []) if o[1].key != ended]
        placed = place(net, options, t, x, y, policy) if options else None
        if placed is not None and not _at_its_end(placed, policy):
            work.take(b, placed, ASSIGNED, t)
            work.recent[b] = []
            return True
    if state == ASSIGNED:
        return False  # the frame names a trip that is not running: keep the one the bus is on
    recent = [*work.recent[b], (t, point.lon, point.lat, acc)][-policy.recent_fixes :]
    recent = recent[bisect.bisect_left(recent, t - policy.recent_s * 1000, key=_TIME) :]  # in time order
    work.recent[b] = recent
    work.time_ms[b] = t
    if not _moving(recent, policy):
        if state == UNASSIGNED:
            work.streak[b] = 0
            if named is None:
                _park(work, fixes, b, f + 1)
        return True  # parked, or dwelling at a stop: a candidate is held, an unassigned bus stays so
    guess = _guess(work, recent)
    if guess is not None and guess.instance.key == work.ended[b]:
        guess = None
    if guess is None:
        work.inst[b] = None
        work.state[b] = UNASSIGNED
        work.conf[b] = 0.0
        work.streak[b] = 0
        return True
    work.take(b, guess, CANDIDATE, t)
    work.streak[b] = 0
    return True


PARK_RUN_MIN = 3
"""fixes left to a parked bus for :func:`_park` to take them at once: fewer go one by one for less"""


def _park(work: _Batch, fixes: _Fixes, b: int, f: int) -> None:
    """Take in at once the fixes from ``f`` on of unassigned bus ``b``, parked at the fix before, that
    find it still parked.

    Exactly what :func:`_infer_step` does one fix at a time for each of them (each fix's window of recent
    fixes, whether it spans ``min_move_m``), computed over the run with numpy: a fleet parked at its
    depots, or a backlog of a bus waiting at its terminus, sends many such fixes. Stops before the first
    fix that names a trip or finds the bus moving, which then goes through the usual step.
    """
    end = int(fixes.start[b] + fixes.counts[b])
    named = fixes.named[f:end]
    if named.any():
        end = f + int(np.argmax(named))
    if end - f < PARK_RUN_MIN:
        return
    policy = work.policy
    recent = work.recent[b]
    kept = len(recent)
    times = np.concatenate((np.array([p[0] for p in recent], dtype=np.int64), fixes.time[f:end]))
    lons = np.concatenate((np.array([p[1] for p in recent], dtype=np.float64), fixes.lon[f:end]))
    lats = np.concatenate((np.array([p[2] for p in recent], dtype=np.float64), fixes.lat[f:end]))
    run = np.arange(kept, len(times))
    # each fix's window: the newest recent_fixes up to it, none older than recent_s before it
    oldest = np.searchsorted(times, times[run] - policy.recent_s * 1000)
    first = np.maximum(run - (policy.recent_fixes - 1), oldest)
    spans = haversine_many(lats[first], lons[first], lats[run], lons[run])
    moving = (first < run) & (spans >= policy.min_move_m)
    for k in np.flatnonzero(np.abs(spans - policy.min_move_m) < 1e-6).tolist():  # the scalar rule decides
        i, j = int(first[k]), int(run[k])
        moving[k] = i < j and haversine_m(lats[i], lons[i], lats[j], lons[j]) >= policy.min_move_m
    parked = int(np.argmax(moving)) if moving.any() else len(run)
    if parked == 0:
        return
    last = int(run[parked - 1])
    taken = zip(
        fixes.time[f : f + parked].tolist(),
        fixes.lon[f : f + parked].tolist(),
        fixes.lat[f : f + parked].tolist(),
        fixes.acc[f : f + parked].tolist(),
        strict=True,
    )
    work.recent[b] = [*recent, *taken][int(first[parked - 1]) : last + 1]
    work.time_ms[b] = int(times[last])
    work.streak[b] = 0
    work.held_to[b] = f + parked


def _at_its_end(guess: Guess, policy: ProgressPolicy) -> bool:
    """Whether a guess puts the bus at or past its trip's last stop, with nothing left to drive: a frame
    naming a frequency-based trip the bus has just completed fits the next departure there, which would be
    completed at once, then the one before, and so on at every fix."""
    return guess.along_m >= float(guess.instance.plan.stop_dist_m[-1]) - policy.stop_radius_m


def _judge_after(work: _Batch, buses: Ints) -> Ints:
    """Fixes a candidate is followed before it is judged again: few if confident, more if doubtful."""
    policy = work.policy
    sure = work.conf[buses] >= policy.min_confidence
    return np.where(sure, policy.confirm_fixes, policy.recheck_fixes)


def _moving(recent: list[tuple[int, float, float, float]], policy: ProgressPolicy) -> bool:
    """Whether the recent fixes span ``min_move_m``: a bus parked or creeping in a station does not."""
    if len(recent) < 2:
        return False
    (_, lon0, lat0, _), (_, lon1, lat1, _) = recent[0], recent[-1]
    return haversine_m(lat0, lon0, lat1, lon1) >= policy.min_move_m


def _guess(work: _Batch, recent: list[tuple[int, float, float, float]]) -> Guess | None:
    net, policy = work.net, work.policy
    times = np.array([p[0] for p in recent], dtype=np.int64)
    x, y = net.project(np.array([p[1] for p in recent]), np.array([p[2] for p in recent]))
    acc = np.array([p[3] for p in recent], dtype=np.float64)
    return infer(net, work.active_at(int(times[-1])).by_shape, times, x, y, acc, policy)


def _track(work: _Batch, fixes: _Fixes, b: Ints, f: Ints) -> None:
    """One fix of each assigned bus ``b``: windowed projection, monotone filter, speed, delay, stops."""
    net, policy = work.net, work.policy
    t, x, y, acc = fixes.time[f], fixes.x[f], fixes.y[f], fixes.acc[f]
    a0, t0, shape = work.along[b], work.time_ms[b], work.shape[b]
    dt = np.maximum(t - t0, 0) / 1000.0
    reach = policy.max_speed_mps * dt
    got, off = locate(net, shape, x, y, a0 - 2 * acc, a0 + reach + 2 * acc, acc)
    limit = policy.off_route_m + acc
    on_line = off <= limit
    a1 = np.where(on_line, np.maximum(a0, got), a0)
    candidate = work.state[b] == CANDIDATE
    release = np.zeros(len(b), dtype=bool)
    lost = ~on_line & ~candidate
    ahead_off: Floats = np.zeros(0)
    jumped: Bools = np.zeros(0, dtype=bool)
    if lost.any():
        a1, release, ahead_off, jumped = _lost(work, b[lost], fixes, f[lost], a1, lost, limit, reach)
    work.lost[b[on_line]] = 0
    work.lost_since[b[on_line]] = 0

    alpha = 1.0 - np.exp(-dt / policy.speed_tau_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        measured = np.where(dt > 0, (a1 - a0) / dt, 0.0)
    work.speed[b] = work.speed[b] + alpha * (measured - work.speed[b])
    plan = work.plan[b]
    lo, hi = scheduled_window(net, plan, a1, policy.stop_radius_m)
    work.delay[b] = delay_s(t, work.base_ms[b], lo, hi)
    work.along[b], work.off[b], work.time_ms[b] = a1, off, t
    work.deviation[b] = off
    if lost.any():
        work.deviation[b[lost]] = np.minimum(off[lost], ahead_off)
        work.jumped[b[lost]] = jumped
    if candidate.any():
        forward = on_line[candidate] & (got[candidate] > a0[candidate])
        _confirm(work, b[candidate], forward, ~on_line[candidate], fixes, f[candidate])

    r = policy.stop_radius_m
    first, end = net.stop_start[plan], net.stop_start[plan + 1]
    ns = work.next_stop[b]
    d_ns = net.stop_dist[np.minimum(first + ns, end - 1)]
    pending = first + ns < end
    near_line = on_line & (off <= r + acc)
    inside = near_line & (np.abs(a1 - d_ns) <= r)
    last_arrival_ms = work.base_ms[b] + net.stop_arrival_s[end - 1] * 1000
    overdue = np.minimum(t, work.now_ms) > last_arrival_ms + policy.release_after_s * 1000
    events = np.flatnonzero(((pending & (inside | (a1 > d_ns + r))) | release | overdue) & ~candidate)
    for k in events.tolist():
        bus, fix = int(b[k]), int(f[k])
        ended = work.serve_stops(
            bus, float(a0[k]), int(t0[k]), float(a1[k]), int(t[k]), inside_ok=bool(near_line[k])
        )
        if ended or release[k] or overdue[k]:
            point = fixes.points[fix]
            work.release(
                bus, point.time_ms, point.lon, point.lat, float(acc[k]), ended=ended or bool(overdue[k])
            )


def _confirm(work: _Batch, cb: Ints, forward: Bools, off_line: Bools, fixes: _Fixes, cf: Ints) -> None:
    """Candidates followed along their line: ``confirm_fixes`` fixes forward on it confirm a confident one
    (a doubtful one is judged again), a fix off it drops it."""
    policy = work.policy
    work.streak[cb] = np.where(forward, work.streak[cb] + 1, work.streak[cb])
    for bus, f in zip(cb.tolist(), cf.tolist(), strict=True):
        point = fixes.points[f]
        work.recent[bus] = [*work.recent[bus], (point.time_ms, point.lon, point.lat, float(fixes.acc[f]))][
            -policy.recent_fixes :
        ]
    sure = (work.streak[cb] >= policy.confirm_fixes) & (work.conf[cb] >= policy.min_confidence)
    for k in np.flatnonzero(sure).tolist():
        bus = int(cb[k])
        inst = work.inst[bus]
        assert inst is not None
        work.state[bus] = ASSIGNED
        work.recent[bus] = []
        stops = inst.plan.stop_dist_m + policy.stop_radius_m
        work.next_stop[bus] = int(np.searchsorted(stops, work.along[bus], side="left"))
        work.arrived[bus] = work.left[bus] = 0
    for k in np.flatnonzero(off_line).tolist():
        point = fixes.points[int(cf[k])]
        work.release(int(cb[k]), point.time_ms, point.lon, point.lat, float(fixes.acc[cf[k]]), ended=False)


def _lost(
    work: _Batch, lb: Ints, fixes: _Fixes, lf: Ints, a1: Floats, mask: Bools, limit: Floats, reach: Floats
) -> tuple[Floats, Bools, Floats, Bools]:
    """Fixes off their window of the line: count them, and jump ahead when enough of them agree.

    Also returns, for these fixes, their distance from the line ahead and whether they made it jump.
    """
    net, policy = work.net, work.policy
    shape, acc, t = work.shape[lb], fixes.acc[lf], fixes.time[lf]
    lim, far = limit[mask], reach[mask]
    ahead, off = locate(
        net,
        shape,
        fixes.x[lf],
        fixes.y[lf],
        work.along[lb],
        net.seg_cum[net.vertex_start[shape + 1] - 1],
        acc,
    )
    placed = off <= lim
    previous = work.lost_along[lb]
    agrees = (
        placed & (work.lost[lb] > 0) & (ahead >= previous - 2 * acc) & (ahead <= previous + far + 2 * acc)
    )
    lost = np.where(agrees, work.lost[lb] + 1, np.where(placed, 1, 0))
    since = np.where(work.lost_since[lb] == 0, t, work.lost_since[lb])
    jump = lost >= policy.relocate_fixes
    work.lost_along[lb] = np.where(placed, ahead, previous)
    work.lost[lb] = np.where(jump, 0, lost)
    work.lost_since[lb] = np.where(jump, 0, since)
    out = a1.copy()
    out[np.flatnonzero(mask)[jump]] = ahead[jump]
    release = np.zeros(len(a1), dtype=bool)
    overlong = ~jump & (t - since >= policy.release_lost_s * 1000)
    if overlong.any():
        overlong[overlong] = ~_names_its_trip(work, lb[overlong], fixes, lf[overlong])
    release[np.flatnonzero(mask)] = overlong
    return out, release, off, jump


def _names_its_trip(work: _Batch, buses: Ints, fixes: _Fixes, at: Ints) -> Bools:
    """Whether each fix names the trip its bus is on. A driver's console saying so keeps the trip
    through a detour of any length (the deviation reports it); only an inferred trip is given up after
    ``release_lost_s`` off its line, as the inference may have been wrong."""
    return np.array(
        [
            (inst := work.inst[b]) is not None and fixes.points[f].trip_id == inst.plan.trip_id
            for b, f in zip(buses.tolist(), at.tolist(), strict=True)
        ],
        dtype=bool,
    )


def _results(work: _Batch, fixes: _Fixes, recorder: _Trace | None) -> list[Progressed]:
    """One ``Progressed`` per bus from the columns (plain Python values: no numpy scalar per field)."""
    net, policy = work.net, work.policy
    early, late = -policy.on_time_early_s, policy.on_time_late_s
    feed_id, labels = net.feed_id, net.labels
    numbers = zip(
        *(
            column.tolist()
            for column in (
                work.conf, work.time_ms, work.along, work.off, work.speed, work.delay, work.next_stop,
                work.arrived, work.left, work.lost, work.lost_since, work.lost_along, work.streak,
            )
        ),
        strict=True,
    )  # fmt: skip
    traces: list[tuple[TripAt, ...]] = (
        recorder.entries(fixes, work.visits) if recorder is not None else [()] * len(work.bus)
    )
    rows = zip(
        work.state.tolist(), work.plan.tolist(), numbers, work.inst, work.recent, work.ended, work.bus,
        work.visits, fixes.stale, traces, strict=True,
    )  # fmt: skip
    first_m, last_m, sequences = net.plan_first_m, net.plan_last_m, net.plan_sequences
    out: list[Progressed] = []
    append = out.append
    for state, p, nums, inst, recent, ended, bus, visits, stale, trace in rows:
        if inst is None or state == UNASSIGNED:
            progress = BusProgress(feed_id, "unassigned", time_ms=nums[1], recent=recent, ended=ended)
            append(
                Progressed(
                    bus, progress, None, None, None, None, None, None, UNASSIGNED_BLOCK, visits, stale, trace
                )
            )
            continue
        plan = inst.plan
        name = STATES[state]
        trip_id = plan.trip_id
        start_date, start_time, _, _ = labels[inst]
        saved = (feed_id, name, trip_id, start_date, start_time, *nums, recent, ended)
        progress = BusProgress(*saved)
        conf, _, along, off, speed, delay, ns = nums[:7]
        upcoming = ns < len(plan.stop_ids)
        travelled = along - first_m[p]
        remaining = last_m[p] - along
        calc = Calculated(
            state=name,
            trip_id=trip_id,
            start_date=start_date,
            start_time=start_time,
            confidence=conf,
            distance_travelled_m=0.0 if travelled < 0.0 else travelled,  # max(), NaN kept
            distance_remaining_m=0.0 if remaining < 0.0 else remaining,
            off_route_m=off,
            delay_s=delay,
            on_schedule=early <= delay <= late,
            next_stop_id=plan.stop_ids[ns] if upcoming else None,
            next_stop_sequence=sequences[p][ns] if upcoming else None,
        )
        append(
            Progressed(
                bus,
                progress,
                inst,
                along,
                off,
                delay,
                ns if upcoming else None,
                speed,
                calc,
                visits,
                stale,
                trace,
            )
        )
    return out
