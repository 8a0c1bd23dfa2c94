"""``fleet bench ingest``: how fast one box stores signed frames, measured against the real servers.

Every figure comes from the same run, on the same broker and database:

* the ceiling: a bare paho-mqtt subscriber (no processing, QoS 1) receiving
  the whole stream as fast as the broker gives it;
* paced live traffic (one frame per message, as buses send at 1 Hz) at
  rising offered rates, with ``fleet ingest`` running: frames stored per
  second, loss, and lag from the scheduled publish time (the frame's fix
  time) to the row's commit (``received_at``), p50 and p99;
* drains of a queued backlog with 1 and with 2 ingest processes, for live
  messages and for batched ones (100 frames per message, as agents send
  after an outage); two processes run with ``FLEET_INGEST_STORE_PARTS=1``,
  as the README configures several processes sharing a database host of
  few cores (unless the environment sets it).

The load comes from a lean asyncio publisher (pre-signed messages, QoS 1, a
window of PUBACKs), so the generator is not what limits the rates measured.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import math
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec
import numpy as np

from fleet_devtools.bench_agent import Target, target_lines
from fleet_devtools.demo_feed import feed_dir
from fleet_ingest.mqtt_wire import (
    PROP_RECEIVE_MAXIMUM,
    PROP_SESSION_EXPIRY,
    PUBACK,
    MqttError,
    check_connack,
    connect_packet,
    publish_packet,
    read_varint,
)
from fleet_ingest.runner import forget_session, open_session
from fleet_processing.network import Network, build_network
from fleet_processing.service_day import instances_between
from fleet_schemas import DeviceKey, Frame, frames_subscription, frames_topic, seal
from fleet_schemas.broker import BrokerUrl
from fleet_store import sessions
from fleet_store.devices import add_device
from fleet_store.errors import FleetError
from fleet_store.gtfs import active_feed_id, load_feed
from fleet_store.mqtt import connect_client
from fleet_store.secretbox import KeyEncryptionKey
from fleet_store.settings import ServiceUrls

Report = Callable[[str], None]


class BenchError(FleetError):
    code = "bench_failed"


SEQ_SPAN = 10_000_000
"""Each phase uses its own range of sequence numbers, so phases never deduplicate each other."""
WINDOW = 30_000


class PacedResult(msgspec.Struct):
    offered_per_s: float
    frames: int
    stored: int
    stored_per_s: float
    lag_p50_ms: float
    lag_p99_ms: float


class DrainResult(msgspec.Struct):
    processes: int
    frames_per_message: int
    frames: int
    stored: int
    stored_per_s: float
    trips: bool | None = None
    """None: the generic stretch traffic; True/False: buses on the demo feed's trips, trip step on/off"""


class BenchResult(msgspec.Struct):
    devices: int
    ceiling_per_s: float
    """bare paho-mqtt subscriber, messages/s"""
    paced: list[PacedResult]
    drains: list[DrainResult]
    targets: list[Target] = msgspec.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.targets)


def judge(result: BenchResult) -> list[Target]:
    """The issue's targets: 20,000/s sustained, half the ceiling, p99 < 250 ms at 5,000/s, no loss."""
    kept_up = [p for p in result.paced if p.stored == p.frames and p.stored_per_s >= 0.95 * p.offered_per_s]
    sustained = max((p.offered_per_s for p in kept_up), default=0.0)
    at_5000 = [p for p in result.paced if p.offered_per_s == 5_000]
    lost = sum(p.frames - p.stored for p in result.paced) + sum(d.frames - d.stored for d in result.drains)
    single_live = [d.stored_per_s for d in result.drains if d.processes == 1 and d.frames_per_message == 1]
    best = max([sustained, *single_live])
    ratios = trip_ratios(result.drains)
    worst = min((statistics.median(r) for r in ratios.values()), default=float("nan"))
    return [
        Target("sustained live", sustained, "frames/s", ">= 20,000, all stored", sustained >= 20_000),
        Target(
            "with the trip step",
            worst,
            "x without (median of the pairs, worse message size)",
            ">= 0.7",
            bool(ratios) and worst >= 0.7,
        ),
        Target(
            "one process",
            best / max(result.ceiling_per_s, 1),
            "x bare ceiling",
            ">= 0.5",
            best >= result.ceiling_per_s / 2,
        ),
        Target(
            "p99 at 5,000/s",
            at_5000[0].lag_p99_ms if at_5000 else float("nan"),
            "ms publish->commit",
            "< 250",
            bool(at_5000) and at_5000[0].lag_p99_ms < 250,
        ),
        Target("frames lost", lost, "frames", "0", lost == 0),
    ]


def trip_ratios(drains: list[DrainResult]) -> dict[int, list[float]]:
    """frames/s with the trip step over without, per pair (an off drain, then its twin on), by size."""
    ratios: dict[int, list[float]] = {}
    for off, on in itertools.pairwise(drains):
        if off.trips is False and on.trips is True and off.frames_per_message == on.frames_per_message:
            ratio = on.stored_per_s / max(off.stored_per_s, 1e-9)
            ratios.setdefault(on.frames_per_message, []).append(ratio)
    return ratios


def summary_text(result: BenchResult) -> str:
    lines = [f"ceiling (bare paho-mqtt subscriber, 1 frame/message): {result.ceiling_per_s:,.0f} msg/s"]
    lines += [
        f"paced {p.offered_per_s:>7,.0f}/s: stored {p.stored:,}/{p.frames:,} at {p.stored_per_s:,.0f}/s,"
        f" lag p50 {p.lag_p50_ms:,.0f} ms, p99 {p.lag_p99_ms:,.0f} ms"
        for p in result.paced
    ]
    lines += [
        f"drain, {d.frames_per_message:>3} frames/message, {d.processes} process(es){_trip_label(d.trips)}:"
        f" stored {d.stored:,}/{d.frames:,} at {d.stored_per_s:,.0f}/s"
        for d in result.drains
    ]
    lines += [
        f"trip step, {size:>3} frames/message: on/off " + ", ".join(f"{r:.2f}" for r in ratios)
        for size, ratios in trip_ratios(result.drains).items()
    ]
    return "\n".join(lines + target_lines(result.targets))


def _trip_label(trips: bool | None) -> str:
    return "" if trips is None else f", on trips, trip step {'on' if trips else 'off'}"


class LoadPublisher:
    """Publishes pre-signed messages at QoS 1 with a bounded window of unacknowledged ones."""

    def __init__(self, url: str) -> None:
        self._broker = BrokerUrl.parse(url)
        self._acked = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoadPublisher:
        self._reader, self._writer = await asyncio.open_connection(self._broker.host, self._broker.port)
        properties = bytes([PROP_SESSION_EXPIRY]) + (0).to_bytes(4, "big")
        properties += bytes([PROP_RECEIVE_MAXIMUM]) + (65_535).to_bytes(2, "big")
        self._writer.write(
            connect_packet(f"bench-load-{uuid.uuid4().hex[:8]}", self._broker, 60, True, properties)
        )
        head = await self._reader.readexactly(2)
        body = await self._reader.readexactly(head[1])
        check_connack(head[0] >> 4, body)
        self._reading = asyncio.create_task(self._count_acks())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reading is not None:
            self._reading.cancel()
        if self._writer is not None:
            self._writer.close()

    async def _count_acks(self) -> None:
        assert self._reader is not None
        buffer = b""
        while chunk := await self._reader.read(1 << 16):
            buffer += chunk
            offset = 0
            while len(buffer) - offset >= 2:
                length = read_varint(buffer, offset + 1)
                if length is None or length[1] + length[0] > len(buffer):
                    break
                if buffer[offset] >> 4 == PUBACK:
                    self._acked += 1
                offset = length[1] + length[0]
            buffer = buffer[offset:]

    async def publish(self, messages: list[tuple[str, bytes]], rate: float | None) -> float:
        """Send all at ``rate`` msg/s (None: as fast as the window allows); return seconds to the last ack."""
        assert self._writer is not None
        start_acked, sent = self._acked, 0
        started = time.perf_counter()
        while sent < len(messages):
            due = (
                len(messages)
                if rate is None
                else min(len(messages), int((time.perf_counter() - started) * rate) + 1)
            )
            due = min(due, sent + WINDOW - (sent - (self._acked - start_acked)))
            if due > sent:
                self._writer.write(
                    b"".join(
                        publish_packet(topic, payload, (start_acked + i) % 65_535 + 1)
                        for i, (topic, payload) in enumerate(messages[sent:due], start=sent)
                    )
                )
                sent = due
                await self._writer.drain()
            await asyncio.sleep(0.002)
        while self._acked - start_acked < len(messages):
            if self._reading is not None and self._reading.done():
                raise MqttError("the broker closed the load publisher's connection")
            await asyncio.sleep(0.005)
        return time.perf_counter() - started


def _frames(
    keys: list[DeviceKey], buses: list[str], count: int, seq_base: int, start_ms: int, rate: float
) -> list[tuple[int, Frame]]:
    """``count`` frames round-robin over the devices, the n-th due at ``start_ms + n / rate``.

    Each bus shuttles along a 5.5 km stretch, its position a function of the
    absolute time (at most about 10 m/s), so no frame of any phase looks like
    a teleport against any other.
    """
    out = []
    for n in range(count):
        device = n % len(keys)
        time_ms = start_ms + int(n * 1000 / rate)
        lat = 36.0 + device * 0.01 + 0.05 * math.sin(2 * math.pi * time_ms / 3_600_000)
        frame = Frame(
            device=keys[device].device,
            bus=buses[device],
            seq=seq_base + n // len(keys),
            time_ms=time_ms,
            lat=lat,
            lon=3.0,
            speed_mps=9.0,
            heading_deg=0.0,
            satellites=10,
            hdop=0.9,
            source="sim",
        )
        out.append((device, frame))
    return out


def _trip_frames(
    network: Network,
    keys: list[DeviceKey],
    buses: list[str],
    count: int,
    seq_base: int,
    start_ms: int,
    rate: float,
) -> list[tuple[int, Frame]]:
    """Like ``_frames``, but each bus keeps to one trip of the network running at ``start_ms``.

    The frames are where the timetable has the bus at each fix time (with a
    few metres of noise), so the trip step does its full work on them:
    assignment, projection near the previous progress, delay and ETAs.
    """
    end_ms = start_ms + int(count * 1000 / rate)
    running = [i for i in instances_between(network, start_ms, end_ms, slack_s=0) if len(i.plan.stop_ids) > 1]
    if not running:
        raise BenchError("no trip of the bench feed runs in the bench's time span")
    rng = np.random.default_rng(seq_base)
    n = np.arange(count)
    device = n % len(keys)
    time_ms = start_ms + (n * 1000 / rate).astype(np.int64)
    lat, lon = np.empty(count), np.empty(count)
    for d in range(len(keys)):
        mine = device == d
        instance = running[d % len(running)]
        plan = instance.plan
        times = np.column_stack([instance.arrival_ms(), instance.departure_ms()]).ravel()
        dists = np.repeat(plan.stop_dist_m, 2)
        along = np.interp(time_ms[mine], times, dists)
        x = np.interp(along, plan.shape.cum_m, plan.shape.xy[:, 0]) + rng.normal(0, 3, mine.sum())
        y = np.interp(along, plan.shape.cum_m, plan.shape.xy[:, 1]) + rng.normal(0, 3, mine.sum())
        lon[mine], lat[mine] = network.transformer.transform(x, y, direction="INVERSE")
    return [
        (
            int(device[k]),
            Frame(
                device=keys[device[k]].device,
                bus=buses[device[k]],
                seq=seq_base + k // len(keys),
                time_ms=int(time_ms[k]),
                lat=float(lat[k]),
                lon=float(lon[k]),
                speed_mps=20.0,
                heading_deg=0.0,
                satellites=10,
                hdop=0.9,
                source="sim",
            ),
        )
        for k in range(count)
    ]


def _messages(
    operator: str, keys: list[DeviceKey], frames: list[tuple[int, Frame]], per_message: int
) -> list[tuple[str, bytes]]:
    """One message per frame in due order (live), or ``per_message`` frames of one device each (backlog)."""
    if per_message == 1:
        return [(frames_topic(operator, keys[d].device), seal([f], keys[d])) for d, f in frames]
    by_device: dict[int, list[Frame]] = {}
    for device, frame in frames:
        by_device.setdefault(device, []).append(frame)
    return [
        (frames_topic(operator, keys[device].device), seal(items[i : i + per_message], keys[device]))
        for device, items in by_device.items()
        for i in range(0, len(items), per_message)
    ]


def _bare_subscriber(url: str, topic: str, expected: int, ready: Any, results: Any) -> None:
    """A separate process: paho-mqtt at QoS 1 doing nothing but count (the ceiling)."""
    times: list[float] = []
    subscribed = multiprocessing.Event()
    client = connect_client(url, f"bench-bare-{os.getpid()}")
    client.on_message = lambda _c, _u, _m: times.append(time.perf_counter())
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe(topic, qos=1)
    subscribed.wait(10)
    ready.set()
    deadline, seen = time.monotonic() + 300, 0
    while len(times) < expected and time.monotonic() < deadline:
        time.sleep(1.0)
        if seen and len(times) == seen:
            break  # nothing for a second after the stream started: the broker has no more for us
        seen = len(times)
    client.loop_stop()
    client.disconnect()
    results.put((len(times), times[0] if times else 0.0, times[-1] if times else 0.0))


class IngestBench:
    """One benchmark run: devices registered once, phases sharing the servers."""

    def __init__(self, urls: ServiceUrls, kek_text: str, report: Report, devices: int = 100) -> None:
        self.urls = urls
        self.kek_text = kek_text
        self.report = report
        self.device_count = devices
        self.operator = f"bench{uuid.uuid4().hex[:8]}"
        self.keys: list[DeviceKey] = []
        self.buses: list[str] = []
        self.network: Network | None = None
        self._phase = 0

    async def register(self, prefix: str = "") -> tuple[list[DeviceKey], list[str]]:
        """Register the bench's devices (the first set, ``prefix`` empty, is the default one)."""
        kek = KeyEncryptionKey(base64.b64decode(self.kek_text))
        keys, buses = [], []
        conn = await asyncpg.connect(self.urls.database_url)
        try:
            for n in range(self.device_count):
                bus = f"BENCH-{prefix}{n:04d}"
                issued = await add_device(conn, kek, self.operator, f"{self.operator}-{prefix}{n:04d}", bus)
                keys.append(issued.key)
                buses.append(bus)
        finally:
            await conn.close()
        if not prefix:
            self.keys, self.buses = keys, buses
        return keys, buses

    def _next_seq_base(self) -> int:
        self._phase += 1
        return self._phase * SEQ_SPAN

    async def ceiling(self, count: int) -> float:
        """Messages/s a bare paho subscriber receives of one-frame messages sent as fast as possible."""
        frames = _frames(self.keys, self.buses, count, self._next_seq_base(), int(time.time() * 1000), 10_000)
        messages = _messages(self.operator, self.keys, frames, 1)
        context = multiprocessing.get_context("spawn")
        ready, results = context.Event(), context.Queue()
        topic = (
            f"$share/bare{uuid.uuid4().hex[:6]}/{frames_subscription().replace('+/+', self.operator + '/+')}"
        )
        process = context.Process(
            target=_bare_subscriber, args=(self.urls.mqtt_url, topic, count, ready, results)
        )
        process.start()
        await asyncio.to_thread(ready.wait, 30)
        async with LoadPublisher(self.urls.mqtt_url) as publisher:
            await publisher.publish(messages, None)
        received: int
        first: float
        last: float
        received, first, last = await asyncio.to_thread(results.get, True, 330)
        process.join(10)
        rate = float(received) / max(last - first, 1e-9)
        self.report(
            f"ceiling: bare paho-mqtt subscriber received {received:,} of {count:,} at {rate:,.0f} msg/s"
        )
        return rate

    async def import_feed(self) -> None:
        """Import the demo feed for the bench's operator (the real command) and build its network."""
        importing = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "fleet_cli", "gtfs", "import", str(feed_dir())),
            *("--operator", self.operator),
            env=self._env("unused", 1),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await importing.communicate()
        if importing.returncode != 0:
            raise BenchError(f"importing the demo feed failed: {err.decode()[-2000:]}")
        conn = await asyncpg.connect(self.urls.database_url)
        try:
            feed_id = await active_feed_id(conn, self.operator)
            assert feed_id is not None
            feed = await load_feed(conn, feed_id)
        finally:
            await conn.close()
        self.network = build_network(feed, operator=self.operator, feed_id=feed_id)
        self.report(f"imported the demo feed: {len(self.network.plans)} trips")

    def _env(self, group: str, processes: int, *, trips: bool = True) -> dict[str, str]:
        return {
            "FLEET_INGEST_TRIPS": "on" if trips else "off",
            # Configured as the README says for several processes on one database host of few cores:
            # each batch in one transaction (parts only add contention once the processes fill the host).
            **({"FLEET_INGEST_STORE_PARTS": "1"} if processes > 1 else {}),
            **os.environ,
            "FLEET_MQTT_URL": self.urls.mqtt_url,
            "FLEET_DATABASE_URL": self.urls.database_url,
            "FLEET_REDIS_URL": self.urls.redis_url,
            "FLEET_KEY_ENCRYPTION_KEY": self.kek_text,
            "FLEET_METRICS_ADDR": "",
            "FLEET_INGEST_GROUP": group,
            "FLEET_INGEST_CLIENT_ID": group,
            "FLEET_LOG_LEVEL": "WARNING",
        }

    @contextlib.asynccontextmanager
    async def _sessions(self, group: str, processes: int) -> AsyncIterator[None]:
        """The processes' persistent sessions for a block, deleted after it whatever happens.

        A session left behind would queue every later frame on the broker for a consumer that never returns;
        its row in ``ingest_sessions`` (which the processes write) would be listed as absent for ever.
        """
        client_ids = [f"{group}-{n}" for n in range(1, processes + 1)]
        try:
            for client_id in client_ids:
                await open_session(self.urls.mqtt_url, client_id, group)
            yield
        finally:
            conn = await asyncpg.connect(self.urls.database_url)
            try:
                for client_id in client_ids:
                    await forget_session(self.urls.mqtt_url, client_id, group)
                    await sessions.forget(conn, client_id)
            finally:
                await conn.close()

    def _start(
        self, group: str, processes: int, burst_s: float | None, *, trips: bool = True
    ) -> list[subprocess.Popen[bytes]]:
        burst = ["--burst", str(burst_s)] if burst_s is not None else []
        return [
            subprocess.Popen(
                [sys.executable, "-m", "fleet_cli", "ingest", "--instance", str(n), *burst],
                env=self._env(group, processes, trips=trips),
                stderr=subprocess.DEVNULL,
            )
            for n in range(1, processes + 1)
        ]

    async def _stored(self, seq_base: int) -> asyncpg.Record:
        conn = await asyncpg.connect(self.urls.database_url)
        try:
            row = await conn.fetchrow(
                """SELECT count(*) AS stored,
                          extract(epoch FROM max(received_at) - min(received_at)) AS span_s,
                          percentile_cont(0.5) WITHIN GROUP (ORDER BY received_at - time) AS p50,
                          percentile_cont(0.99) WITHIN GROUP (ORDER BY received_at - time) AS p99
                   FROM positions WHERE operator = $1 AND seq >= $2 AND seq < $3""",
                self.operator,
                seq_base,
                seq_base + SEQ_SPAN,
            )
            assert row is not None
            return row
        finally:
            await conn.close()

    async def _wait_stored(self, seq_base: int, count: int, timeout: float) -> asyncpg.Record:
        deadline = time.monotonic() + timeout
        while True:
            row = await self._stored(seq_base)
            if row["stored"] >= count or time.monotonic() > deadline:
                return row
            await asyncio.sleep(0.5)

    async def paced(self, rate: float, seconds: float) -> PacedResult:
        """Live traffic at ``rate`` frames/s, one per message, with one ingest process running."""
        group = f"bench{uuid.uuid4().hex[:8]}"
        count = int(rate * seconds)
        seq_base = self._next_seq_base()
        start_ms = int(time.time() * 1000) + 3_000
        messages = _messages(
            self.operator, self.keys, _frames(self.keys, self.buses, count, seq_base, start_ms, rate), 1
        )
        async with self._sessions(group, 1):
            processes = self._start(group, 1, None)
            try:
                await asyncio.sleep(max(0.0, start_ms / 1000 - time.time()))
                async with LoadPublisher(self.urls.mqtt_url) as publisher:
                    await publisher.publish(messages, rate)
                row = await self._wait_stored(seq_base, count, 120)
            finally:
                _stop(processes)
        result = PacedResult(
            offered_per_s=rate,
            frames=count,
            stored=row["stored"],
            stored_per_s=row["stored"] / max(float(row["span_s"] or 0), 1e-9),
            lag_p50_ms=_ms(row["p50"]),
            lag_p99_ms=_ms(row["p99"]),
        )
        self.report(
            f"paced {rate:>8,.0f}/s: stored {result.stored:,}/{count:,} at {result.stored_per_s:,.0f}/s,"
            f" lag p50 {result.lag_p50_ms:,.0f} ms p99 {result.lag_p99_ms:,.0f} ms"
        )
        return result

    async def drain(
        self, count: int, processes: int, per_message: int, *, trips: bool | None = None
    ) -> DrainResult:
        """A queued backlog of ``count`` frames drained by ``processes`` ingest processes.

        With ``trips`` the buses keep to the demo feed's trips and the trip step is on or off.
        """
        group = f"bench{uuid.uuid4().hex[:8]}"
        seq_base = self._next_seq_base()
        start_ms, rate = int(time.time() * 1000) - 3_600_000, count / 3_000
        if trips is None:
            keys = self.keys
            frames = _frames(keys, self.buses, count, seq_base, start_ms, rate)
        else:
            # Fresh buses each time: no live state or progress left by an earlier phase changes the work.
            assert self.network is not None, "import_feed first"
            keys, buses = await self.register(f"t{seq_base // SEQ_SPAN}-")
            frames = _trip_frames(self.network, keys, buses, count, seq_base, start_ms, rate)
        messages = _messages(self.operator, keys, frames, per_message)
        async with self._sessions(group, processes):
            async with LoadPublisher(self.urls.mqtt_url) as publisher:
                await publisher.publish(messages, None)
            running = self._start(group, processes, 3.0, trips=trips is not False)
            try:
                for process in running:
                    process.wait(timeout=600)
            finally:
                _stop(running)
            row = await self._stored(seq_base)
        result = DrainResult(
            processes=processes,
            frames_per_message=per_message,
            frames=count,
            stored=row["stored"],
            stored_per_s=row["stored"] / max(float(row["span_s"] or 0), 1e-9),
            trips=trips,
        )
        self.report(
            f"drain {count:,} frames, {per_message} per message, {processes} process(es){_trip_label(trips)}:"
            f" stored {result.stored:,} at {result.stored_per_s:,.0f}/s"
        )
        return result


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)


def _ms(interval: Any) -> float:
    return float(interval.total_seconds() * 1000) if interval is not None else float("nan")


async def run_bench(
    urls: ServiceUrls,
    kek_text: str,
    report: Report,
    *,
    devices: int,
    frames: int,
    rates: list[float],
    seconds: float,
    trip_pairs: int = 3,
) -> BenchResult:
    """Every phase in one run; the trip step's off/on pairs ``trip_pairs`` times, alternated."""
    bench = IngestBench(urls, kek_text, report, devices)
    await bench.register()
    report(f"registered {devices} devices of operator {bench.operator}")
    ceiling = await bench.ceiling(frames)
    paced = [await bench.paced(rate, seconds) for rate in rates]
    drains = [
        await bench.drain(frames, processes, per_message) for per_message in (1, 100) for processes in (1, 2)
    ]
    await bench.import_feed()
    drains += [
        await bench.drain(frames, 1, per_message, trips=trips)
        for _ in range(trip_pairs)
        for per_message in (1, 100)
        for trips in (False, True)
    ]
    result = BenchResult(devices=devices, ceiling_per_s=ceiling, paced=paced, drains=drains)
    result.targets = judge(result)
    return result
