"""``fleet bench eta``: ETA accuracy against simulated truth, through the real import, progress and ETA code.

The demo feed (or any GTFS feed) is imported with the real importer
(``fleet_cli.gtfs_import``: read, check, store, activate), read back with
``load_feed`` and built into a ``Network``. Simulated buses (``fleet_devtools.eta_world``) drive its trips,
reporting a fix every ``every_s`` seconds with GPS noise and the driver's
trip_id; ``advance_batch`` turns the fixes of each moment into progress,
delay, smoothed speed and stop visits, exactly as ingest does. Days of
history first: their visits go into the real database (``write_visits``) and
are rolled up with ``refresh_segment_times``. Then test days: every bus's
progress becomes an ``EtaRequest`` and all buses of one moment are one
``predict_batch`` call, with the history loaded by ``load_segment_history``
and refreshed every ``refresh_min`` simulated minutes from the visits stored
so far, as ingest would.

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
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import msgspec
import numpy as np

from fleet_cli.gtfs_import import read_source, store_version
from fleet_devtools.bench_agent import Machine, Target, machine, target_lines
from fleet_devtools.demo_feed import feed_dir
from fleet_devtools.eta_world import GPS_NOISE_M, Truth, World
from fleet_devtools.synthetic_feed import fix_at
from fleet_processing.eta import EtaRequest, SegmentHistory, predict_batch
from fleet_processing.network import Network, build_network
from fleet_processing.progress import BusFixes, BusProgress, FixPoint, advance_batch
from fleet_processing.service_day import day_instances
from fleet_schemas.gtfs import Shape
from fleet_schemas.trips import StopEta, StopVisit
from fleet_store.errors import FeedSourceError
from fleet_store.gtfs import load_feed
from fleet_store.history import load_segment_history, refresh_segment_times, write_visits

Report = Callable[[str], None]
FIRST_DAY = date(2026, 10, 5)
"""a Monday; fixed so a seed replays the same week days"""
BEFORE_DEPARTURE_S = 300
"""a bus reports from its first stop this long before it leaves, and from its last this long after"""
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
    feed: str
    seed: int
    history_days: int
    test_days: int
    trips: int
    visits_stored: int
    segment_rows: int
    requests: int
    """one per bus on its trip per fix of the test days"""
    off_trip: int
    """fixes of a bus on its trip that progress had not (yet) on that trip instance: no request"""
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


async def _import_feed(
    conn: asyncpg.Connection, operator: str, path: Path
) -> tuple[Network, dict[str, Shape]]:
    """The feed at ``path`` through ``fleet gtfs import``'s two steps, read back; its network and shapes."""
    feed, report = read_source(path, FIRST_DAY)
    if feed is None:
        raise FeedSourceError(f"{path}: the importer found no usable feed")
    feed_id, _ = await store_version(conn, operator, feed, report)
    stored = await load_feed(conn, feed_id)
    return build_network(stored, operator=operator, feed_id=feed_id), {s.shape_id: s for s in stored.shapes}


@dataclass(slots=True)
class _Buses:
    """One service day's buses: their truth, the progress ingest would keep for each, their visits."""

    network: Network
    shapes: dict[str, Shape]
    truths: list[Truth]
    saved: dict[str, BusProgress]
    rng: np.random.Generator
    visits: list[StopVisit]

    @property
    def span_ms(self) -> tuple[int, int]:
        margin = BEFORE_DEPARTURE_S * 1000
        return (
            min(int(t.departed_ms[0]) for t in self.truths) - margin,
            max(int(t.arrived_ms[-1]) for t in self.truths) + margin,
        )

    def advance(self, now_ms: int) -> tuple[list[Truth], list[EtaRequest | None]]:
        """Every bus around its trip reports a fix; progress takes them all as one batch."""
        margin = BEFORE_DEPARTURE_S * 1000
        active = [t for t in self.truths if t.departed_ms[0] - margin <= now_ms <= t.arrived_ms[-1] + margin]
        items = []
        for t in active:
            lat, lon = fix_at(
                self.shapes[t.instance.plan.shape.shape_id], t.distance_at(now_ms), GPS_NOISE_M, self.rng
            )
            fix = FixPoint(now_ms, lat, lon, accuracy_m=GPS_NOISE_M, trip_id=t.instance.plan.trip_id)
            items.append(BusFixes(t.bus, self.saved.get(t.bus), [fix]))
        results = advance_batch(self.network, items, now_ms)
        for r in results:
            self.saved[r.bus] = r.progress
            self.visits += r.visits
        return active, [EtaRequest.from_progress(r, now_ms) for r in results]

    def take_visits(self) -> list[StopVisit]:
        taken, self.visits = self.visits, []
        return taken


async def run_eta_bench(
    database_url: str,
    report: Report,
    *,
    feed: Path | None = None,
    seed: int = 1,
    history_days: int = 14,
    test_days: int = 3,
    every_s: int = 30,
    refresh_min: int = 10,
    big_batch: int = 5_000,
) -> EtaBenchResult:
    operator = f"bench-eta-{seed}"
    feed = feed or feed_dir()
    noise = np.random.default_rng([seed, 3])
    conn = await asyncpg.connect(database_url)
    try:
        await _clear(conn, operator)
        network, shapes = await _import_feed(conn, operator, feed)
        days = [FIRST_DAY + timedelta(days=d) for d in range(history_days + test_days)]
        world = World(network.plans, days, seed)
        report(
            f"eta bench: feed {feed.name} imported ({len(network.plans)} trips, operator {operator}),"
            f" {history_days} days of history, {test_days} test days, a fix every {every_s} s (seed {seed})"
        )
        saved: dict[str, BusProgress] = {}
        stored = trips = 0
        for d, day in enumerate(days[:history_days]):
            buses = _buses(network, shapes, world, day, saved, noise)
            trips += len(buses.truths)
            start, end = buses.span_ms
            for now_ms in range(start, end, every_s * 1000):
                buses.advance(now_ms)
            visits = buses.take_visits()
            stored += await write_visits(conn, visits)
            report(f"history day {d + 1}/{history_days} ({day:%a %d %b}): {len(visits)} stop visits stored")
        history = await _fresh_history(conn, operator)
        report(f"history rolled up: {history.segments} segments")
        scored = _Scored([], [], [], [], [])
        requests_count = violations = off_trip = 0
        busiest: tuple[list[EtaRequest], int] = ([], 0)
        for d, day in enumerate(days[history_days:]):
            buses = _buses(network, shapes, world, day, saved, noise)
            trips += len(buses.truths)
            start, end = buses.span_ms
            next_refresh = start
            for now_ms in range(start, end, every_s * 1000):
                if now_ms >= next_refresh:
                    stored += await write_visits(conn, buses.take_visits())
                    history = await _fresh_history(conn, operator)
                    next_refresh = now_ms + refresh_min * 60_000
                active, maybe = buses.advance(now_ms)
                on_trip = [
                    (t, r)
                    for t, r in zip(active, maybe, strict=True)
                    if t.departed_ms[0] <= now_ms < t.arrived_ms[-1]
                ]
                pairs = [(t, r) for t, r in on_trip if r is not None and r.instance.key == t.instance.key]
                off_trip += len(on_trip) - len(pairs)
                batch = [r for _, r in pairs]
                predicted_at = now_ms + 500
                results = predict_batch(batch, history, predicted_at)
                if len(batch) > len(busiest[0]):
                    busiest = (batch, predicted_at)
                requests_count += len(batch)
                for (truth, request), etas in zip(pairs, results, strict=True):
                    violations += _violations(request, etas, predicted_at)
                    _score(scored, truth, request, etas, now_ms, predicted_at)
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
        feed=feed.name,
        seed=seed,
        history_days=history_days,
        test_days=test_days,
        trips=trips,
        visits_stored=stored,
        segment_rows=segment_rows,
        requests=requests_count,
        off_trip=off_trip,
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


def _buses(
    network: Network,
    shapes: dict[str, Shape],
    world: World,
    day: date,
    saved: dict[str, BusProgress],
    rng: np.random.Generator,
) -> _Buses:
    truths = [world.drive(inst, f"bus-{inst.plan.trip_id}") for inst in day_instances(network, day).instances]
    return _Buses(network, shapes, truths, saved, rng, [])


def _score(
    scored: _Scored, truth: Truth, request: EtaRequest, etas: list[StopEta], now_ms: int, predicted_at: int
) -> None:
    """Each prediction up to 180 min ahead, with both baselines on the same request."""
    schedule = schedule_baseline(request, predicted_at)
    speed = speed_baseline(request, predicted_at)
    for j, eta in enumerate(etas):
        actual = int(truth.arrived_ms[request.next_stop + j])
        horizon = actual - now_ms
        if horizon > 180 * 60_000:
            return
        if horizon < 0:
            continue  # progress has not seen it yet, but the bus is there already: not a prediction
        scored.horizon_s.append(horizon / 1000)
        scored.eta.append((eta.arrival_ms - actual) / 1000)
        scored.schedule.append((schedule[j] - actual) / 1000)
        scored.speed.append((speed[j] - actual) / 1000)
        scored.banded.append(eta.arrival_early_ms <= actual <= eta.arrival_late_ms)


def summary_text(result: EtaBenchResult) -> str:
    lines = [
        f"feed {result.feed}: {result.trips:,} trips simulated, {result.visits_stored:,} stop visits stored,"
        f" {result.segment_rows} segment-hour rows; {result.requests:,} requests ({result.off_trip:,} fixes"
        f" not yet on their trip), {result.predictions:,}"
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
