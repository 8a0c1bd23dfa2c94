"""``/v1/live`` end to end: a real uvicorn server, real Redis and PostgreSQL, real websocket clients.

State is written with the store's own writers (``LiveState.update``,
``EtaBoards.publish``, the event outbox), which publish on the live channels
exactly as ingest does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from fleet_schemas.events import EVENT_ENCODER, Event
from fleet_schemas.live import LivePosition
from fleet_serve.app import create_app
from fleet_serve.auth import Role, issue_token
from fleet_serve.fanout import (
    CLOSE_EXPIRED,
    CLOSE_FORBIDDEN,
    CLOSE_SLOW,
    CLOSE_UNAUTHORIZED,
    SERVER_MESSAGE_DECODER,
    SERVER_MESSAGE_MSGPACK_DECODER,
    ErrorMessage,
    EtasMessage,
    EventMessage,
    Gone,
    PositionMessage,
    ServerMessage,
    Snapshot,
    Subscribed,
)
from fleet_serve.settings import ServeSettings, TokenKey
from fleet_store import tokens
from fleet_store.etas import EtaBoards, EtaUpdate
from fleet_store.events import EventOutbox, outbox_key
from fleet_store.live import LiveState
from fleet_testing.records import trip_etas
from fleet_testing.serving import serving

pytestmark = pytest.mark.stack

KEY = TokenKey("live-test", b"k" * 32)
SETTINGS = ServeSettings(token_keys=(KEY,), issuer="fleet-test")


@pytest.fixture
def live_url(redis_url: str, database_url: str) -> Iterator[str]:
    with serving(create_app(SETTINGS, redis_url, database_url), SETTINGS) as base:
        yield base.replace("http", "ws") + "/v1/live"


def _token(role: Role, operator: str, ttl_s: int = 600, trip_id: str | None = None) -> str:
    token, _ = issue_token(
        SETTINGS, role=role, operators=(operator,), ttl_s=ttl_s, sub="test", trip_id=trip_id
    )
    return token


def _position(
    operator: str, bus: str, lon: float, lat: float, seq: int, trip: str | None = None
) -> LivePosition:
    now = int(time.time() * 1000)
    return LivePosition(
        operator=operator,
        bus=bus,
        device=f"d-{bus}",
        seq=seq,
        time_ms=now + seq,
        lat=lat,
        lon=lon,
        trip_id=trip,
    )


async def _messages(ws: ClientConnection) -> list[ServerMessage]:
    decoded = SERVER_MESSAGE_DECODER.decode(await ws.recv())
    return decoded if isinstance(decoded, list) else [decoded]


async def _until(ws: ClientConnection, done: Callable[[ServerMessage], bool]) -> list[ServerMessage]:
    """Every message up to and including the first for which ``done`` holds."""
    got: list[ServerMessage] = []
    while True:
        for m in await _messages(ws):
            got.append(m)
            if done(m):
                return got


async def _closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Read to the end; the server's close code and reason."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.recv()
    received = ws.protocol.close_rcvd
    assert received is not None, "the server closed without a close frame"
    return received.code, received.reason


@asynccontextmanager
async def _redis(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def _subscribe(ws: ClientConnection, **what: Any) -> Snapshot:
    await ws.send(msgspec.json.encode({"type": "subscribe", **what}))
    got = await _until(ws, lambda m: isinstance(m, Snapshot))
    assert isinstance(got[0], Subscribed)
    snapshot = got[-1]
    assert isinstance(snapshot, Snapshot)
    return snapshot


def test_a_box_client_gets_exactly_the_buses_inside_its_box_also_when_it_moves(
    live_url: str, redis_url: str, operator_id: str
) -> None:
    op = operator_id
    box_a = (3.00, 36.70, 3.10, 36.80)
    box_b = (3.20, 36.70, 3.30, 36.80)

    async def run() -> None:
        async with _redis(redis_url) as r:
            live = LiveState(r)
            await live.update(
                [_position(op, f"in{i}", 3.05, 36.71 + i / 100, i) for i in range(3)]
                + [_position(op, f"out{i}", 3.25, 36.71 + i / 100, 10 + i) for i in range(3)]
            )
            async with connect(f"{live_url}?token={_token('manager', op)}") as ws:
                snapshot = await _subscribe(ws, operator=op, bbox=list(box_a))
                assert {p.bus for p in snapshot.positions} == {"in0", "in1", "in2"}
                await live.update(
                    [_position(op, "in0", 3.25, 36.75, 20), _position(op, "out0", 3.05, 36.75, 21)]
                )
                await live.update([_position(op, "in1", 3.06, 36.72, 22)])
                got = await _until(ws, lambda m: isinstance(m, PositionMessage) and m.position.bus == "in1")
                assert {(type(m).__name__, _bus(m)) for m in got} == {
                    ("Gone", "in0"),
                    ("PositionMessage", "out0"),
                    ("PositionMessage", "in1"),
                }
                snapshot = await _subscribe(ws, operator=op, bbox=list(box_b))
                assert {p.bus for p in snapshot.positions} == {"in0", "out1", "out2"}
                await live.update(
                    [_position(op, "in2", 3.05, 36.73, 23), _position(op, "out1", 3.26, 36.77, 24)]
                )
                got = await _until(ws, lambda m: isinstance(m, PositionMessage) and m.position.bus == "out1")
                assert [_bus(m) for m in got] == ["out1"], "nothing of a bus outside the new box"

    asyncio.run(run())


def _bus(m: ServerMessage) -> str:
    if isinstance(m, PositionMessage):
        return m.position.bus
    if isinstance(m, Gone):
        return m.bus
    raise AssertionError(f"not a position: {m}")


def _event(op: str, bus: str, trip: str, seq: int) -> Event:
    now = int(time.time() * 1000)
    return Event(
        operator=op,
        bus=bus,
        kind="stop_arrived",
        time_ms=now,
        cause_ms=now,
        cause_seq=seq,
        subject=f"{trip}/20261201/08:00:00#{seq}",
        trip_id=trip,
        route_id=f"r-{trip}",
        details={"stop_sequence": seq},
    )


async def _store_events(r: aioredis.Redis, database_url: str, events: list[Event]) -> None:
    """Through the outbox, as ingest does: stored in PostgreSQL once, then published."""
    await r.rpush(outbox_key(events[0].operator), *(EVENT_ENCODER.encode(e) for e in events))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        await EventOutbox(r).flush(pool, [events[0].operator])
    finally:
        await pool.close()


def test_a_trip_client_gets_that_trips_eta_changes_and_events(
    live_url: str, redis_url: str, database_url: str, operator_id: str
) -> None:
    op = operator_id
    t0 = int(time.time() * 1000) + 600_000

    async def run() -> None:
        async with _redis(redis_url) as r:
            live, boards = LiveState(r), EtaBoards(r)
            await live.update(
                [_position(op, "b1", 3.0, 36.7, 1, "t1"), _position(op, "b2", 3.1, 36.7, 2, "t2")]
            )
            await boards.publish([EtaUpdate(trip_etas(op, "t1", "b1", t0))], now_ms=t0 - 600_000)
            passenger = _token("passenger", op, ttl_s=600, trip_id="t1")
            async with connect(f"{live_url}?token={passenger}") as ws:
                snapshot = await _subscribe(ws, operator=op, trip_id="t1")
                assert [p.bus for p in snapshot.positions] == ["b1"]
                assert [(e.trip_id, e.stops[0].arrival_ms) for e in snapshot.etas] == [("t1", t0)]
                await ws.send(b'{"type":"subscribe","operator":"%s","trip_id":"t2"}' % op.encode())
                refused = await _until(ws, lambda m: isinstance(m, ErrorMessage))
                assert isinstance(refused[-1], ErrorMessage)
                assert refused[-1].code == "other_trip"
                await boards.publish(
                    [
                        EtaUpdate(trip_etas(op, "t2", "b2", t0)),
                        EtaUpdate(trip_etas(op, "t1", "b1", t0 + 1_000)),
                    ],
                    now_ms=t0 - 599_000,
                )
                await _store_events(r, database_url, [_event(op, "b2", "t2", 1), _event(op, "b1", "t1", 2)])
                await _store_events(r, database_url, [_event(op, "b1", "t1", 3)])
                got = await _until(ws, lambda m: isinstance(m, EventMessage) and m.event.cause_seq == 3)
            etas = [m.etas for m in got if isinstance(m, EtasMessage)]
            events = [m.event for m in got if isinstance(m, EventMessage)]
            assert [(e.trip_id, e.stops[0].arrival_ms) for e in etas] == [("t1", t0 + 1_000)]
            assert [(e.trip_id, e.cause_seq) for e in events] == [("t1", 2), ("t1", 3)]
            assert all(isinstance(m, EtasMessage | EventMessage) for m in got)

    asyncio.run(run())


def test_bad_expired_revoked_and_wrong_role_tokens_are_refused_with_a_close_code(
    live_url: str, redis_url: str, database_url: str, operator_id: str
) -> None:
    op = operator_id
    forged = _token("manager", op)[:-4] + "AAAA"
    revoked, claims = issue_token(SETTINGS, role="booking", operators=(op,), ttl_s=600, sub="gone")
    expired, _ = issue_token(
        SETTINGS, role="manager", operators=(op,), ttl_s=60, sub="old", now_s=int(time.time()) - 3_600
    )

    async def refusal(token: str, first_message: bool = False) -> tuple[int, str]:
        url = live_url if first_message else f"{live_url}?token={token}"
        async with connect(url) as ws:
            if first_message:
                await ws.send(msgspec.json.encode({"type": "auth", "token": token}))
            return await _closed_with(ws)

    async def run() -> None:
        async with _redis(redis_url) as r:
            pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
            assert pool is not None
            try:
                await tokens.revoke(pool, r, claims.jti, claims.exp * 1000)
            finally:
                await pool.close()
        assert await refusal(forged) == (CLOSE_UNAUTHORIZED, "token_bad_signature")
        assert await refusal(forged, first_message=True) == (CLOSE_UNAUTHORIZED, "token_bad_signature")
        assert await refusal(expired) == (CLOSE_UNAUTHORIZED, "token_expired")
        assert await refusal(revoked) == (CLOSE_UNAUTHORIZED, "token_revoked")
        assert await refusal(_token("analyst", op)) == (CLOSE_FORBIDDEN, "wrong_role")

    asyncio.run(run())


def test_a_connection_is_closed_when_its_token_expires(live_url: str, operator_id: str) -> None:
    async def run() -> None:
        async with connect(f"{live_url}?token={_token('booking', operator_id, ttl_s=1)}") as ws:
            await _subscribe(ws, operator=operator_id)
            assert await _closed_with(ws) == (CLOSE_EXPIRED, "token_expired")

    asyncio.run(run())


def _slow_counted() -> float:
    return REGISTRY.get_sample_value("fleet_ws_slow_disconnects_total") or 0.0


def test_a_slow_client_does_not_delay_a_fast_one_and_is_closed_as_slow(
    redis_url: str, database_url: str, operator_id: str
) -> None:
    """The slow client never reads (a 4 KiB receive buffer) and follows every bus; the fast one follows one.

    (It neither compresses, which would let megabytes of repetitive JSON through
    the kernel's buffers, nor pings, since it cannot read the pongs.)

    The fast client must get every round's position of its bus, in order,
    while the slow one's pipe is full; the slow one, once it reads again,
    finds everything up to a 3008 close.
    """
    op = operator_id
    tight = msgspec.structs.replace(SETTINGS, live_queue_bytes=32_768, live_slow_s=1.0)
    buses = [f"b{i}" for i in range(500)]

    async def run(url: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])))
        manager = _token("manager", op)
        async with (
            _redis(redis_url) as r,
            connect(
                f"{url}?token={manager}", sock=sock, max_queue=4, compression=None, ping_interval=None
            ) as slow,
            connect(f"{url}?token={manager}") as fast,
        ):
            await _subscribe(slow, operator=op)
            await _subscribe(fast, operator=op, bus="b7")
            live, before, rounds = LiveState(r), _slow_counted(), 0
            while _slow_counted() == before:
                rounds += 1
                assert rounds < 2_000, "the slow client was never closed"
                await live.update(
                    [_position(op, b, 3.0 + i / 1e4, 36.7, rounds) for i, b in enumerate(buses)]
                )
                got = await _until(fast, lambda m: isinstance(m, PositionMessage))
                assert [m.position.seq for m in got if isinstance(m, PositionMessage)] == [rounds]
            assert rounds > 1
            assert await _closed_with(slow) == (CLOSE_SLOW, "slow")

    with serving(create_app(tight, redis_url, database_url), tight) as base:
        asyncio.run(run(base.replace("http", "ws") + "/v1/live"))


def test_a_route_box_or_operator_client_gets_one_frame_per_tick_with_the_newest_of_each_bus(
    redis_url: str, database_url: str, operator_id: str
) -> None:
    """Updates of several buses published one by one within a tick reach an operator client as one frame.

    The tick is long (5 s) so that the four publishes surely fall inside it; the first update goes out at
    once (nothing was sent yet) and starts the tick.
    """
    op = operator_id
    ticked = msgspec.structs.replace(SETTINGS, live_tick_ms=5_000)

    async def run(url: str) -> None:
        async with _redis(redis_url) as r, connect(f"{url}?token={_token('manager', op)}") as ws:
            await _subscribe(ws, operator=op)
            live = LiveState(r)
            await live.update([_position(op, "b0", 3.0, 36.7, 1)])
            first = await _messages(ws)
            assert [_bus(m) for m in first] == ["b0"]
            for seq in range(2, 6):
                await live.update([_position(op, f"b{seq % 3}", 3.0, 36.7 + seq / 1e3, seq)])
            frame = await _messages(ws)
            assert {_bus(m): m.position.seq for m in frame if isinstance(m, PositionMessage)} == {
                "b2": 5,
                "b0": 3,
                "b1": 4,
            }, "one frame, the newest position of each bus"

    with serving(create_app(ticked, redis_url, database_url), ticked) as base:
        asyncio.run(run(base.replace("http", "ws") + "/v1/live"))


def test_a_msgpack_client_gets_binary_frames_of_the_same_messages(
    live_url: str, redis_url: str, operator_id: str
) -> None:
    op = operator_id

    async def run() -> None:
        async with _redis(redis_url) as r:
            live = LiveState(r)
            await live.update([_position(op, "b1", 3.0, 36.7, 1)])
            async with connect(f"{live_url}?format=msgpack&token={_token('booking', op)}") as ws:
                await ws.send(msgspec.json.encode({"type": "subscribe", "operator": op, "bus": "b1"}))
                got: list[ServerMessage] = []
                while not any(isinstance(m, Snapshot) for m in got):
                    raw = await ws.recv()
                    assert isinstance(raw, bytes), "msgpack comes in binary frames"
                    decoded = SERVER_MESSAGE_MSGPACK_DECODER.decode(raw)
                    got += decoded if isinstance(decoded, list) else [decoded]
                snapshot = got[-1]
                assert isinstance(snapshot, Snapshot)
                assert [p.bus for p in snapshot.positions] == ["b1"]
                await live.update([_position(op, "b1", 3.001, 36.7, 2)])
                raw = await ws.recv()
                assert isinstance(raw, bytes)
                moved = SERVER_MESSAGE_MSGPACK_DECODER.decode(raw)
                assert isinstance(moved, PositionMessage)
                assert moved.position.seq == 2

    asyncio.run(run())
