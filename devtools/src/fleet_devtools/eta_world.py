"""Buses driving a feed's trips with known truth, for ``fleet bench eta``.

Buses drive the trip instances of each service day (``TripInstance`` from
the network's calendar) day after day. What makes their times vary, all
drawn from one seeded generator so a seed replays exactly:

* congestion by segment and hour of week: each segment has an urban share
  (near Alger, Oran, Constantine…) that slows it at the morning and evening
  peaks, less on the Algerian weekend (Friday, Saturday);
* one day's conditions per segment, each driver's pace, and speed that
  wanders along the road (an AR(1) walk every ``PIECE_M``: trucks, hills,
  towns), with police checkpoints where some buses are stopped;
* incidents: on some days a segment is blocked at one point for 20 to 40
  minutes and buses reaching it wait;
* dwell: a few minutes at most stations, a long meal stop (about 30 min,
  longer than its 20 scheduled) at some; a bus does not leave a stop with
  scheduled dwell before its scheduled departure; late starts from the
  terminus;
* GPS noise on the observed distance along the shape.

Free-flow times are the schedule's over ``SCHEDULE_PADDING``, so the
timetable is right on average and wrong at the peaks and on incident days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np

from fleet_processing.plan import TripInstance, TripPlan

SCHEDULE_PADDING = 1.12
LOCAL_OFFSET_S = 3600
"""Algeria keeps UTC+1 all year (Africa/Algiers)"""
GPS_NOISE_M = 8.0
PIECE_M = 2500.0
"""speed changes every this many metres or so"""
WOBBLE_SIGMA = 0.10
WOBBLE_RHO = 0.6
"""log speed factor from piece to piece: an AR(1) walk (trucks, hills, towns, roadworks)"""
WEEKEND = (4, 5)
"""Friday and Saturday (Monday is 0)"""

_URBAN = {"ALG-CAR": 1.0, "ORN": 0.8, "CST": 0.7, "BLI": 0.6, "SET": 0.5, "BJA": 0.5, "TLM": 0.4, "MED": 0.3}
"""how much the peaks slow the segments from and to these stations (the demo feed's ids); others 0.1"""


@dataclass(frozen=True, slots=True)
class Truth:
    """What one bus really did on one trip instance."""

    instance: TripInstance
    bus: str
    arrived_ms: np.ndarray
    departed_ms: np.ndarray
    knots_ms: np.ndarray
    """times of the piecewise-linear path …"""
    knots_m: np.ndarray
    """… and the distances along the shape at them"""

    def distance_at(self, time_ms: int) -> float:
        return float(np.interp(time_ms, self.knots_ms, self.knots_m))


def _peak(local_hour: float, weekday: int) -> float:
    morning = math.exp(-(((local_hour - 8.0) / 1.2) ** 2))
    evening = 0.8 * math.exp(-(((local_hour - 17.5) / 1.5) ** 2))
    midday = 0.3 * math.exp(-(((local_hour - 12.5) / 1.5) ** 2))
    return (morning + evening + midday) * (0.4 if weekday in WEEKEND else 1.0)


class World:
    """The network's conditions, day by day, and the buses driving it."""

    def __init__(self, plans: list[TripPlan], days: list[date], seed: int):
        self.plans = plans
        self.days = days
        self.rng = np.random.default_rng([seed, 2])
        segments = sorted({(a, b) for p in plans for a, b in zip(p.stop_ids, p.stop_ids[1:], strict=False)})
        self.urban = {
            (a, b): max(_URBAN.get(a, 0.1), _URBAN.get(b, 0.1)) * self.rng.uniform(0.7, 1.0)
            for a, b in segments
        }
        self.day_factor = {
            (day, seg): float(self.rng.lognormal(0.0, 0.05)) for day in self.days for seg in segments
        }
        self.incidents: dict[tuple[date, tuple[str, str]], tuple[float, int, int]] = {}
        """day and segment → (fraction along it, start ms, end ms)"""
        for day in self.days:
            if self.rng.random() < 0.4:
                seg = segments[int(self.rng.integers(len(segments)))]
                local_midnight = (
                    datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() - LOCAL_OFFSET_S
                )
                start = int((local_midnight + self.rng.uniform(6, 19) * 3600) * 1000)
                self.incidents[day, seg] = (
                    float(self.rng.uniform(0.2, 0.8)),
                    start,
                    start + int(self.rng.uniform(20, 40) * 60_000),
                )
        stations = sorted({s for p in plans for s in p.stop_ids})
        self.meal = {s: float(self.rng.uniform(26, 34) * 60) for s in stations if self._is_meal_stop(s)}
        self.short_dwell = {s: float(self.rng.uniform(150, 270)) for s in stations}
        self.checkpoints = {
            seg: float(self.rng.uniform(0.1, 0.9)) for seg in segments if self.rng.random() < 0.5
        }
        """police checkpoints (barrages) at a fixed point of some segments, where 40 % of buses stop"""

    def _is_meal_stop(self, stop: str) -> bool:
        return any(
            p.departure_s[k] - p.arrival_s[k] >= 900
            for p in self.plans
            for k, s in enumerate(p.stop_ids)
            if s == stop
        )

    def _congestion(self, seg: tuple[str, str], time_ms: float) -> float:
        local = datetime.fromtimestamp(time_ms / 1000 + LOCAL_OFFSET_S, UTC)
        hour = local.hour + local.minute / 60
        return 1.0 + 0.9 * self.urban[seg] * _peak(hour, local.weekday())

    def drive(self, instance: TripInstance, bus: str) -> Truth:
        """Simulate one bus on one trip instance."""
        plan, rng = instance.plan, self.rng
        day = instance.service_date
        sched_arr, sched_dep = instance.arrival_ms(), instance.departure_ms()
        pace = rng.lognormal(0.0, 0.04)
        n = len(plan.stop_ids)
        arrived, departed = np.zeros(n, np.int64), np.zeros(n, np.int64)
        t = float(sched_dep[0]) + rng.exponential(120.0) * 1000
        arrived[0], departed[0] = int(sched_arr[0]), int(t)
        knots_t, knots_d = [float(arrived[0]), t], [float(plan.stop_dist_m[0])] * 2
        wobble = 0.0
        for k in range(1, n):
            seg = (plan.stop_ids[k - 1], plan.stop_ids[k])
            d0, d1 = float(plan.stop_dist_m[k - 1]), float(plan.stop_dist_m[k])
            pieces = max(3, round((d1 - d0) / PIECE_M))
            free_s = (sched_arr[k] - sched_dep[k - 1]) / 1000 / SCHEDULE_PADDING / pieces
            slow = self._congestion(seg, t) * self.day_factor[day, seg] * pace
            incident = self.incidents.get((day, seg))
            checkpoint = self.checkpoints.get(seg)
            for piece in range(pieces):
                a, b = d0 + (d1 - d0) * piece / pieces, d0 + (d1 - d0) * (piece + 1) / pieces
                wobble = WOBBLE_RHO * wobble + rng.normal(0.0, WOBBLE_SIGMA * math.sqrt(1 - WOBBLE_RHO**2))
                piece_s = free_s * slow * math.exp(wobble)
                for stop_at, start_ms, end_ms in self._stops_in(incident, checkpoint, d0, d1, a, b):
                    reach = t + piece_s * 1000 * (stop_at - a) / max(b - a, 1.0)
                    if start_ms is None:  # a checkpoint: stopped or waved through
                        wait = rng.lognormal(math.log(45.0), 0.5) * 1000 if rng.random() < 0.4 else 0.0
                    else:
                        wait = end_ms - reach if start_ms <= reach < end_ms else 0.0
                    if wait:
                        knots_t += [reach, reach + wait]
                        knots_d += [stop_at, stop_at]
                        t += wait
                t += piece_s * 1000
                knots_t.append(t)
                knots_d.append(b)
            arrived[k] = int(t)
            if k < n - 1:
                stop = plan.stop_ids[k]
                mean = self.meal.get(stop, self.short_dwell[stop])
                t += mean * rng.lognormal(0.0, 0.15) * 1000
                if sched_dep[k] > sched_arr[k]:  # a timepoint: not left before its departure
                    t = max(t, float(sched_dep[k]))
            departed[k] = int(t)
            knots_t.append(t)
            knots_d.append(d1)
        return Truth(instance, bus, arrived, departed, np.array(knots_t), np.array(knots_d))

    @staticmethod
    def _stops_in(
        incident: tuple[float, int, int] | None,
        checkpoint: float | None,
        d0: float,
        d1: float,
        a: float,
        b: float,
    ) -> list[tuple[float, int | None, int | None]]:
        """Where on piece [a, b) of segment [d0, d1] the bus may have to stop: incident, checkpoint."""
        found: list[tuple[float, int | None, int | None]] = []
        for share, start, end in ([incident] if incident else []) + (
            [(checkpoint, None, None)] if checkpoint else []
        ):
            at = d0 + (d1 - d0) * share
            if a <= at < b:
                found.append((at, start, end))
        return found
