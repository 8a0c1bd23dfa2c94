"""``fleet bench fanout``: one ``fleet serve`` process fanning live positions out to websocket clients.

Everything on one box, in one run:

* buses on a grid (50 columns, 0.1° apart) each updating once a second
  through the real writer (``LiveState.update``, which publishes on the
  positions channel as ingest does), in ticks of 100 ms (a tenth of the fleet
  each); ``received_ms`` carries the publish time, so a client's delay is its
  receipt time minus that, on the same clock;
* clients in worker processes (picows' callback API on uvloop: light enough
  that 10,000 of them leave the server its core) in the issue's mix: 90 %
  passengers following one bus (half by bus, half by trip), 9 % following a
  route (20 buses), 1 % manager maps with a box over about a tenth of the
  fleet; ``--slow-share`` of them stop reading for 2 s after every frame;
* the ceiling, in the same run: a bare broadcast loop of the same websocket
  library (``websockets``' own server and ``broadcast()``, no auth, no
  queues, a dict of buses to connections) reading the same channel and
  sending the same messages to the same clients.

Routes are learnt by the fan-out from ETAs, so one ETA per trip is published
once the clients are connected (as ingest does at every batch).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import multiprocessing
import os
import queue
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from multiprocessing.synchronize import Event as MpEvent
from typing import Any, Literal

import msgspec
import numpy as np
import redis.asyncio as aioredis
import uvloop
from picows import WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from fleet_devtools.bench_agent import Target, target_lines
from fleet_devtools.stack import free_port
from fleet_schemas.live import LivePosition
from fleet_schemas.trips import TripEtas
from fleet_serve.auth import Role, issue_token
from fleet_serve.settings import ServeSettings, TokenKey
from fleet_store.collector import tune_collector
from fleet_store.etas import EtaBoards, EtaUpdate
from fleet_store.live import LiveState

OPERATOR = "bench-fanout"
COLUMNS = 50
SPACING = 0.1
LON0, LAT0 = 0.05, 33.05
TICKS_PER_S = 10
BUSES_PER_ROUTE = 20
SLOW_PAUSE_S = 2.0
Kind = Literal["bus", "trip", "route", "bbox"]
KINDS: tuple[Kind, ...] = ("bus", "trip", "route", "bbox")


class BenchError(Exception):
    pass


class FanoutOptions(msgspec.Struct, frozen=True):
    clients: int
    buses: int
    seconds: float
    """measured in each phase, after the warm-up"""
    slow_share: float
    workers: int
    """client processes"""
    seed: int = 1


class ClientSpec(msgspec.Struct, frozen=True):
    kind: Kind
    subscribe: dict[str, Any]
    buses: list[int]
    """the buses it should hear of (bench numbering)"""
    token: str
    slow: bool = False


class ClientResult(msgspec.Struct, frozen=True):
    kind: Kind
    slow: bool
    received: int
    """positions received inside the window"""
    complete: bool
    """every round of the window of every one of its buses received"""
    close_code: int | None
    delays_ms: list[float]


class KindFigures(msgspec.Struct, frozen=True):
    kind: str
    clients: int
    messages_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    complete_share: float


class PhaseFigures(msgspec.Struct, frozen=True):
    name: str
    connected: int
    delivered_per_s: float
    updates_per_s: float
    kinds: list[KindFigures]
    slow_clients: int
    slow_closed_3008: int
    slow_messages_per_s: float
    server_cpu: float
    """the server's CPU seconds per second over the publishing window (1.0: one core busy)"""
    clients_cpu: float
    """the client processes' CPU seconds per second over the same window, all together"""


class FanoutBench(msgspec.Struct, frozen=True):
    clients: int
    buses: int
    seconds: float
    fleet: PhaseFigures
    bare: PhaseFigures
    ratio: float
    """fleet's delivered messages/s over the bare loop's"""
    targets: list[Target]
    passed: bool


class _Pos(msgspec.Struct):
    bus: str
    seq: int
    received_ms: int = 0


class _Msg(msgspec.Struct):
    type: str
    position: _Pos | None = None


_FRAME = msgspec.json.Decoder(_Msg | list[_Msg])


def _messages(raw: str | bytes) -> list[_Msg]:
    decoded = _FRAME.decode(raw)
    return decoded if isinstance(decoded, list) else [decoded]


def bus_name(i: int) -> str:
    return f"bus-{i:05d}"


def _where(i: int, seq: int) -> tuple[float, float]:
    """Bus ``i``'s position at round ``seq``: a small loop inside its grid cell (it never leaves it)."""
    angle = seq * 0.3 + i
    return (
        LON0 + (i % COLUMNS) * SPACING + 0.01 * math.cos(angle),
        LAT0 + (i // COLUMNS) * SPACING + 0.01 * math.sin(angle),
    )


def plan_clients(
    settings: ServeSettings, clients: int, buses: int, slow_share: float, rng: random.Random
) -> list[ClientSpec]:
    """The issue's mix, scaled to ``clients``: 90 % one bus or trip, 9 % a route, 1 % a map box."""
    rows = math.ceil(buses / COLUMNS)
    routes = math.ceil(buses / BUSES_PER_ROUTE)
    maps = max(1, clients // 100)
    by_route = max(1, clients * 9 // 100)
    passengers = clients - maps - by_route
    specs: list[ClientSpec] = []

    def token(role: Role, bus: str | None = None, trip_id: str | None = None) -> str:
        issued, _ = issue_token(
            settings, role=role, operators=(OPERATOR,), ttl_s=3_600, sub="bench", bus=bus, trip_id=trip_id
        )
        return issued

    for n in range(passengers):
        i = rng.randrange(buses)
        if n % 2:
            specs.append(ClientSpec("bus", {"bus": bus_name(i)}, [i], token("passenger", bus=bus_name(i))))
        else:
            specs.append(
                ClientSpec("trip", {"trip_id": f"trip-{i}"}, [i], token("passenger", trip_id=f"trip-{i}"))
            )
    for _ in range(by_route):
        r = rng.randrange(routes)
        members = [i for i in range(r * BUSES_PER_ROUTE, (r + 1) * BUSES_PER_ROUTE) if i < buses]
        specs.append(ClientSpec("route", {"route_id": f"route-{r}"}, members, token("booking")))
    width = max(1, round(COLUMNS * math.sqrt(0.1)))
    height = max(1, round(rows * math.sqrt(0.1)))
    for _ in range(maps):
        c0, r0 = rng.randrange(COLUMNS - width + 1), rng.randrange(max(1, rows - height + 1))
        box = [
            LON0 - SPACING / 2 + c0 * SPACING,
            LAT0 - SPACING / 2 + r0 * SPACING,
            LON0 - SPACING / 2 + (c0 + width) * SPACING,
            LAT0 - SPACING / 2 + (r0 + height) * SPACING,
        ]
        inside = [
            i for i in range(buses) if c0 <= i % COLUMNS < c0 + width and r0 <= i // COLUMNS < r0 + height
        ]
        specs.append(ClientSpec("bbox", {"bbox": box}, inside, token("manager")))
    slow = set(rng.sample(range(len(specs)), round(len(specs) * slow_share)))
    return [msgspec.structs.replace(s, slow=True) if n in slow else s for n, s in enumerate(specs)]


# ---------------------------------------------------------------- client workers (other processes)


class _Listener(WSListener):
    """One client on picows' callback API: a frame is handled where it is parsed, with no future or task
    per message (a ``websockets`` client spent more CPU per message than the server it measured, and
    10,000 of them on the same two cores were the bottleneck)."""

    def __init__(self, spec: ClientSpec, bare: bool, window: tuple[int, int]) -> None:
        self.spec, self.bare, self.window = spec, bare, window
        self.loop = asyncio.get_running_loop()
        self.subscribed: asyncio.Future[None] = self.loop.create_future()
        self.delays: list[float] = []
        self.seen: set[tuple[str, int]] = set()
        self.close_code: int | None = None
        self.stopping = False
        self.paused = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        subscribe = (
            {"type": "subscribe", "buses": [bus_name(i) for i in self.spec.buses]}
            if self.bare
            else {"type": "subscribe", "operator": OPERATOR, **self.spec.subscribe}
        )
        transport.send(WSMsgType.TEXT, msgspec.json.encode(subscribe))
        if self.bare:
            self.subscribed.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        now = time.time() * 1000
        messages = _messages(frame.get_payload_as_bytes())
        if not self.subscribed.done():
            if any(m.type == "snapshot" for m in messages):
                self.subscribed.set_result(None)
            return
        lo, hi = self.window
        for m in messages:
            p = m.position
            if p is not None and lo <= p.seq <= hi:
                self.delays.append(now - p.received_ms)
                self.seen.add((p.bus, p.seq))
        if self.spec.slow and not self.paused:  # read nothing more for a while
            self.paused = True
            transport.underlying_transport.pause_reading()
            self.loop.call_later(SLOW_PAUSE_S, self._resume, transport)

    def _resume(self, transport: WSTransport) -> None:
        self.paused = False
        if not transport.is_disconnected:
            transport.underlying_transport.resume_reading()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.stopping:
            handshake = transport.close_handshake
            self.close_code = int(handshake.recv.code.value) if handshake and handshake.recv else 1006
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(f"closed before subscribing ({self.close_code})"))

    def result(self) -> ClientResult:
        lo, hi = self.window
        expected = {(bus_name(i), s) for i in self.spec.buses for s in range(lo, hi + 1)}
        complete = expected <= self.seen
        return ClientResult(
            self.spec.kind, self.spec.slow, len(self.delays), complete, self.close_code, self.delays
        )


async def _client(
    url: str,
    spec: ClientSpec,
    bare: bool,
    window: tuple[int, int],
    stop: asyncio.Event,
    gate: asyncio.Semaphore,
    connected: list[int],
) -> ClientResult:
    """Connect (a few at a time), subscribe, then read until ``stop``; what it heard inside ``window``."""
    async with gate:
        transport, listener = await ws_connect(
            lambda: _Listener(spec, bare, window),
            f"{url}?token={spec.token}",
            websocket_handshake_timeout=120,
        )
        assert isinstance(listener, _Listener)
        await asyncio.wait_for(listener.subscribed, 120)
    connected[0] += 1
    await stop.wait()
    listener.stopping = True
    transport.disconnect()
    return listener.result()


def _worker(
    number: int,
    url: str,
    specs: list[ClientSpec],
    bare: bool,
    window: tuple[int, int],
    stop: MpEvent,
    out: Any,
) -> None:
    """One client process: connect every spec, read until ``stop``, put the results on ``out``.

    Puts ``("connected", number, count)`` as clients subscribe, ``("error", number, text)``
    for one that could not, then ``("done", number, results)``.
    """

    async def main() -> None:
        local_stop = asyncio.Event()
        gate = asyncio.Semaphore(50)
        connected = [0]

        async def one(spec: ClientSpec) -> ClientResult | None:
            try:
                return await _client(url, spec, bare, window, local_stop, gate, connected)
            except (OSError, TimeoutError, WSError) as exc:
                out.put(("error", number, repr(exc)))
                return None

        tasks = [asyncio.ensure_future(one(s)) for s in specs]
        told = -1
        while not stop.is_set():
            await asyncio.sleep(0.5)
            if connected[0] != told:
                told = connected[0]
                out.put(("connected", number, told))
        local_stop.set()
        results = [r for r in await asyncio.gather(*tasks) if r is not None]
        out.put(("done", number, msgspec.msgpack.encode(results)))

    tune_collector()  # thousands of connections per process, as in the servers
    uvloop.run(main())


# ---------------------------------------------------------------- the bare broadcast loop (ceiling)


def _bare_server(port: int, redis_url: str) -> None:
    """websockets' own server: a dict of buses to connections, ``broadcast()`` of each position."""
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    from fleet_serve.fanout import Outgoing, PositionMessage

    followers: dict[str, set[ServerConnection]] = {}
    positions = msgspec.json.Decoder(list[LivePosition])

    async def handler(ws: ServerConnection) -> None:
        wanted = msgspec.json.decode(await ws.recv())["buses"]
        for bus in wanted:
            followers.setdefault(bus, set()).add(ws)
        try:
            await ws.wait_closed()
        finally:
            for bus in wanted:
                followers[bus].discard(ws)

    async def pump() -> None:
        client = aioredis.Redis.from_url(redis_url)
        async with client.pubsub() as pubsub:
            await pubsub.psubscribe("fleet:*:positions")
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                for p in positions.decode(message["data"]):
                    broadcast(followers.get(p.bus, ()), Outgoing(PositionMessage(p)).json())

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
            await pump()

    tune_collector()  # as fleet serve does, so the ceiling is not held back by the collector
    uvloop.run(main())  # the event loop fleet serve runs on


# ---------------------------------------------------------------- the run


def _wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (our own http:// URL)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{url} did not answer in {timeout_s:.0f} s") from None
            time.sleep(0.2)


class _Run:
    def __init__(self, redis_url: str, report: Callable[[str], None], options: FanoutOptions) -> None:
        self.redis_url, self.report = redis_url, report
        self.buses, self.seconds, self.workers = options.buses, options.seconds, options.workers
        key = TokenKey("bench", secrets.token_bytes(32))
        self.settings = ServeSettings(token_keys=(key,), issuer="fleet-bench")
        self.key_text = f"bench={base64.b64encode(key.secret).decode()}"
        rng = random.Random(options.seed)  # noqa: S311 (a reproducible mix)
        self.specs = plan_clients(self.settings, options.clients, options.buses, options.slow_share, rng)
        self.round = 0

    def _positions(self, tick: int, seq: int, now_ms: int) -> list[LivePosition]:
        out = []
        for i in range(tick, self.buses, TICKS_PER_S):
            lon, lat = _where(i, seq)
            out.append(
                LivePosition(
                    operator=OPERATOR,
                    bus=bus_name(i),
                    device=f"dev-{i}",
                    seq=seq,
                    time_ms=now_ms,
                    lat=lat,
                    lon=lon,
                    trip_id=f"trip-{i}",
                    received_ms=now_ms,
                )
            )
        return out

    async def _publish(self, rounds: int) -> float:
        """``rounds`` seconds of every bus once a second, paced in ticks; returns updates/s achieved."""
        client = aioredis.Redis.from_url(self.redis_url)
        live = LiveState(client)
        started = time.monotonic()
        first_round = self.round + 1
        published = 0
        try:
            for _ in range(rounds):
                self.round += 1
                for tick in range(TICKS_PER_S):
                    due = started + (self.round - first_round) + tick / TICKS_PER_S
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    batch = self._positions(tick, self.round, int(time.time() * 1000))
                    await live.update(batch)
                    published += len(batch)
        finally:
            await client.aclose()
        return published / (time.monotonic() - started)

    async def _seed(self, with_etas: bool) -> None:
        """Every bus once (a round of its own), or one ETA per trip (the fan-out learns routes from them)."""
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            now = int(time.time() * 1000)
            if not with_etas:
                self.round += 1
                await LiveState(client).update(
                    [p for tick in range(TICKS_PER_S) for p in self._positions(tick, self.round, now)]
                )
            else:
                etas = [
                    EtaUpdate(
                        TripEtas(
                            operator=OPERATOR,
                            trip_id=f"trip-{i}",
                            route_id=f"route-{i // BUSES_PER_ROUTE}",
                            start_date="20261201",
                            start_time="08:00:00",
                            bus=bus_name(i),
                            feed_id=0,
                            time_ms=now,
                            updated_ms=now,
                            delay_s=0.0,
                            stops=[],
                        )
                    )
                    for i in range(self.buses)
                ]
                await EtaBoards(client).publish(etas, now)
        finally:
            await client.aclose()

    def phase(self, name: str, url: str, bare: bool, server_pid: int) -> PhaseFigures:
        ctx = multiprocessing.get_context("spawn")
        warm, cool = 5, 3
        asyncio.run(self._seed(with_etas=False))
        window = (self.round + warm + 1, self.round + warm + int(self.seconds))
        stop = ctx.Event()
        out = ctx.Queue()
        shares = [self.specs[n :: self.workers] for n in range(self.workers)]
        procs = [
            ctx.Process(target=_worker, args=(n, url, share, bare, window, stop, out))
            for n, share in enumerate(shares)
        ]
        for p in procs:
            p.start()
        try:
            self._wait_connected(name, out)
            if not bare:
                asyncio.run(self._seed(with_etas=True))
            rounds = warm + int(self.seconds) + cool
            self.report(f"{name}: publishing {self.buses:,} buses once a second for {rounds} s")
            before = _cpu_s(server_pid), sum(_cpu_s(p.pid) for p in procs if p.pid is not None)
            started = time.monotonic()
            updates_per_s = asyncio.run(self._publish(rounds))
            elapsed = time.monotonic() - started
            after = _cpu_s(server_pid), sum(_cpu_s(p.pid) for p in procs if p.pid is not None)
            cpu = ((after[0] - before[0]) / elapsed, (after[1] - before[1]) / elapsed)
            time.sleep(1)
        finally:
            stop.set()
        results: list[ClientResult] = []
        done = 0
        while done < len(procs):
            kind, _, value = out.get(timeout=300)
            if kind == "done":
                results += msgspec.msgpack.decode(value, type=list[ClientResult])
                done += 1
        for p in procs:
            p.join(30)
        return _figures(name, results, updates_per_s, self.seconds, cpu)

    def _wait_connected(self, name: str, out: Any) -> None:
        counts: dict[int, int] = {}
        errors = 0
        last_report = time.monotonic()
        deadline = time.monotonic() + 900
        while sum(counts.values()) + errors < len(self.specs):
            if time.monotonic() > deadline:
                raise BenchError(f"{name}: only {sum(counts.values())} clients connected in 900 s")
            try:
                kind, number, value = out.get(timeout=5)
            except queue.Empty:
                continue
            if kind == "connected":
                counts[number] = value
            elif kind == "error":
                errors += 1
                if errors > len(self.specs) // 100:
                    raise BenchError(f"{name}: {errors} clients failed to connect, the last: {value}")
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                self.report(f"{name}: {sum(counts.values()):,} of {len(self.specs):,} clients connected")
        self.report(f"{name}: {sum(counts.values()):,} clients connected and subscribed ({errors} failed)")


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used so far (``/proc/PID/stat``, Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _figures(
    name: str, results: list[ClientResult], updates_per_s: float, seconds: float, cpu: tuple[float, float]
) -> PhaseFigures:
    kinds = []
    fast = [r for r in results if not r.slow]
    for kind in KINDS:
        group = [r for r in fast if r.kind == kind]
        delays = np.array([d for r in group for d in r.delays_ms])
        p50, p99, top = np.percentile(delays, [50, 99, 100]) if delays.size else (math.nan,) * 3
        kinds.append(
            KindFigures(
                kind=kind,
                clients=len(group),
                messages_per_s=round(sum(r.received for r in group) / seconds, 1),
                p50_ms=round(float(p50), 1),
                p99_ms=round(float(p99), 1),
                max_ms=round(float(top), 1),
                complete_share=round(sum(r.complete for r in group) / max(1, len(group)), 4),
            )
        )
    slow = [r for r in results if r.slow]
    return PhaseFigures(
        name=name,
        connected=len(results),
        delivered_per_s=round(sum(r.received for r in results) / seconds, 1),
        updates_per_s=round(updates_per_s, 1),
        kinds=kinds,
        slow_clients=len(slow),
        slow_closed_3008=sum(r.close_code == 3008 for r in slow),
        slow_messages_per_s=round(sum(r.received for r in slow) / seconds, 1),
        server_cpu=round(cpu[0], 3),
        clients_cpu=round(cpu[1], 3),
    )


def run_fanout_bench(
    redis_url: str, database_url: str, report: Callable[[str], None], options: FanoutOptions
) -> FanoutBench:
    """Both phases, fleet serve then the bare loop, on the same clients and the same updates."""
    run = _Run(redis_url, report, options)
    port = free_port()
    env = {
        **os.environ,
        "FLEET_REDIS_URL": redis_url,
        "FLEET_DATABASE_URL": database_url,
        "FLEET_TOKEN_KEYS": run.key_text,
        "FLEET_TOKEN_ISSUER": run.settings.issuer,
        "FLEET_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "fleet_cli", "serve", "--addr", f"127.0.0.1:{port}"], env=env
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        fleet = run.phase("fleet serve", f"ws://127.0.0.1:{port}/v1/live", bare=False, server_pid=server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(30)
        server.kill()
    report(_phase_line(fleet))
    ctx = multiprocessing.get_context("spawn")
    bare_port = free_port()
    bare_server = ctx.Process(target=_bare_server, args=(bare_port, redis_url))
    bare_server.start()
    try:
        time.sleep(2)
        assert bare_server.pid is not None
        bare = run.phase(
            "bare websockets broadcast", f"ws://127.0.0.1:{bare_port}/", bare=True, server_pid=bare_server.pid
        )
    finally:
        bare_server.terminate()
        bare_server.join(10)
    report(_phase_line(bare))
    return _verdict(fleet, bare, options)


def _kind(p: PhaseFigures, kind: str) -> KindFigures:
    return next(k for k in p.kinds if k.kind == kind)


def _verdict(fleet: PhaseFigures, bare: PhaseFigures, options: FanoutOptions) -> FanoutBench:
    one_bus = max(_kind(fleet, "bus").p99_ms, _kind(fleet, "trip").p99_ms)
    fast_complete = min(k.complete_share for k in fleet.kinds if k.clients)
    targets = [
        Target("one-bus p99", one_bus, "ms", "under 100", one_bus < 100),
        Target("map p99", _kind(fleet, "bbox").p99_ms, "ms", "under 200", _kind(fleet, "bbox").p99_ms < 200),
        Target("not starved", fast_complete, "share", "1.0 of fast clients", fast_complete >= 1.0),
    ]
    ratio = fleet.delivered_per_s / bare.delivered_per_s if bare.delivered_per_s else float("nan")
    return FanoutBench(
        options.clients,
        options.buses,
        options.seconds,
        fleet,
        bare,
        round(ratio, 3),
        targets,
        all(t.passed for t in targets),
    )


def _phase_line(p: PhaseFigures) -> str:
    kinds = "; ".join(
        f"{k.kind} x{k.clients}: {k.messages_per_s:,.0f}/s p50 {k.p50_ms:g} p99 {k.p99_ms:g}"
        f" max {k.max_ms:g} ms, complete {k.complete_share:.1%}"
        for k in p.kinds
    )
    return (
        f"{p.name}: {p.connected:,} clients, {p.delivered_per_s:,.0f} messages/s delivered for"
        f" {p.updates_per_s:,.0f} updates/s; {kinds}; slow x{p.slow_clients}: {p.slow_messages_per_s:,.0f}/s,"
        f" {p.slow_closed_3008} closed 3008; CPU while publishing: server {p.server_cpu:.0%} of a core,"
        f" clients {p.clients_cpu:.0%}"
    )


def summary_text(result: FanoutBench) -> str:
    return "\n".join(
        [
            f"fan-out: {result.clients:,} clients, {result.buses:,} buses at 1 Hz,"
            f" {result.seconds:g} s measured",
            _phase_line(result.fleet),
            _phase_line(result.bare),
            f"fleet / bare delivered messages: {result.ratio:.2f}",
            *target_lines(result.targets),
        ]
    )
