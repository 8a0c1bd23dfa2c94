"""Arrival and departure times at every upcoming stop of every bus of a micro-batch, at once.

Why hand-written: no maintained Python library predicts bus arrivals from a
trip plan and learned segment times; TheTransitClock (Java) and OneBusAway
(Java) are services, not libraries. What is taken from them is the idea, not
code: TheTransitClock's per-segment Kalman filter weighs the previous
vehicle's time on a segment against the historical average with a gain from
their variances; OneBusAway propagates the current delay and lets slack at
timepoints absorb it (the baseline ``fleet bench eta`` compares against).

The model, per segment between consecutive stops:

* the expected travel time is the segment's historical mean at the hour of
  week the bus should enter it; with fewer than ``MIN_SAMPLES`` there, that
  hour of the day over the whole week, then all hours pooled; the schedule
  when the segment has no history;
* the previous vehicle's time on the segment corrects it Kalman-style: the
  gain is ``var / (var + r)`` where ``var`` is the historical variance and
  ``r`` grows with that observation's age (``KALMAN_AGE_S``), so a bus that
  went through ten minutes ago counts more than one of this morning;
* the bus's own smoothed speed is blended in for the segment it is on and
  the next ones, with a weight that decays with the distance ahead
  (``SPEED_DECAY_M``): it says what traffic is like here and now;
* dwell at each intermediate stop is the historical dwell of that stop and
  hour (learnt from buses that were not early, see ``fleet_store.history``),
  else ``DEFAULT_DWELL_S``; a stop with scheduled dwell (departure after
  arrival) is a timepoint the bus does not leave before its scheduled
  departure, so the schedule's dwell is the hold: slack absorbs earliness,
  and a late bus leaves as soon as its dwell is done (OneBusAway's rule).

The band (10th and 90th percentile) adds the segments' and dwells' variances
along the way plus a share of the horizon for what one day's traffic has in
common across segments, so it widens with the horizon.

Everything is vectorized over the ragged array of all upcoming stops of all
requests; the per-request Python work is reading its fields. Each plan's
stops are laid out once in a table the history keeps (``SegmentHistory``
is immutable; the table is a cache of lookups, keyed by plan identity).

Hours of week are counted in UTC from Monday 00:00 (``hour_of_week``), on
both sides (the store's rollup uses the same formula), so they need no
timezone; a DST change moves them by an hour for half the year.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from fleet_processing.plan import Floats, Ints, TripInstance, TripPlan
from fleet_schemas.trips import StopEta

if TYPE_CHECKING:
    from fleet_processing.progress import Progressed

HOURS_OF_WEEK = 168
_HOUR_OF_DAY = HOURS_OF_WEEK
"""first of the 24 columns of the history arrays pooling one hour of the day over the week"""
_POOLED = HOURS_OF_WEEK + 24
"""column of the history arrays holding all hours pooled"""
MIN_SAMPLES = 3
"""observations a segment (or dwell) needs at an hour before its mean is used"""
KALMAN_AGE_S = 1800.0
"""age at which the previous vehicle's time weighs as much as the historical mean"""
LAST_RATIO_RANGE = (0.25, 4.0)
"""bounds of the previous vehicle's time over the usual one (a bus parked mid-segment is not traffic)"""
SPEED_WEIGHT = 1.0
"""weight of the bus's own speed on the road just ahead of it"""
SPEED_DECAY_M = 30_000.0
"""distance ahead (to the middle of what is left of a segment) over which that weight falls by e"""
MIN_SPEED_MPS = 2.0
"""below this the smoothed speed says nothing about traffic (stopped, crawling at a station)"""
DEFAULT_DWELL_S = 20.0
SCHEDULE_CV = 0.15
"""relative standard deviation assumed for a scheduled time with no history"""
HORIZON_CV = 0.03
"""relative standard deviation shared by all segments of one trip (one day's traffic)"""
Z90 = 1.2815515655446004
"""standard normal quantile of 0.9"""

Bools = npt.NDArray[np.bool_]


class EtaError(ValueError):
    """Input the ETA model cannot use; ``code`` is stable."""

    code: ClassVar[str] = "eta_invalid"


class _HourRow(Protocol):
    @property
    def operator(self) -> str: ...
    @property
    def hour_of_week(self) -> int: ...
    @property
    def n(self) -> int: ...
    @property
    def mean_s(self) -> float: ...
    @property
    def var_s(self) -> float: ...


class SegmentRow(_HourRow, Protocol):
    """One rollup row: travel times from one stop to the next at one hour of week, and the latest one."""

    @property
    def from_stop_id(self) -> str: ...
    @property
    def to_stop_id(self) -> str: ...
    @property
    def last_s(self) -> float: ...
    @property
    def last_ms(self) -> int: ...


class DwellRow(_HourRow, Protocol):
    """One rollup row: dwell at one stop at one hour of week."""

    @property
    def stop_id(self) -> str: ...


def hour_of_week(time_ms: Ints) -> Ints:
    """Hours since Monday 00:00 UTC (the epoch began on a Thursday, 72 hours in)."""
    return (time_ms // 3_600_000 + 72) % HOURS_OF_WEEK


class EtaRequest(msgspec.Struct, frozen=True, gc=False):
    """Where one bus is on its trip instance, as progress found it at its newest fix.

    A Struct rather than a frozen dataclass: one is built per bus per batch, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) costs several times as much.
    """

    instance: TripInstance
    distance_m: float
    """metres along the trip's shape"""
    time_ms: int
    """fix time"""
    speed_mps: float | None
    """smoothed recent speed; None when unknown"""
    delay_s: float
    """seconds late (negative: early) against the schedule at ``distance_m``"""
    next_stop: int
    """index (into the plan's arrays) of the first stop not yet reached; the plan's length when all are"""
    dwelling: bool = False
    """stopped at stop ``next_stop - 1`` and not gone yet"""

    @classmethod
    def from_progress(cls, result: Progressed, time_ms: int) -> EtaRequest | None:
        """The request for a bus where ``advance_batch`` left it (None when it is on no trip).

        Progress counts a stop the bus has reached but not left as its next stop
        (``stop_arrived_ms`` set); for the ETA that stop is served and the bus dwells there.
        """
        if result.instance is None or result.along_m is None or result.next_stop is None:
            return None
        dwelling = result.progress.stop_arrived_ms > 0
        return cls(
            instance=result.instance,
            distance_m=result.along_m,
            time_ms=time_ms,
            speed_mps=result.speed_mps,
            delay_s=result.delay_s or 0.0,
            next_stop=result.next_stop + 1 if dwelling else result.next_stop,
            dwelling=dwelling,
        )


def _pool(n: Floats, mean: Floats, var: Floats, axis: int) -> tuple[Floats, Floats, Floats]:
    """Hours pooled along ``axis`` (Chan's parallel combination of count, mean and M2)."""
    total = n.sum(axis=axis)
    pooled_mean = (n * mean).sum(axis=axis) / np.maximum(total, 1.0)
    spread = (n * (mean - np.expand_dims(pooled_mean, axis)) ** 2).sum(axis=axis)
    m2 = (np.maximum(n - 1.0, 0.0) * var).sum(axis=axis) + spread
    return total, pooled_mean, m2 / np.maximum(total - 1.0, 1.0)


def _hour_table(count: int) -> tuple[Floats, Floats, Floats]:
    shape = (count, _POOLED + 1)
    return np.zeros(shape), np.zeros(shape), np.zeros(shape)


def _fill_pools(n: Floats, mean: Floats, var: Floats) -> None:
    """Each hour of the day over the week's seven days, then all hours, from the hour-of-week columns."""
    n_w, mean_w, var_w = (a[:, :HOURS_OF_WEEK].reshape(len(a), 7, 24) for a in (n, mean, var))
    day = slice(_HOUR_OF_DAY, _POOLED)
    n[:, day], mean[:, day], var[:, day] = _pool(n_w, mean_w, var_w, axis=1)
    hours = slice(0, HOURS_OF_WEEK)
    n[:, _POOLED], mean[:, _POOLED], var[:, _POOLED] = _pool(
        n[:, hours], mean[:, hours], var[:, hours], axis=1
    )


@dataclass(slots=True)
class _StopTable:
    """Every stop of every plan seen so far, laid end to end, with its history indexes."""

    base: dict[TripPlan, int] = field(default_factory=dict)
    dist: Floats = field(default_factory=lambda: np.zeros(0))
    arr_s: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    dep_s: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    first: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    """table index of the plan's first stop, for every stop"""
    last: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    seg: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    """history segment of (previous stop → this stop); -1: none"""
    dwell: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    sequences: list[int] = field(default_factory=list)
    stop_ids: list[str] = field(default_factory=list)


class SegmentHistory:
    """What the fleet has driven: segment travel times and dwells by hour of week, for one operator.

    Keyed by stop ids, so it survives a feed re-import. Built once from the
    store's rollup rows (``fleet_store.history.load_segment_history``) and
    read-only afterwards; it lays out the stops of each plan it is asked
    about once (a cache), so build a new one at each refresh rather than
    keeping one across feed versions.
    """

    def __init__(self, operator: str, segments: Iterable[SegmentRow] = (), dwells: Iterable[DwellRow] = ()):
        self.operator = operator
        seg_rows, dwell_rows = list(segments), list(dwells)
        checked: list[_HourRow] = [*seg_rows, *dwell_rows]
        for row in checked:
            if row.operator != operator:
                raise EtaError(f"a history row of operator {row.operator!r} in the history of {operator!r}")
            if not 0 <= row.hour_of_week < HOURS_OF_WEEK or row.n < 0 or row.var_s < 0:
                raise EtaError(f"history row out of range: {row!r}")
        self._segment_index: dict[tuple[str, str], int] = {}
        for row in seg_rows:
            self._segment_index.setdefault((row.from_stop_id, row.to_stop_id), len(self._segment_index))
        self._dwell_index: dict[str, int] = {}
        for d in dwell_rows:
            self._dwell_index.setdefault(d.stop_id, len(self._dwell_index))
        self.seg_n, self.seg_mean, self.seg_var = _hour_table(len(self._segment_index))
        self.seg_last_s = np.full(len(self._segment_index), np.nan)
        self.seg_last_ms = np.full(len(self._segment_index), -1, np.int64)
        last_hour = np.zeros(len(self._segment_index), np.int64)
        for row in seg_rows:
            s = self._segment_index[row.from_stop_id, row.to_stop_id]
            h = row.hour_of_week
            self.seg_n[s, h], self.seg_mean[s, h], self.seg_var[s, h] = row.n, row.mean_s, row.var_s
            if row.last_ms > self.seg_last_ms[s]:
                self.seg_last_ms[s], self.seg_last_s[s], last_hour[s] = row.last_ms, row.last_s, h
        self.dwell_n, self.dwell_mean, self.dwell_var = _hour_table(len(self._dwell_index))
        for d in dwell_rows:
            i, h = self._dwell_index[d.stop_id], d.hour_of_week
            self.dwell_n[i, h], self.dwell_mean[i, h], self.dwell_var[i, h] = d.n, d.mean_s, d.var_s
        _fill_pools(self.seg_n, self.seg_mean, self.seg_var)
        _fill_pools(self.dwell_n, self.dwell_mean, self.dwell_var)
        every = np.arange(len(self._segment_index))
        found, usual, _ = _lookup(every, last_hour, self.seg_n, self.seg_mean, self.seg_var)
        ratio = self.seg_last_s / np.maximum(usual, 1.0)
        self.seg_last_ratio = np.where(found & (usual >= 1.0), np.clip(ratio, *LAST_RATIO_RANGE), np.nan)
        """the previous vehicle's time over the usual time at its hour: what today's conditions add"""
        self._table = _StopTable()

    @property
    def segments(self) -> int:
        return len(self._segment_index)

    def _lay_out(self, plans: list[TripPlan]) -> None:
        """Append the stops of plans not seen yet to the stop table (once per plan)."""
        t = self._table
        start = len(t.dist)
        seg: list[int] = []
        dwell: list[int] = []
        first: list[int] = []
        last: list[int] = []
        for plan in plans:
            base = start + len(seg)
            t.base[plan] = base
            ids = plan.stop_ids
            seg.append(-1)
            seg.extend(self._segment_index.get((a, b), -1) for a, b in itertools.pairwise(ids))
            dwell.extend(self._dwell_index.get(stop, -1) for stop in ids)
            first.extend([base] * len(ids))
            last.extend([base + len(ids) - 1] * len(ids))
            t.sequences.extend(int(s) for s in plan.stop_sequences)
            t.stop_ids.extend(ids)
        t.dist = np.concatenate([t.dist, *(p.stop_dist_m for p in plans)])
        t.arr_s = np.concatenate([t.arr_s, *(p.arrival_s for p in plans)])
        t.dep_s = np.concatenate([t.dep_s, *(p.departure_s for p in plans)])
        t.seg = np.concatenate([t.seg, np.array(seg, np.int64)])
        t.dwell = np.concatenate([t.dwell, np.array(dwell, np.int64)])
        t.first = np.concatenate([t.first, np.array(first, np.int64)])
        t.last = np.concatenate([t.last, np.array(last, np.int64)])


def _lookup(index: Ints, hours: Ints, n: Floats, mean: Floats, var: Floats) -> tuple[Bools, Floats, Floats]:
    """Mean and variance at the hour of week, else that hour of any day, else all hours; and whether known.

    Each level is used only with ``MIN_SAMPLES`` observations.
    """
    if n.shape[0] == 0:
        zero = np.zeros(len(index))
        return np.zeros(len(index), bool), zero, zero
    known = index >= 0
    i = np.where(known, index, 0)
    of_day = _HOUR_OF_DAY + hours % 24
    column = np.where(
        n[i, hours] >= MIN_SAMPLES, hours, np.where(n[i, of_day] >= MIN_SAMPLES, of_day, _POOLED)
    )
    found = known & (n[i, column] >= MIN_SAMPLES)
    return found, mean[i, column], var[i, column]


def _group_cumsum(values: Floats, offsets: Ints, stops: Ints) -> Floats:
    """Running sum restarting at each request's first stop."""
    running = np.cumsum(values)
    starts = np.minimum(offsets, len(values) - 1)  # a request with no stop left repeats nothing
    return running - np.repeat(running[starts] - values[starts], stops)


def _group_cummax(values: Floats, group: Ints, span: float) -> Floats:
    """Running maximum restarting at each request's first stop (values within ±span/2)."""
    shifted = values + group * span
    peaks: Floats = np.maximum.accumulate(shifted)
    return peaks - group * span


def _requests(requests: Sequence[EtaRequest], table: _StopTable, now_ms: int) -> Floats:
    """One row per request: table index of its next stop, stops left, origin ms, and the bus's facts."""
    rows = []
    for r in requests:
        inst = r.instance
        plan = inst.plan
        length = len(plan.stop_ids)
        if not 0 <= r.next_stop <= length:
            raise EtaError(f"next_stop {r.next_stop} outside trip {plan.trip_id} of {length} stops")
        speed = r.speed_mps
        rows.append(
            (
                table.base[plan] + r.next_stop,
                length - r.next_stop,
                inst.origin_ms + inst.offset_s * 1000 - now_ms,
                r.distance_m,
                r.time_ms - now_ms,
                speed if speed is not None and speed >= MIN_SPEED_MPS and not r.dwelling else math.nan,
                r.delay_s,
                r.dwelling,
            )
        )
    table_rows: Floats = np.array(rows, np.float64).reshape(len(rows), 8)
    return table_rows


def predict_batch(
    requests: Sequence[EtaRequest], history: SegmentHistory, now_ms: int
) -> list[list[StopEta]]:
    """For each request, a StopEta for each stop from ``next_stop`` to the trip's end, in trip order.

    Guarantees: arrivals never decrease along a trip, none is before
    ``now_ms``, departure ≥ arrival, and early ≤ arrival ≤ late.
    """
    t = history._table
    unseen = list({r.instance.plan: None for r in requests if r.instance.plan not in t.base})
    if unseen:
        history._lay_out(unseen)
    facts = _requests(requests, t, now_ms)
    stops = facts[:, 1].astype(np.int64)
    total = int(stops.sum())
    if total == 0:
        return [[] for _ in requests]
    group = np.repeat(np.arange(len(requests)), stops)
    offsets = np.cumsum(stops) - stops
    first = facts[:, 0].astype(np.int64)
    i = first[group] + np.arange(total) - offsets[group]
    is_next = i == first[group]
    day_s = facts[group, 2] / 1000.0
    """seconds from now to the service day's origin (plus the instance's offset)"""
    bus_dist, t0, speed, delay = facts[group, 3], facts[group, 4] / 1000.0, facts[group, 5], facts[group, 6]
    dwelling = facts[group, 7] > 0
    has_prev = i > t.first[i]
    prev = np.where(has_prev, i - 1, i)

    # Travel time of the segment ending at each stop: history (Kalman-corrected) or schedule, then speed.
    sched_travel = np.where(has_prev, t.arr_s[i] - t.dep_s[prev], 0).astype(np.float64)
    enter_ms = np.rint((day_s + t.dep_s[prev] + delay) * 1000.0).astype(np.int64) + now_ms
    found, travel, travel_var = _lookup(
        t.seg[i], hour_of_week(enter_ms), history.seg_n, history.seg_mean, history.seg_var
    )
    travel = np.where(found, travel, sched_travel)
    travel_var = np.where(found, travel_var, (SCHEDULE_CV * sched_travel) ** 2 + 900.0)
    if history.segments:
        seg = np.maximum(t.seg[i], 0)
        ratio = history.seg_last_ratio[seg]
        recent = found & np.isfinite(ratio) & (t.seg[i] >= 0)
        age_s = np.maximum((now_ms - history.seg_last_ms[seg]) / 1000.0, 0.0)
        relative_var = travel_var / np.maximum(travel, 1.0) ** 2
        gain = np.where(recent, relative_var / (relative_var * (1.0 + age_s / KALMAN_AGE_S) + 1e-4), 0.0)
        travel = travel * (1.0 + gain * (np.nan_to_num(ratio, nan=1.0) - 1.0))
        travel_var = travel_var * (1.0 - gain / 2)
    seg_len = np.where(has_prev, t.dist[i] - t.dist[prev], 0.0)
    moving = np.isfinite(speed)
    left = np.where(is_next, np.clip((t.dist[i] - bus_dist) / np.maximum(seg_len, 1.0), 0.0, 1.0), 1.0)
    middle_m = np.where(is_next, 0.0, np.maximum(t.dist[prev] - bus_dist, 0.0)) + 0.5 * seg_len * left
    weight = np.where(moving & has_prev, SPEED_WEIGHT * np.exp(-middle_m / SPEED_DECAY_M), 0.0)
    travel = (1.0 - weight) * travel + weight * seg_len / np.where(moving, speed, 1.0)
    to_first = np.where(is_next & ~has_prev, np.maximum(t.dist[i] - bus_dist, 0.0), 0.0)
    travel = np.maximum(travel * left, 0.0) + to_first / np.where(moving, speed, 10.0)
    travel_var = travel_var * left**2

    # Dwell at each stop but the last; a stop with scheduled dwell (and the first) holds to its departure.
    is_last = i == t.last[i]
    sched_dwell = (t.dep_s[i] - t.arr_s[i]).astype(np.float64)
    arrive_ms = np.rint((day_s + t.arr_s[i] + delay) * 1000.0).astype(np.int64) + now_ms
    d_found, dwell, dwell_var = _lookup(
        t.dwell[i], hour_of_week(arrive_ms), history.dwell_n, history.dwell_mean, history.dwell_var
    )
    dwell = np.where(is_last, 0.0, np.maximum(np.where(d_found, dwell, DEFAULT_DWELL_S), 0.0))
    dwell_var = np.where(is_last, 0.0, np.where(d_found, dwell_var, DEFAULT_DWELL_S**2))
    holds = ((sched_dwell > 0) | ~has_prev) & ~is_last

    # Leaving from here now, or after half the expected dwell when stopped at a stop (held to its timetable
    # at a timepoint or the first stop):
    # departure_k = C_k + max(begin, max over holding j <= k of (S_j - C_j)), C the running sum of steps.
    begin = np.where(is_next, t0, 0.0)
    staying = np.flatnonzero(is_next & dwelling & has_prev)
    if len(staying):
        here = prev[staying]
        here_ms = (
            np.rint((day_s[staying] + t.arr_s[here] + delay[staying]) * 1000.0).astype(np.int64) + now_ms
        )
        h_found, h_dwell, _ = _lookup(
            t.dwell[here], hour_of_week(here_ms), history.dwell_n, history.dwell_mean, history.dwell_var
        )
        leave = t0[staying] + 0.5 * np.maximum(np.where(h_found, h_dwell, DEFAULT_DWELL_S), 0.0)
        held = (t.dep_s[here] > t.arr_s[here]) | (here == t.first[here])
        begin[staying] = np.where(held, np.maximum(leave, day_s[staying] + t.dep_s[here]), leave)
    steps = travel + dwell
    running = _group_cumsum(steps, offsets, stops)
    span = 4.0 * (float(np.abs(day_s).max() + running.max() + np.abs(begin).max()) + 1e6)
    floor = np.where(is_next, begin, -span / 4)
    floor = np.where(holds, np.maximum(floor, day_s + t.dep_s[i] - running), floor)
    departure = running + _group_cummax(floor, group, span)
    before = np.where(is_next, begin, np.roll(departure, 1))
    arrival = np.maximum(before + travel, 0.0)
    departure = np.maximum(departure, arrival)

    horizon = np.maximum(arrival - np.maximum(t0, 0.0), 0.0)
    arrival_var = _group_cumsum(travel_var + dwell_var, offsets, stops) - dwell_var
    sigma = np.sqrt(np.maximum(arrival_var, 0.0) + (HORIZON_CV * horizon) ** 2)
    early = np.maximum(arrival - Z90 * sigma, 0.0)
    late = arrival + Z90 * sigma
    return _stop_etas(
        t,
        i,
        (day_s * 1000.0).round().astype(np.int64) + now_ms,
        (arrival, departure, early, late),
        now_ms,
        offsets,
        stops,
    )


def _stop_etas(
    t: _StopTable,
    i: Ints,
    origin_ms: Ints,
    seconds: tuple[Floats, Floats, Floats, Floats],
    now_ms: int,
    offsets: Ints,
    stops: Ints,
) -> list[list[StopEta]]:
    """The StopEta records, split back per request."""
    arrival, departure, early, late = (np.rint(s * 1000.0).astype(np.int64) + now_ms for s in seconds)
    rows = zip(
        i.tolist(),
        (origin_ms + t.arr_s[i] * 1000).tolist(),
        (origin_ms + t.dep_s[i] * 1000).tolist(),
        arrival.tolist(),
        departure.tolist(),
        early.tolist(),
        late.tolist(),
        strict=True,
    )
    sequences, stop_ids = t.sequences, t.stop_ids
    flat = [
        StopEta(
            stop_sequence=sequences[k],
            stop_id=stop_ids[k],
            scheduled_arrival_ms=sa,
            scheduled_departure_ms=sd,
            arrival_ms=a,
            departure_ms=d,
            arrival_early_ms=lo,
            arrival_late_ms=hi,
        )
        for k, sa, sd, a, d, lo, hi in rows
    ]
    ends = (offsets + stops).tolist()
    return [flat[b:e] for b, e in zip(offsets.tolist(), ends, strict=True)]
