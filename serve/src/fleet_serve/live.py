"""``/v1/live``: the websocket that follows buses, a shell around the pure :mod:`fleet_serve.fanout`.

A connection: the token (``?token=``, else a first ``{"type":"auth"}`` message
within ``FLEET_LIVE_AUTH_S``), then ``subscribe`` messages, each answered by
``subscribed``, a snapshot read from Redis, then the deltas the fan-out routes
to it. The message format is in :mod:`fleet_serve.fanout`; ``?format=msgpack``
switches the server's frames to binary msgpack.

Close codes: 3500 bad, expired or revoked token (the reason is the refusal's
code, as ``token_expired``); 3503 a role that cannot follow buses (analyst);
3501 no token in time, or ``?format`` unknown; 3005 the token expired while
connected (send a new ``auth`` message before ``exp`` to stay); 3008 the client
stayed behind for ``FLEET_LIVE_SLOW_S`` (Centrifugo's "slow"); 1013 Redis
cannot be read now. A ``subscribe`` the token does not cover, or a message
that does not decode, is answered with an ``error`` message and the connection
stays.

One :class:`LiveHub` per process, made by the first connection and kept in
``app.state``: one Redis pub/sub connection (``PSUBSCRIBE fleet:*:positions
fleet:*:etas fleet:*:events``) feeding the fan-out, open while any client is
connected, so every node sees every update whichever ingest wrote it. Pings
and their deadline are the websocket server's (``fleet serve`` sets uvicorn's
``ws_ping_interval``/``ws_ping_timeout`` from ``FLEET_LIVE_PING_S``), so a
client that vanishes is dropped within two intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import re
import time
from collections.abc import Coroutine
from typing import Any

from litestar import WebSocket, websocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from fleet_schemas.live import LivePosition
from fleet_schemas.trips import TripEtas
from fleet_serve.auth import Claims, Role, require, verify_token
from fleet_serve.errors import ApiError
from fleet_serve.fanout import (
    CLOSE_BAD_REQUEST,
    CLOSE_EXPIRED,
    CLOSE_FORBIDDEN,
    CLOSE_SLOW,
    CLOSE_UNAUTHORIZED,
    Auth,
    Client,
    ErrorMessage,
    Fanout,
    FanoutError,
    Filter,
    Format,
    Outgoing,
    Subscribe,
    Subscribed,
    decode_client_message,
    frame,
    trip_of,
)
from fleet_serve.services import Services, ServicesDep
from fleet_store.live import geo_key, reply_text

log = logging.getLogger("fleet_serve.live")

PATTERNS = ("fleet:*:positions", "fleet:*:etas", "fleet:*:events")
CLOSE_TRY_LATER = 1013
REDIS_READS = 16
"""connecting clients' token checks and snapshots in flight at once (the Redis pool holds 100)"""
LIVE_ROLES: tuple[Role, ...] = ("booking", "passenger")
"""who may follow buses (and managers, whom :func:`require` always admits)"""
METRES_PER_DEGREE = 6_371_008.8 * math.pi / 180

CLIENTS = Gauge("fleet_ws_clients", "websocket clients connected to /v1/live")
MESSAGES_SENT = Counter("fleet_ws_messages_sent_total", "messages sent to websocket clients")
FRAMES_SENT = Counter(
    "fleet_ws_frames_sent_total", "websocket frames sent (a frame holds one or more messages)"
)
DROPPED = Counter("fleet_ws_dropped_total", "messages not queued because the client's queue was full")
SLOW = Counter("fleet_ws_slow_disconnects_total", "clients closed with 3008 (slow)")
UPDATES = Counter("fleet_ws_updates_total", "positions, ETAs and events read from the live channels")
BAD_UPDATES = Counter("fleet_ws_bad_updates_total", "live-channel messages that did not decode", ["code"])
REFUSED = Counter("fleet_ws_refused_total", "connections closed for their token or role", ["code"])


_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]+")


class HideTokens(logging.Filter):
    """Blank ``?token=`` in log lines: uvicorn logs each websocket's path and query when it opens."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_TOKEN_IN_URL.sub(r"\1…", a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_IN_URL.sub(r"\1…", record.msg)
        return True


def _now_ms() -> int:
    return int(time.time() * 1000)


class LiveHub:
    """The process's fan-out, its one pub/sub reader, and the connections it wakes or closes."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.fanout = Fanout(settings.live_queue_bytes, int(settings.live_slow_s * 1000))
        self._sessions: dict[int, _Session] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._fleet_reads: dict[str, tuple[float, asyncio.Future[list[LivePosition]]]] = {}
        self.reads = asyncio.Semaphore(REDIS_READS)
        """bounds the Redis reads of connecting clients, so a reconnect storm queues instead of failing"""
        self._counted = (0, 0)
        """(updates, dropped) of the fan-out's stats already added to the metrics"""

    async def join(self, session: _Session, fmt: Format) -> Client:
        """A client for ``session``; the reader listening before this returns (so no delta is missed)."""
        client = self.fanout.connect(next(self._ids), fmt)
        self._sessions[client.id] = session
        CLIENTS.inc()
        if self._reader is None:
            self._listening = asyncio.Event()
            self._reader = asyncio.create_task(self._read(), name="fleet-live-reader")
        await self._listening.wait()
        return client

    def leave(self, client: Client) -> None:
        self.fanout.disconnect(client)
        if self._sessions.pop(client.id, None) is not None:
            CLIENTS.dec()
        if not self._sessions and self._reader is not None:
            self._reader.cancel()
            self._reader = None

    async def _read(self) -> None:
        """Listen to the live channels until cancelled, reconnecting (and re-sending snapshots) on errors."""
        lost = False
        while True:
            try:
                async with self.services.redis.pubsub() as pubsub:
                    await pubsub.psubscribe(*PATTERNS)
                    self._listening.set()
                    if lost:
                        for session in list(self._sessions.values()):
                            session.resubscribe()
                    await self._pump(pubsub)
            except (RedisError, OSError) as exc:
                lost = True
                log.warning("live channels lost (%s); reconnecting in 1 s", exc)
                await asyncio.sleep(1)

    async def _pump(self, pubsub: Any) -> None:
        next_sweep = time.monotonic() + 1
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            now_ms = _now_ms()
            if message is not None and message["type"] == "pmessage":
                channel = message["channel"]
                channel = reply_text(channel)
                try:
                    routed = self.fanout.on_message(channel, message["data"], now_ms)
                except FanoutError as exc:
                    BAD_UPDATES.labels(exc.code).inc()
                    log.warning("live update refused: %s", exc.message)
                    continue
                for client in routed.ready:
                    self._sessions[client.id].wake.set()
                self._close_slow(routed.slow)
                self._count()
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + 1
                self._close_slow(self.fanout.sweep(now_ms))

    def _close_slow(self, clients: set[Client]) -> None:
        for client in clients:
            SLOW.inc()
            self._sessions[client.id].close(CLOSE_SLOW, "slow")

    def _count(self) -> None:
        stats = self.fanout.stats
        updates, dropped = self._counted
        UPDATES.inc(stats.updates - updates)
        DROPPED.inc(stats.dropped - dropped)
        self._counted = (stats.updates, stats.dropped)

    async def snapshot(self, f: Filter, since: float) -> Outgoing:
        """What ``f`` covers now, read from Redis after ``since`` (monotonic: when the client was indexed)."""
        live, boards = self.services.live, self.services.boards
        positions: list[LivePosition]
        if f.bus is not None:
            one = await live.position(f.operator, f.bus)
            positions = [] if one is None else [one]
        elif f.trip_id is not None:
            on_trip = await boards.trip(f.operator, f.trip_id)
            states = await live.states([(f.operator, e.bus) for e in on_trip])
            positions = [p for p in states if p is not None]
        elif f.bbox is not None:
            positions = await self._in_box(f.operator, f.bbox)
        else:
            positions = await self._operator_buses(f.operator, since)
        positions = [p for p in positions if self.fanout.covers_position(f, p)]
        etas: list[TripEtas] = []
        if f.bbox is None:
            trips = {f.trip_id} if f.trip_id is not None else set()
            trips |= {t for p in positions if (t := trip_of(p)) is not None}
            for trip in sorted(trips):
                etas += await boards.trip(f.operator, trip)
        return self.fanout.snapshot(f, positions, etas)

    async def _operator_buses(self, operator: str, since: float) -> list[LivePosition]:
        """Every live bus of ``operator``, from a read started at or after ``since``, shared.

        Route and operator clients need the whole fleet; a read that began
        after a client was indexed holds everything it could have missed, so
        the clients subscribing meanwhile share it instead of each reading
        the fleet again.
        """
        held = self._fleet_reads.get(operator)
        if held is None or held[0] < since:
            held = (time.monotonic(), asyncio.ensure_future(self.services.live.buses(operator)))
            self._fleet_reads[operator] = held
            held[1].add_done_callback(functools.partial(self._forget_read, operator, held))
        return await asyncio.shield(held[1])

    def _forget_read(
        self, operator: str, read: tuple[float, asyncio.Future[list[LivePosition]]], _: object
    ) -> None:
        """A finished read serves nobody who subscribes later; drop it unless a newer one replaced it."""
        if self._fleet_reads.get(operator) is read:
            del self._fleet_reads[operator]

    async def _in_box(self, operator: str, bbox: tuple[float, float, float, float]) -> list[LivePosition]:
        """GEOSEARCH BYBOX over a box in metres that holds the degrees box (filtered exactly after)."""
        min_lon, min_lat, max_lon, max_lat = bbox
        lon, lat = (min_lon + max_lon) / 2, (min_lat + max_lat) / 2
        widest = (
            1.0 if min_lat <= 0 <= max_lat else max(math.cos(math.radians(x)) for x in (min_lat, max_lat))
        )
        width = (max_lon - min_lon) * METRES_PER_DEGREE * widest * 1.01 + 20
        height = (max_lat - min_lat) * METRES_PER_DEGREE * 1.01 + 20
        names = await self.services.redis.geosearch(
            geo_key(operator), longitude=lon, latitude=lat, width=width, height=height, unit="m"
        )
        buses = [(operator, reply_text(n)) for n in names]
        return [p for p in await self.services.live.states(buses) if p is not None]


def _data(event: Any) -> str | bytes:
    """What a ``websocket.receive`` event carries, text or bytes."""
    data = event.get("text") or event.get("bytes") or b""
    return data if isinstance(data, str | bytes) else b""


def _hub(state: State, services: Services) -> LiveHub:
    hub = state.get("live_hub")
    if hub is None or hub.services is not services:
        hub = LiveHub(services)
        state.live_hub = hub
    assert isinstance(hub, LiveHub)
    return hub


class _Session:
    """One connection: its token, its fan-out client, and the tasks that read from and send to it."""

    def __init__(self, socket: WebSocket[Any, Any, Any], hub: LiveHub) -> None:
        self.socket = socket
        self.hub = hub
        self.wake = asyncio.Event()
        self.closing: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.claims: Claims | None = None
        self.client: Client | None = None
        self._snapshots: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None

    def close(self, code: int, reason: str) -> None:
        if not self.closing.done():
            self.closing.set_result((code, reason))

    async def run(self) -> None:
        socket = self.socket
        await socket.accept()
        fmt = socket.query_params.get("format", "json")
        if fmt not in ("json", "msgpack"):
            await socket.close(CLOSE_BAD_REQUEST, "format must be json or msgpack")
            return
        token = socket.query_params.get("token") or await self._first_token()
        if token is None:
            return
        if not await self._authenticate(str(token)):
            return
        self.client = await self.hub.join(self, "json" if fmt == "json" else "msgpack")
        try:
            await self._serve()
        finally:
            for task in self._snapshots:
                task.cancel()
            if self._expiry is not None:
                self._expiry.cancel()
            self.hub.leave(self.client)

    async def _first_token(self) -> str | None:
        try:
            event = await asyncio.wait_for(self.socket.receive(), self.hub.services.settings.live_auth_s)
        except TimeoutError:
            await self.socket.close(CLOSE_BAD_REQUEST, "no auth message in time")
            return None
        if event["type"] == "websocket.disconnect":
            return None
        try:
            message = decode_client_message(_data(event))
        except FanoutError:
            message = None
        if not isinstance(message, Auth):
            await self.socket.close(
                CLOSE_BAD_REQUEST, 'the first message must be {"type":"auth","token":...}'
            )
            return None
        return message.token

    async def _authenticate(self, token: str) -> bool:
        """Verify ``token`` and (re)arm the expiry; on refusal close the socket, or tell a live client."""
        refused = await self._refusal(token)
        if refused is None:
            return True
        code, reason = refused
        REFUSED.labels(reason).inc()
        if self.client is None:
            await self.socket.close(code, reason)
        else:
            self._send_error(reason, "the new token is refused; the old one stays until it expires")
        return False

    async def _refusal(self, token: str) -> tuple[int, str] | None:
        try:
            async with self.hub.reads:
                claims = await verify_token(self.hub.services, token)
            require(claims, *LIVE_ROLES, trip_id=claims.trip_id, bus=claims.bus)
        except ApiError as exc:
            if exc.status == 401:
                return CLOSE_UNAUTHORIZED, exc.code
            if exc.status == 403:
                return CLOSE_FORBIDDEN, exc.code
            return CLOSE_TRY_LATER, exc.code
        self.claims = claims
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.create_task(self._expire(claims.exp))
        return None

    async def _expire(self, exp_s: int) -> None:
        await asyncio.sleep(max(0.0, exp_s - time.time()))
        self.close(CLOSE_EXPIRED, "token_expired")

    async def _serve(self) -> None:
        tasks: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._receive_loop()),
            asyncio.ensure_future(self._send_loop()),
            self.closing,
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks - {self.closing}:
                task.cancel()
            await asyncio.gather(*(tasks - {self.closing}), return_exceptions=True)
        if self.closing.done():
            code, reason = self.closing.result()
            with contextlib.suppress(OSError, WebSocketDisconnect, RuntimeError):
                await self.socket.close(code, reason)

    async def _receive_loop(self) -> None:
        while True:
            event = await self.socket.receive()
            if event["type"] == "websocket.disconnect":
                return
            try:
                message = decode_client_message(_data(event))
            except FanoutError as exc:
                self._send_error(exc.code, exc.message)
                continue
            if isinstance(message, Auth):
                await self._authenticate(message.token)
            else:
                self._subscribe(message)

    def _subscribe(self, message: Subscribe) -> None:
        assert self.claims is not None
        assert self.client is not None
        f = message.to_filter()
        try:
            require(self.claims, *LIVE_ROLES, operator=f.operator, trip_id=f.trip_id, bus=f.bus)
        except ApiError as exc:
            self._send_error(exc.code, exc.message)
            return
        self.hub.fanout.subscribe(self.client, f)
        self._start(self._snapshot(f, time.monotonic()))

    def resubscribe(self) -> None:
        """After the live channels were lost: the same filter again, and a fresh snapshot."""
        if self.client is not None and self.client.filter is not None:
            f = self.client.filter
            self.hub.fanout.subscribe(self.client, f)
            self._start(self._snapshot(f, time.monotonic()))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        for task in self._snapshots:
            task.cancel()
        task = asyncio.ensure_future(work)
        self._snapshots = {task}

    async def _snapshot(self, f: Filter, since: float) -> None:
        assert self.client is not None
        try:
            async with self.hub.reads:
                snapshot = await self.hub.snapshot(f, since)
        except (RedisError, OSError) as exc:
            log.warning("live snapshot failed: %s", exc)
            self.close(CLOSE_TRY_LATER, "redis_unavailable")
            return
        if self.client.filter is f:
            self.client.queue.reply(Outgoing(Subscribed(f)))
            self.client.queue.start(snapshot)
            self.wake.set()

    def _send_error(self, code: str, message: str) -> None:
        self._send_now(Outgoing(ErrorMessage(code, message)))

    def _send_now(self, item: Outgoing) -> None:
        """A reply to the client's own message: ahead of the queue (it is not a delta to coalesce)."""
        assert self.client is not None
        self.client.queue.reply(item)
        self.wake.set()

    async def _send_loop(self) -> None:
        assert self.client is not None
        client = self.client
        socket = self.socket
        loop = asyncio.get_running_loop()
        settings = self.hub.services.settings
        drained_at = -math.inf
        while True:
            await self.wake.wait()
            f = client.filter
            tick_ms = 0 if f is None else f.tick_ms(settings.live_tick_ms, settings.live_route_tick_ms)
            if tick_ms:
                # a route, a box, an operator: what arrives within the tick goes out as one frame
                wait = drained_at + tick_ms / 1000 - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            self.wake.clear()
            drained_at = loop.time()
            items = client.queue.drain(_now_ms())
            if not items:
                continue
            data = frame(items, client.fmt)
            try:
                if isinstance(data, str):
                    await socket.send_data(data, mode="text")
                else:
                    await socket.send_data(data, mode="binary")
            except (OSError, WebSocketDisconnect, RuntimeError):
                return
            client.queue.sent()
            FRAMES_SENT.inc()
            MESSAGES_SENT.inc(len(items))


@websocket("/v1/live")
async def live(socket: WebSocket[Any, Any, Any], services: ServicesDep) -> None:
    """Follow buses: see :mod:`fleet_serve.live` and :mod:`fleet_serve.fanout` for the protocol."""
    await _Session(socket, _hub(socket.app.state, services)).run()


ROUTES = [live]
