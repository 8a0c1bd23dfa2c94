"""``fleet bench eta``: ETA accuracy against simulated truth, through the real history and ETA code.

Days of history first: simulated buses (``fleet_devtools.eta_world``) drive
every trip; their stop visits go into the real database with
``fleet_store.history.write_visits`` and are rolled up with
``refresh_segment_times``. Then test days are replayed minute by minute:
every bus on a trip gives one request per fix (distance along the shape with
GPS noise, smoothed speed over two minutes, delay against the schedule, next
stop); all buses of one minute are one ``predict_batch`` call, with the
history loaded by ``load_segment_history`` and refreshed every few simulated
minutes from the visits completed so far, as ingest would.

Every prediction of a stop not reached yet, up to 180 minutes ahead, is
scored against when the bus really got there, beside two baselines on the
same requests: the schedule with the current delay propagated and slack
absorbed at timepoints (OneBusAway), and distance remaining over the current
speed. Buckets are by the true time to arrival. Early means the bus came
before the prediction (a rider would miss it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg
import msgspec
import numpy as np

from fleet_devtools.bench_agent import Machine, Target, machine, target_lines
from fleet_devtools.eta_world import GPS_NOISE_M, Truth, World, synthetic_plans
from fleet_processing.eta import EtaRequest, SegmentHistory, predict_batch
from fleet_schemas.trips import StopEta, StopVisit
from fleet_store.history import load_segment_history, refresh_segment_times, write_visits

Report = Callable[[str], None]
FIRST_DAY = date(2026, 10, 5)
"""a Monday; fixed so a seed replays the same week days"""
FEED_ID = 1
SPEED_WINDOW_S = 120
"""the smoothed speed: distance covered over this much time"""
SPEED_FLOOR_MPS = 5.0
"""the speed baseline's speed when the bus is (nearly) stopped"""
BUCKETS_MIN = ((0, 3), (3, 6), (6, 10), (10, 15), (15, 30), (30, 60), (60, 180))
TRANSIT_WINDOWS_S = {(0, 3): (30, 90), (3, 6): (60, 150), (6, 10): (60, 210), (10, 15): (90, 270)}
"""the Transit app's ETA-accuracy windows: seconds early, seconds late"""
LONG_WINDOW = (0.10, 0.20)
"""beyond 15 min: within 10 % of the time to arrival early and 20 % late"""
INSIDE_TARGET = 0.85
MAE_GAIN_TARGET = 0.30
"""at 30-60 and 60-180 min: MAE at least this much below the better baseline"""


class Bucket(msgspec.Struct, frozen=True):
    horizon: str
    predictions: int
    eta_mae_s: float
    eta_early: float
    schedule_mae_s: float
    schedule_early: float
    speed_mae_s: float
    speed_early: float
    window: str
    eta_inside: float
    schedule_inside: float
    speed_inside: float
    band_coverage: float
    """share of arrivals between the 10th and 90th percentile (0.8 when the band is calibrated)"""


class EtaBenchResult(msgspec.Struct):
    seed: int
    history_days: int
    test_days: int
    trips: int
    visits_stored: int
    segment_rows: int
    requests: int
    predictions: int
    invariant_violations: int
    predict_us_per_request: float
    predict_us_per_stop: float
    """predict_batch alone on one batch of every bus of the busiest minute, repeated to ``big_batch``"""
    big_batch: int
    buckets: list[Bucket]
    machine: Machine
    targets: list[Target] = msgspec.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.targets)


@dataclass(slots=True)
class _Scored:
    """Per prediction: true time to arrival, errors (predicted minus true) and whether inside the band."""

    horizon_s: list[float]
    eta: list[float]
    schedule: list[float]
    speed: list[float]
    banded: list[bool]


def _observe(truth: Truth, now_ms: int, rng: np.random.Generator) -> EtaRequest:
    """What progress would report for this bus at ``now_ms``: noisy distance, smoothed speed, delay."""
    inst = truth.instance
    plan = inst.plan
    true_m = truth.distance_at(now_ms)
    before_m = truth.distance_at(now_ms - SPEED_WINDOW_S * 1000)
    noise = rng.normal(0.0, GPS_NOISE_M, 2)
    distance = float(np.clip(true_m + noise[0], 0.0, plan.shape.length_m))
    speed = max((true_m + noise[0] - before_m - noise[1]) / SPEED_WINDOW_S, 0.0)
    nxt = int(np.searchsorted(truth.arrived_ms, now_ms, side="right"))
    dwelling = 0 < nxt < len(plan.stop_ids) and now_ms < truth.departed_ms[nxt - 1]
    sched_arr, sched_dep = inst.arrival_ms(), inst.departure_ms()
    if dwelling or nxt == 0:
        at_stop = max(nxt - 1, 0)
        delay_s = max(now_ms - sched_dep[at_stop], now_ms - sched_arr[at_stop], 0) / 1000
        distance = float(plan.stop_dist_m[at_stop])
    else:
        d0, d1 = plan.stop_dist_m[nxt - 1], plan.stop_dist_m[nxt]
        share = float(np.clip((distance - d0) / max(d1 - d0, 1.0), 0.0, 1.0))
        expected = sched_dep[nxt - 1] + share * (sched_arr[nxt] - sched_dep[nxt - 1])
        delay_s = (now_ms - expected) / 1000
        distance = float(np.clip(distance, d0, d1))
    return EtaRequest(inst, distance, now_ms, speed, delay_s, next_stop=nxt, dwelling=bool(dwelling))


def schedule_baseline(request: EtaRequest, now_ms: int) -> list[int]:
    """OneBusAway's: the current delay carried to every stop; slack at timepoints absorbs lateness."""
    inst, k0 = request.instance, request.next_stop
    sched_arr, sched_dep = inst.arrival_ms(), inst.departure_ms()
    delay_ms = request.delay_s * 1000
    out, floor = [], now_ms
    for k in range(k0, len(sched_arr)):
        arrival = max(int(sched_arr[k] + delay_ms), floor)
        out.append(arrival)
        floor = arrival
        if sched_dep[k] > sched_arr[k]:
            delay_ms = max(arrival + 20_000, sched_dep[k]) - sched_dep[k]
    return out


def speed_baseline(request: EtaRequest, now_ms: int) -> list[int]:
    """Distance remaining over the current speed (floored when the bus is stopped)."""
    speed = max(request.speed_mps or 0.0, SPEED_FLOOR_MPS)
    remaining = request.instance.plan.stop_dist_m[request.next_stop :] - request.distance_m
    return [now_ms + int(max(r, 0.0) / speed * 1000) for r in remaining]


def _violations(request: EtaRequest, etas: Sequence[StopEta], now_ms: int) -> int:
    plan = request.instance.plan
    bad = int([e.stop_sequence for e in etas] != plan.stop_sequences[request.next_stop :].tolist())
    arrivals = [e.arrival_ms for e in etas]
    bad += int(arrivals != sorted(arrivals))
    bad += sum(not (now_ms <= e.arrival_early_ms <= e.arrival_ms <= e.arrival_late_ms) for e in etas)
    return bad


async def _fresh_history(conn: asyncpg.Connection, operator: str) -> SegmentHistory:
    await refresh_segment_times(conn)
    rows = await load_segment_history(conn, operator)
    return SegmentHistory(operator, rows.segments, rows.dwells)


async def _clear(conn: asyncpg.Connection, operator: str) -> None:
    await conn.execute(
        "DELETE FROM stop_visits_pending WHERE visit_id IN (SELECT id FROM stop_visits WHERE operator = $1)",
        operator,
    )
    for table in ("stop_visits", "segment_times", "dwell_times"):
        await conn.execute(f"DELETE FROM {table} WHERE operator = $1", operator)  # noqa: S608 - constant names


def _bucket_table(scored: _Scored) -> list[Bucket]:
    horizon = np.array(scored.horizon_s)
    errors = {name: np.array(getattr(scored, name)) for name in ("eta", "schedule", "speed")}
    banded = np.array(scored.banded)
    buckets = []
    for low, high in BUCKETS_MIN:
        chosen = (horizon >= low * 60) & (horizon < high * 60)
        count = int(chosen.sum())
        if (low, high) in TRANSIT_WINDOWS_S:
            early_s, late_s = TRANSIT_WINDOWS_S[low, high]
            early_lim, late_lim = np.full(count, early_s), np.full(count, late_s)
            window = f"{early_s} s early to {late_s} s late"
        else:
            early_lim, late_lim = LONG_WINDOW[0] * horizon[chosen], LONG_WINDOW[1] * horizon[chosen]
            window = f"{LONG_WINDOW[0]:.0%} early to {LONG_WINDOW[1]:.0%} late"
        stats: dict[str, float] = {}
        for name, err in errors.items():
            e = err[chosen]
            stats[f"{name}_mae_s"] = float(np.abs(e).mean()) if count else float("nan")
            stats[f"{name}_early"] = float((e > 0).mean()) if count else float("nan")
            inside = (e <= early_lim) & (-e <= late_lim)
            stats[f"{name}_inside"] = float(inside.mean()) if count else float("nan")
        buckets.append(
            Bucket(
                horizon=f"{low}-{high} min",
                predictions=count,
                window=window,
                band_coverage=float(banded[chosen].mean()) if count else float("nan"),
                **{k: round(v, 4) for k, v in stats.items()},
            )
        )
    return buckets


def judge(result: EtaBenchResult) -> list[Target]:
    """Beat both baselines everywhere, by 30 % at 30-180 min; 85 % inside the windows up to 15 min."""
    targets = [
        Target("invariants", result.invariant_violations, "violations", "0", result.invariant_violations == 0)
    ]
    for b in result.buckets:
        best = min(b.schedule_mae_s, b.speed_mae_s)
        gain = 1.0 - b.eta_mae_s / best if best > 0 else 0.0
        long = b.horizon in ("30-60 min", "60-180 min")
        goal = f">= {MAE_GAIN_TARGET:.0%} below baselines" if long else "below both baselines"
        passed = b.predictions > 0 and (gain >= MAE_GAIN_TARGET if long else gain > 0)
        targets.append(Target(f"MAE {b.horizon}", round(b.eta_mae_s, 1), f"s ({gain:+.0%})", goal, passed))
        if b.window.endswith("s late"):
            targets.append(
                Target(
                    f"in {b.horizon}",
                    round(b.eta_inside, 3),
                    "share in window",
                    f">= {INSIDE_TARGET}",
                    b.eta_inside >= INSIDE_TARGET,
                )
            )
    return targets


def _time_predict(
    requests: list[EtaRequest], history: SegmentHistory, now_ms: int, size: int
) -> tuple[float, float]:
    """µs per request and per stop of one ``predict_batch`` call on ``size`` requests, best of three."""
    batch = (requests * (size // max(len(requests), 1) + 1))[:size]
    best = float("inf")
    stops = 0
    for _ in range(3):
        started = time.perf_counter()
        out = predict_batch(batch, history, now_ms)
        best = min(best, time.perf_counter() - started)
        stops = sum(len(o) for o in out)
    return best * 1e6 / len(batch), best * 1e6 / max(stops, 1)


async def run_eta_bench(
    database_url: str,
    report: Report,
    *,
    seed: int = 1,
    history_days: int = 14,
    test_days: int = 3,
    every_s: int = 60,
    refresh_min: int = 10,
    headway_min: int = 60,
    big_batch: int = 5_000,
) -> EtaBenchResult:
    operator = f"bench-eta-{seed}"
    plans = synthetic_plans(seed, headway_min)
    world = World(plans, FIRST_DAY, history_days + test_days, seed)
    noise = np.random.default_rng([seed, 3])
    report(
        f"eta bench: {len(plans)} trips a day on {len({p.route_id for p in plans})} lines,"
        f" {history_days} days of history then {test_days} test days (seed {seed})"
    )
    conn = await asyncpg.connect(database_url)
    try:
        await _clear(conn, operator)
        stored = 0
        for d, day in enumerate(world.days[:history_days]):
            visits: list[StopVisit] = []
            for inst in world.instances(day):
                visits += world.drive(inst, f"bus-{inst.plan.trip_id}").visits(operator, FEED_ID)
            stored += await write_visits(conn, visits)
            report(f"history day {d + 1}/{history_days} ({day:%a %d %b}): {len(visits)} stop visits stored")
        history = await _fresh_history(conn, operator)
        report(f"history rolled up: {history.segments} segments")
        scored = _Scored([], [], [], [], [])
        requests_count = violations = 0
        busiest: tuple[list[EtaRequest], int] = ([], 0)
        trips = len(plans) * history_days
        for d, day in enumerate(world.days[history_days:]):
            truths = [world.drive(inst, f"bus-{inst.plan.trip_id}") for inst in world.instances(day)]
            trips += len(truths)
            pending = sorted(
                (v for truth in truths for v in truth.visits(operator, FEED_ID)), key=lambda v: v.departed_ms
            )
            start = min(int(t.departed_ms[0]) for t in truths)
            end = max(int(t.arrived_ms[-1]) for t in truths)
            next_refresh = start
            for now_ms in range(start, end, every_s * 1000):
                if now_ms >= next_refresh:
                    done = [v for v in pending if v.departed_ms <= now_ms]
                    pending = pending[len(done) :]
                    stored += await write_visits(conn, done)
                    history = await _fresh_history(conn, operator)
                    next_refresh = now_ms + refresh_min * 60_000
                active = [t for t in truths if t.departed_ms[0] <= now_ms < t.arrived_ms[-1]]
                batch = [_observe(t, now_ms, noise) for t in active]
                predicted_at = now_ms + 500
                results = predict_batch(batch, history, predicted_at)
                if len(batch) > len(busiest[0]):
                    busiest = (batch, predicted_at)
                requests_count += len(batch)
                for truth, request, etas in zip(active, batch, results, strict=True):
                    violations += _violations(request, etas, predicted_at)
                    schedule = schedule_baseline(request, predicted_at)
                    speed = speed_baseline(request, predicted_at)
                    for j, eta in enumerate(etas):
                        actual = int(truth.arrived_ms[request.next_stop + j])
                        horizon = actual - now_ms
                        if horizon > 180 * 60_000:
                            break
                        scored.horizon_s.append(horizon / 1000)
                        scored.eta.append((eta.arrival_ms - actual) / 1000)
                        scored.schedule.append((schedule[j] - actual) / 1000)
                        scored.speed.append((speed[j] - actual) / 1000)
                        scored.banded.append(eta.arrival_early_ms <= actual <= eta.arrival_late_ms)
                if (now_ms - start) % 3_600_000 < every_s * 1000:
                    report(
                        f"test day {d + 1}/{test_days} ({day:%a %d %b}) {(now_ms - start) // 3_600_000 + 1}h:"
                        f" {len(batch)} buses on trips, {len(scored.eta):,} predictions scored"
                    )
        segment_rows = int(
            await conn.fetchval("SELECT count(*) FROM segment_times WHERE operator = $1", operator)
        )
        await _clear(conn, operator)
    finally:
        await conn.close()
    per_request, per_stop = _time_predict(busiest[0], history, busiest[1], big_batch)
    result = EtaBenchResult(
        seed=seed,
        history_days=history_days,
        test_days=test_days,
        trips=trips,
        visits_stored=stored,
        segment_rows=segment_rows,
        requests=requests_count,
        predictions=len(scored.eta),
        invariant_violations=violations,
        predict_us_per_request=round(per_request, 2),
        predict_us_per_stop=round(per_stop, 3),
        big_batch=big_batch,
        buckets=_bucket_table(scored),
        machine=machine(),
    )
    result.targets = judge(result)
    return result


def summary_text(result: EtaBenchResult) -> str:
    lines = [
        f"{result.trips:,} trips simulated, {result.visits_stored:,} stop visits stored,"
        f" {result.segment_rows} segment-hour rows; {result.requests:,} requests, {result.predictions:,}"
        f" predictions scored; predict_batch {result.predict_us_per_request} µs/request,"
        f" {result.predict_us_per_stop} µs/stop (batch of {result.big_batch:,})",
        "",
        "| horizon | n | ETA MAE | early | schedule+delay MAE | early | dist/speed MAE | early"
        " | window | ETA in | sched in | speed in | p10-p90 holds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for b in result.buckets:
        lines.append(
            f"| {b.horizon} | {b.predictions:,} | {b.eta_mae_s:.0f} s | {b.eta_early:.0%}"
            f" | {b.schedule_mae_s:.0f} s | {b.schedule_early:.0%}"
            f" | {b.speed_mae_s:.0f} s | {b.speed_early:.0%}"
            f" | {b.window} | {b.eta_inside:.0%} | {b.schedule_inside:.0%} | {b.speed_inside:.0%}"
            f" | {b.band_coverage:.0%} |"
        )
    return "\n".join([*lines, "", *target_lines(result.targets)])
