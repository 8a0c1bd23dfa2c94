"""``fleet bench processing``: trip progress (projection, progress, delay) in fixes per second on one core.

Pure code, no server, timed in CPU seconds of the thread
(``time.thread_time``: other processes sharing the core do not count) and
in wall-clock seconds. A demo-like feed (``synthetic_feed.demo_like_feed``:
five Algerian intercity lines both ways, a vertex every 200 m, a departure
every 30 minutes) is built into a network, buses drive trips running at
noon with a delay of their own and GPS noise, and ``advance_batch`` is timed
on batches shaped as ingest hands them: many buses with a few fixes each,
and many buses with one fix each. Between batches each bus's state goes
through msgpack as it does through Redis (outside the timing, measured on
its own). Buses warm up first, as in a running ingest, so the timed batches
hold the usual mix: most buses assigned, a few dwelling or not yet sure.
Progress is checked against the truth (distance along and delay) so the
figure is for right answers.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from collections.abc import Callable
from datetime import date

import msgspec
import numpy as np

from fleet_devtools.synthetic_feed import demo_like_feed, fix_at, truth_along
from fleet_ingest.assess import Accepted
from fleet_ingest.trips import OperatorModel, SavedBus, follow
from fleet_processing.eta import SegmentHistory
from fleet_processing.network import Network, build_network
from fleet_processing.plan import TripInstance
from fleet_processing.progress import (
    PROGRESS_DECODER,
    PROGRESS_ENCODER,
    BusFixes,
    BusProgress,
    FixPoint,
    advance_batch,
)
from fleet_processing.service_day import instances_between, origin_ms
from fleet_schemas import Frame
from fleet_schemas.gtfs import Feed, Shape, StopTime

TARGET_FPS = 200_000.0
SERVICE_DATE = date(2026, 12, 1)
TZ = "Africa/Algiers"
FIX_EVERY_S = 10
NOISE_M = 10.0
WARM_UP_S = 900
"""longer than a dwell (300 s), so every bus has moved along its trip, as in a running ingest"""

OPERATOR = "bench"
Report = Callable[[str], None]


class Scenario(msgspec.Struct, frozen=True):
    name: str
    buses: int
    fixes_per_bus: int
    batches: int
    fixes: int
    seconds: float
    fixes_per_s: float
    """all timed fixes over the CPU time this thread spent in advance_batch (one core)"""
    wall_fixes_per_s: float
    """the same over wall-clock time (lower when other processes share the core)"""
    trip_step_fixes_per_s: float
    """ingest's whole trip step on the same fixes (``fleet_ingest.trips.follow``: saved states decoded,
    progress, the ETA of every upcoming stop, trip updates, states encoded), per CPU second"""
    median_batch_fixes_per_s: float
    assigned: int
    candidate: int
    unassigned: int
    """states after the last batch"""
    along_error_m_p95: float
    delay_error_s_p95: float
    """against the truth, for the buses assigned their own trip"""
    wrong_trip: int
    passed: bool
    """the trip step (with the ETAs) reached the target"""


class ProcessingBench(msgspec.Struct, frozen=True):
    date: str
    machine: str
    network_build_s: float
    trips: int
    segments: int
    state_roundtrip_us: float
    """msgpack encode + decode of one bus's BusProgress (ingest's Redis round trip, client side)"""
    scenarios: list[Scenario]
    passed: bool


class _Bus:
    """A simulated bus on one trip instance, a few minutes off its schedule."""

    def __init__(self, instance: TripInstance, rows: list[StopTime], shape: Shape, late_s: float) -> None:
        self.instance, self.rows, self.shape, self.late_s = instance, rows, shape, late_s

    def along(self, time_ms: int) -> float:
        return truth_along(self.rows, (time_ms - self.instance.origin_ms) / 1000 - self.late_s)


def _buses(feed: Feed, net: Network, count: int, start_ms: int, rng: np.random.Generator) -> list[_Bus]:
    rows: dict[str, list[StopTime]] = {}
    for row in feed.stop_times:
        rows.setdefault(row.trip_id, []).append(row)
    shapes = {s.shape_id: s for s in feed.shapes}
    running = [
        i
        for i in instances_between(net, start_ms, start_ms, slack_s=0)
        if i.arrival_ms()[-1] > start_ms + 3_600_000  # still an hour to go: no bus ends during the bench
    ]
    return [
        _Bus(i, rows[i.plan.trip_id], shapes[i.plan.shape.shape_id], float(rng.uniform(-120, 600)))
        for i in (running[k % len(running)] for k in range(count))
    ]


def _batch(
    buses: list[_Bus], states: list[BusProgress | None], t0_ms: int, per_bus: int, rng: np.random.Generator
) -> list[BusFixes]:
    items = []
    for k, bus in enumerate(buses):
        fixes = []
        for j in range(per_bus):
            t = t0_ms + j * FIX_EVERY_S * 1000
            lat, lon = fix_at(bus.shape, bus.along(t), NOISE_M, rng)
            fixes.append(FixPoint(t, lat, lon, 22.0, None, NOISE_M, None))
        items.append(BusFixes(f"bus-{k:05d}", states[k], fixes))
    return items


def _accepted(items: list[BusFixes]) -> list[Accepted]:
    """The same fixes as ingest's trip step receives them: accepted frames."""
    kept = []
    for item in items:
        for f in item.fixes:
            frame = Frame(
                device=item.bus,
                bus=item.bus,
                seq=f.time_ms // 1000,
                time_ms=f.time_ms,
                lat=f.lat,
                lon=f.lon,
                accuracy_m=f.accuracy_m,
                speed_mps=f.speed_mps,
            )
            kept.append(Accepted(OPERATOR, "bench-k1", frame))
    return kept


def _scenario(
    name: str, feed: Feed, net: Network, buses: int, per_bus: int, batches: int, report: Report
) -> Scenario:
    rng = np.random.default_rng(buses * 31 + per_bus)
    start = origin_ms(SERVICE_DATE, TZ) + 12 * 3_600_000
    fleet = _buses(feed, net, buses, start, rng)
    states: list[BusProgress | None] = [None] * buses
    models = {OPERATOR: OperatorModel(net, SegmentHistory(OPERATOR))}
    saved: dict[tuple[str, str], SavedBus] = {}
    t = start - WARM_UP_S * 1000
    report(f"{name}: warming up {buses} buses ({WARM_UP_S // 60} simulated minutes, one fix each per batch)")
    while t < start:  # warm-up: one fix per bus per batch, not timed
        items = _batch(fleet, states, t, 1, rng)
        results = advance_batch(net, items, t)
        states = [PROGRESS_DECODER.decode(PROGRESS_ENCODER.encode(r.progress)) for r in results]
        saved = follow(models, {}, _accepted(items), saved, t).carried(saved)
        t += FIX_EVERY_S * 1000
    spent, wall, step_spent, rates = 0.0, 0.0, 0.0, []
    for n in range(batches):
        items = _batch(fleet, states, t, per_bus, rng)
        kept = _accepted(items)
        t += per_bus * FIX_EVERY_S * 1000
        began, began_wall = time.thread_time(), time.perf_counter()
        results = advance_batch(net, items, t)
        took = max(time.thread_time() - began, 1e-6)
        wall += time.perf_counter() - began_wall
        spent += took
        rates.append(buses * per_bus / took)
        states = [PROGRESS_DECODER.decode(PROGRESS_ENCODER.encode(r.progress)) for r in results]
        began = time.thread_time()
        saved = follow(models, {}, kept, saved, t).carried(saved)
        step_spent += time.thread_time() - began
        if (n + 1) % 10 == 0:
            report(
                f"{name}: batch {n + 1}/{batches}, {buses * per_bus * (n + 1) / spent:,.0f} fixes/s so far"
            )
    last_t = t - FIX_EVERY_S * 1000
    along_err, delay_err, wrong = [], [], 0
    for bus, r in zip(fleet, results, strict=True):
        if r.instance is None or r.calculated.state != "assigned":
            continue
        if r.instance is not bus.instance:
            wrong += 1
            continue
        along_err.append(abs((r.along_m or 0.0) - bus.along(last_t)))
        if r.delay_s is not None and min(abs(bus.along(last_t) - row.dist_m) for row in bus.rows) > 500:
            delay_err.append(abs(r.delay_s - bus.late_s))
    states_count = {
        s: sum(r.calculated.state == s for r in results) for s in ("assigned", "candidate", "unassigned")
    }
    fps = buses * per_bus * batches / spent
    return Scenario(
        name=name,
        buses=buses,
        fixes_per_bus=per_bus,
        batches=batches,
        fixes=buses * per_bus * batches,
        seconds=round(spent, 3),
        fixes_per_s=round(fps),
        wall_fixes_per_s=round(buses * per_bus * batches / wall),
        trip_step_fixes_per_s=round(buses * per_bus * batches / max(step_spent, 1e-6)),
        median_batch_fixes_per_s=round(float(np.median(rates))),
        assigned=states_count["assigned"],
        candidate=states_count["candidate"],
        unassigned=states_count["unassigned"],
        along_error_m_p95=round(float(np.percentile(along_err, 95)), 1) if along_err else float("nan"),
        delay_error_s_p95=round(float(np.percentile(delay_err, 95)), 1) if delay_err else float("nan"),
        wrong_trip=wrong,
        passed=buses * per_bus * batches / max(step_spent, 1e-6) >= TARGET_FPS,  # the issue's: with ETA
    )


def _roundtrip_us(net: Network) -> float:
    state = BusProgress(
        net.feed_id, "assigned", "alger-oran-3", "20261201", "06:30:00", 0.9, 1, 2.0, 3.0, 22.0
    )
    n = 20_000
    began = time.perf_counter()
    for _ in range(n):
        PROGRESS_DECODER.decode(PROGRESS_ENCODER.encode(state))
    return (time.perf_counter() - began) / n * 1e6


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), model
            )
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} cores, {model}; {system}"


def run_processing_bench(report: Report, *, batches: int = 30) -> ProcessingBench:
    """Build the network, then time the two batch shapes; ``report`` gets progress lines."""
    report("building the demo-like feed and its network")
    feed = demo_like_feed(SERVICE_DATE)
    began = time.perf_counter()
    net = build_network(feed, operator=OPERATOR, feed_id=1)
    built = time.perf_counter() - began
    gc.collect()
    gc.freeze()  # what a long-running ingest does once its network is built: full collections skip it
    scenarios = [
        _scenario("500 buses x 4 fixes", feed, net, 500, 4, batches, report),
        _scenario("2,000 buses x 1 fix", feed, net, 2000, 1, batches, report),
    ]
    return ProcessingBench(
        date=time.strftime("%Y-%m-%d"),
        machine=machine(),
        network_build_s=round(built, 3),
        trips=len(net.plans),
        segments=len(net.seg_x),
        state_roundtrip_us=round(_roundtrip_us(net), 2),
        scenarios=scenarios,
        passed=all(s.passed for s in scenarios),
    )


def summary_text(result: ProcessingBench) -> str:
    lines = [
        f"fleet bench processing, {result.date}, {result.machine}",
        f"network: {result.trips} trips, {result.segments:,} segments, {result.network_build_s:.2f} s",
        "fixes/s: progress alone (advance_batch); + ETA: ingest's trip step (follow), ETAs of every stop",
        "",
        f"{'batch':<22}{'fixes/s':>12}{'wall':>10}{'median':>10}{'+ ETA':>10}{'assigned':>10}{'cand.':>7}"
        f"{'unas.':>7}{'along p95':>11}{'delay p95':>11}{'wrong':>7}  + ETA vs 200,000",
    ]
    for s in result.scenarios:
        lines.append(
            f"{s.name:<22}{s.fixes_per_s:>12,.0f}{s.wall_fixes_per_s:>10,.0f}{s.median_batch_fixes_per_s:>10,.0f}"
            f"{s.trip_step_fixes_per_s:>10,.0f}{s.assigned:>10}"
            f"{s.candidate:>7}{s.unassigned:>7}{s.along_error_m_p95:>9.1f} m{s.delay_error_s_p95:>9.1f} s"
            f"{s.wrong_trip:>7}  {'met' if s.passed else 'MISSED'}"
        )
    lines.append(
        f"state round trip through msgpack: {result.state_roundtrip_us:.2f} us per bus (not in the figures)"
    )
    return "\n".join(line for line in lines if line)
