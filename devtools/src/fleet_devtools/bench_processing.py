"""``fleet bench processing``: trip progress, ETAs and the event detectors in fixes per second on one core.

Pure code, no server, timed in CPU seconds of the thread
(``time.thread_time``: other processes sharing the core do not count) and
in wall-clock seconds. A demo-like feed (``synthetic_feed.demo_like_feed``:
five Algerian intercity lines both ways, a vertex every 200 m, a departure
every 30 minutes) is built into a network, buses drive trips running at
noon with a delay of their own and GPS noise, on batches shaped as ingest
hands them: many buses with a few fixes each, and many buses with one fix
each. Timed on the same fixes: ``advance_batch`` alone (with the per-fix
trace the trip detectors read); ingest's processing step
(``fleet_ingest.trips.follow``: progress, the ETA of every upcoming stop,
every detector) without fences, with 1,000 fences and with 10,000
(``bench_fences``), and the ratio of the last two; and the detectors alone
(``fleet_ingest.trips.detect``) with each set. Each set of fences keeps its
own detector states, as separate deployments would. Between batches each
bus's state goes through msgpack as it does through Redis. Buses warm up
first, as in a running ingest, so the timed batches hold the usual mix: most
buses assigned, a few dwelling or not yet sure, some inside fences.
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

from fleet_devtools.bench_fences import bench_fences
from fleet_devtools.synthetic_feed import demo_like_feed, fix_at, truth_along
from fleet_ingest.assess import Accepted, BusKey
from fleet_ingest.trips import OperatorModel, SavedBus, detect, follow
from fleet_processing.detect import DetectContext
from fleet_processing.eta import SegmentHistory
from fleet_processing.geofences import FenceIndex
from fleet_processing.network import Network, build_network
from fleet_processing.plan import TripInstance
from fleet_processing.progress import (
    PROGRESS_DECODER,
    PROGRESS_ENCODER,
    BusFixes,
    BusProgress,
    FixPoint,
    TripAt,
    advance_batch,
)
from fleet_processing.service_day import instances_between, origin_ms
from fleet_schemas import Frame
from fleet_schemas.gtfs import Feed, Shape, StopTime

TRIP_STEP_TARGET_FPS = 200_000.0
TARGET_FPS = 150_000.0
"""progress + ETA + deviation + geofences with the fewest fences"""
MAX_COST_RATIO = 1.3
"""the most fences may cost at most this many times the fewest"""
FENCE_COUNTS = (1_000, 10_000)
DETECT_WARM_UP_S = 120
"""the detectors join for the warm-up's last minutes: buses have settled in their trips and fences"""
SERVICE_DATE = date(2026, 12, 1)
TZ = "Africa/Algiers"
FIX_EVERY_S = 10
NOISE_M = 10.0
WARM_UP_S = 900
"""longer than a dwell (300 s), so every bus has moved along its trip, as in a running ingest"""

OPERATOR = "bench"
Report = Callable[[str], None]


class FencedFigures(msgspec.Struct, frozen=True):
    """The whole processing step with one set of fences, on the scenario's fixes."""

    fences: int
    fixes_per_s: float
    """ingest's processing step (``follow``: progress, ETAs, every detector), per CPU second"""
    detect_fixes_per_s: float
    """its detectors alone (``fleet_ingest.trips.detect``: states decoded, trip and fence detectors,
    offline, states encoded), per CPU second"""
    events: int
    fence_events: int
    """events of the timed batches, and those of fences among them (buses do meet fences)"""


class Scenario(msgspec.Struct, frozen=True):
    name: str
    buses: int
    fixes_per_bus: int
    batches: int
    fixes: int
    seconds: float
    fixes_per_s: float
    """all timed fixes over the CPU time this thread spent in advance_batch (one core), the per-fix
    trace the detectors read included"""
    wall_fixes_per_s: float
    """the same over wall-clock time (lower when other processes share the core)"""
    trip_step_fixes_per_s: float
    """ingest's processing step without fences (``fleet_ingest.trips.follow``: saved states decoded,
    progress, the ETA of every upcoming stop, trip updates, trip and offline detectors, states
    encoded), per CPU second"""
    median_batch_fixes_per_s: float
    assigned: int
    candidate: int
    unassigned: int
    """states after the last batch"""
    along_error_m_p95: float
    delay_error_s_p95: float
    """against the truth, for the buses assigned their own trip"""
    wrong_trip: int
    fenced: list[FencedFigures]
    """the step with each set of fences, fewest first"""
    cost_ratio: float
    """CPU time of the step with the most fences over that with the fewest"""
    detect_cost_ratio: float
    """the same for the detectors alone"""
    trip_step_passed: bool
    """the step without fences reached ``TRIP_STEP_TARGET_FPS`` (issue "Trips and ETA")"""
    passed: bool
    """with the fewest fences it reached ``TARGET_FPS``, and the most cost at most ``MAX_COST_RATIO``
    times as much (issue "Events")"""


class ProcessingBench(msgspec.Struct, frozen=True):
    date: str
    machine: str
    network_build_s: float
    trips: int
    segments: int
    fence_index_build_s: list[float]
    """seconds to build each set's H3 index (``FenceIndex``)"""
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


class _Lineage:
    """One set of detector contexts run over the scenario: what Redis holds for its buses, its timings.

    The detectors alone run with a twin of the fences' index (``alone``): an index remembers the points it
    looked up, and the step must not find the batch's fixes already looked up by them.
    """

    def __init__(self, contexts: dict[str, DetectContext], alone: DetectContext | None = None) -> None:
        self.contexts = contexts
        self.alone = alone
        self.saved: dict[BusKey, SavedBus] = {}
        self.spent = self.detect_spent = 0.0
        self.events = self.fence_events = 0

    def step(self, models: dict[str, OperatorModel], kept: list[Accepted], t: int) -> float:
        """Ingest's processing step on ``kept``; returns its CPU seconds."""
        began = time.thread_time()
        followed = follow(models, self.contexts, kept, self.saved, t)
        took = time.thread_time() - began
        self.saved = followed.carried(self.saved)
        self.events += len(followed.events)
        self.fence_events += sum(
            e.kind.startswith("geofence") or e.kind == "overspeed" for e in followed.events
        )
        return took

    def detect_alone(
        self, buses: dict[str, list[Frame]], traces: dict[str, tuple[int, tuple[TripAt, ...]]]
    ) -> None:
        """The detectors alone on the same fixes and saved states as the step (their output dropped)."""
        began = time.thread_time()
        detect(self.alone or self.contexts[OPERATOR], buses, traces, self.saved)
        self.detect_spent += time.thread_time() - began

    def figures(self, fixes: int) -> FencedFigures:
        return FencedFigures(
            fences=len(self.contexts[OPERATOR].fences),
            fixes_per_s=round(fixes / max(self.spent, 1e-6)),
            detect_fixes_per_s=round(fixes / max(self.detect_spent, 1e-6)),
            events=self.events,
            fence_events=self.fence_events,
        )


def _scenario(
    name: str,
    feed: Feed,
    net: Network,
    buses: int,
    per_bus: int,
    batches: int,
    indexes: list[tuple[FenceIndex, FenceIndex]],
    report: Report,
) -> Scenario:
    rng = np.random.default_rng(buses * 31 + per_bus)
    start = origin_ms(SERVICE_DATE, TZ) + 12 * 3_600_000
    fleet = _buses(feed, net, buses, start, rng)
    states: list[BusProgress | None] = [None] * buses
    models = {OPERATOR: OperatorModel(net, SegmentHistory(OPERATOR))}
    plain = _Lineage({})
    fenced = [
        _Lineage({OPERATOR: DetectContext(OPERATOR, index)}, DetectContext(OPERATOR, twin))
        for index, twin in indexes
    ]
    t = start - WARM_UP_S * 1000
    report(f"{name}: warming up {buses} buses ({WARM_UP_S // 60} simulated minutes, one fix each per batch)")
    while t < start:  # warm-up: one fix per bus per batch, not timed
        items = _batch(fleet, states, t, 1, rng)
        results = advance_batch(net, items, t)
        states = [PROGRESS_DECODER.decode(PROGRESS_ENCODER.encode(r.progress)) for r in results]
        kept = _accepted(items)
        for lineage in [plain, *fenced] if t >= start - DETECT_WARM_UP_S * 1000 else [plain]:
            lineage.step(models, kept, t)
        t += FIX_EVERY_S * 1000
    for lineage in fenced:  # the fenced lineages take the warm progress and trip detector state up
        lineage.saved = {
            k: SavedBus(v.progress, lineage.saved.get(k, v).state) for k, v in plain.saved.items()
        }
        lineage.events = lineage.fence_events = 0
    plain.events = plain.fence_events = 0
    spent, wall, rates = 0.0, 0.0, []
    for n in range(batches):
        items = _batch(fleet, states, t, per_bus, rng)
        kept = _accepted(items)
        t += per_bus * FIX_EVERY_S * 1000
        began, began_wall = time.thread_time(), time.perf_counter()
        results = advance_batch(net, items, t, trace=True)
        took = max(time.thread_time() - began, 1e-6)
        wall += time.perf_counter() - began_wall
        spent += took
        rates.append(buses * per_bus / took)
        states = [PROGRESS_DECODER.decode(PROGRESS_ENCODER.encode(r.progress)) for r in results]
        traces = {r.bus: (r.stale, r.trace) for r in results}
        frames: dict[str, list[Frame]] = {a.frame.bus: [] for a in kept}
        for a in kept:
            frames[a.frame.bus].append(a.frame)
        plain.spent += plain.step(models, kept, t)
        for lineage in fenced:
            lineage.detect_alone(frames, traces)
            lineage.spent += lineage.step(models, kept, t)
        if (n + 1) % 10 == 0:
            report(
                f"{name}: batch {n + 1}/{batches}, {buses * per_bus * (n + 1) / fenced[0].spent:,.0f}"
                f" fixes/s so far with {len(indexes[0][0]):,} fences"
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
    fixes = buses * per_bus * batches
    figures = [lineage.figures(fixes) for lineage in fenced]
    cost_ratio = fenced[-1].spent / max(fenced[0].spent, 1e-6)
    step_fps = fixes / max(plain.spent, 1e-6)
    return Scenario(
        name=name,
        buses=buses,
        fixes_per_bus=per_bus,
        batches=batches,
        fixes=fixes,
        seconds=round(spent, 3),
        fixes_per_s=round(fixes / spent),
        wall_fixes_per_s=round(fixes / wall),
        trip_step_fixes_per_s=round(step_fps),
        median_batch_fixes_per_s=round(float(np.median(rates))),
        assigned=states_count["assigned"],
        candidate=states_count["candidate"],
        unassigned=states_count["unassigned"],
        along_error_m_p95=round(float(np.percentile(along_err, 95)), 1) if along_err else float("nan"),
        delay_error_s_p95=round(float(np.percentile(delay_err, 95)), 1) if delay_err else float("nan"),
        wrong_trip=wrong,
        fenced=figures,
        cost_ratio=round(cost_ratio, 3),
        detect_cost_ratio=round(fenced[-1].detect_spent / max(fenced[0].detect_spent, 1e-6), 3),
        trip_step_passed=step_fps >= TRIP_STEP_TARGET_FPS,
        passed=figures[0].fixes_per_s >= TARGET_FPS and cost_ratio <= MAX_COST_RATIO,
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
    """Build the network and the fence sets, then time the two batch shapes; ``report`` hears progress."""
    report("building the demo-like feed and its network")
    feed = demo_like_feed(SERVICE_DATE)
    began = time.perf_counter()
    net = build_network(feed, operator=OPERATOR, feed_id=1)
    built = time.perf_counter() - began
    indexes, index_s = [], []
    for count in FENCE_COUNTS:
        report(
            f"building {count:,} fences (stations and speed zones on the lines, zones scattered), their index"
        )
        fences = bench_fences(feed, OPERATOR, count, report=report)
        began = time.perf_counter()
        index = FenceIndex(fences)
        index_s.append(round(time.perf_counter() - began, 2))
        indexes.append((index, FenceIndex(fences)))  # the twin the detectors alone run with
    gc.collect()
    gc.freeze()  # what a long-running ingest does once its network is built: full collections skip it
    scenarios = [
        _scenario("500 buses x 4 fixes", feed, net, 500, 4, batches, indexes, report),
        _scenario("2,000 buses x 1 fix", feed, net, 2000, 1, batches, indexes, report),
    ]
    return ProcessingBench(
        date=time.strftime("%Y-%m-%d"),
        machine=machine(),
        network_build_s=round(built, 3),
        trips=len(net.plans),
        segments=len(net.seg_x),
        fence_index_build_s=index_s,
        state_roundtrip_us=round(_roundtrip_us(net), 2),
        scenarios=scenarios,
        passed=all(s.passed for s in scenarios),
    )


def summary_text(result: ProcessingBench) -> str:
    counts = " and ".join(f"{f.fences:,}" for f in result.scenarios[0].fenced)
    lines = [
        f"fleet bench processing, {result.date}, {result.machine}",
        f"network: {result.trips} trips, {result.segments:,} segments, {result.network_build_s:.2f} s; "
        f"fence indexes of {counts} fences: {', '.join(f'{s:.1f} s' for s in result.fence_index_build_s)}",
        "fixes/s on one core (thread CPU time): progress alone (advance_batch, with its trace); the"
        " processing step (follow: progress, ETAs of every stop, detectors) without fences and with each"
        " set; the detectors alone (detect) with each set",
        "",
        f"{'batch':<22}{'progress':>10}{'wall':>10}{'median':>10}{'step':>10}{'assigned':>10}{'cand.':>7}"
        f"{'unas.':>7}{'along p95':>11}{'delay p95':>11}{'wrong':>7}  step vs {TRIP_STEP_TARGET_FPS:,.0f}",
    ]
    for s in result.scenarios:
        lines.append(
            f"{s.name:<22}{s.fixes_per_s:>10,.0f}{s.wall_fixes_per_s:>10,.0f}{s.median_batch_fixes_per_s:>10,.0f}"
            f"{s.trip_step_fixes_per_s:>10,.0f}{s.assigned:>10}"
            f"{s.candidate:>7}{s.unassigned:>7}{s.along_error_m_p95:>9.1f} m{s.delay_error_s_p95:>9.1f} s"
            f"{s.wrong_trip:>7}  {'met' if s.trip_step_passed else 'MISSED'}"
        )
    lines += [
        "",
        f"{'batch':<22}{'fences':>8}{'step':>10}{'detectors':>11}{'events':>8}{'of fences':>11}"
        f"  vs {TARGET_FPS:,.0f} fixes/s, cost ratio (step, detectors) vs {MAX_COST_RATIO}",
    ]
    for s in result.scenarios:
        for k, f in enumerate(s.fenced):
            verdict = ""
            if k == len(s.fenced) - 1:
                met = "met" if s.passed else "MISSED"
                verdict = f"  ratio {s.cost_ratio:.2f}, {s.detect_cost_ratio:.2f}: {met}"
            lines.append(
                f"{s.name if k == 0 else '':<22}{f.fences:>8,}{f.fixes_per_s:>10,.0f}"
                f"{f.detect_fixes_per_s:>11,.0f}{f.events:>8,}{f.fence_events:>11,}{verdict}"
            )
    lines.append(
        f"state round trip through msgpack: {result.state_roundtrip_us:.2f} us per bus (not in the figures)"
    )
    return "\n".join(lines)
