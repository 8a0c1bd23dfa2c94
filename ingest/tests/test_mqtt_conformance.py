"""The lean MQTT 5 consumer against a scripted peer: what a real broker rarely does on cue.

The peer is a loopback TCP server that speaks just enough MQTT 5 to follow
one script per test (split packets, silence, DISCONNECT, odd CONNACKs and
SUBACKs). Everything else about the consumer is tested against the real
Mosquitto in test_mqtt_consumer.py.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest

from fleet_ingest.keycache import KeyCache
from fleet_ingest.mqtt_consumer import Consumer, Message, MqttError
from fleet_ingest.mqtt_wire import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PROP_ASSIGNED_CLIENT_ID,
    PROP_MAXIMUM_PACKET_SIZE,
    PROP_REASON_STRING,
    PROP_RECEIVE_MAXIMUM,
    PROP_SERVER_KEEP_ALIVE,
    PROP_SESSION_EXPIRY,
    PUBACK,
    SUBACK,
    SUBSCRIBE,
    packet,
    publish_packet,
    read_properties,
    read_varint,
    string,
    varint,
)
from fleet_ingest.service import Ingest, IngestOptions, open_pool, open_redis
from fleet_schemas import MAX_PACKET_BYTES, Frame, frames_topic, seal
from fleet_store.devices import add_device
from fleet_store.live import LiveState
from fleet_store.secretbox import KeyEncryptionKey

Received = tuple[int, int, bytes]


class Peer:
    """One accepted connection: what the consumer sent, and a way to answer it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.received: list[Received] = []
        self.got = asyncio.Condition()

    async def expect(self, kind: int) -> bytes:
        """Read the consumer's next packet, which must be of ``kind``; return its body."""
        received = await self._read()
        assert received[0] == kind, f"expected packet type {kind}, got {received[0]}"
        return received[2]

    async def _read(self) -> Received:
        head = await self._reader.readexactly(1)
        length = bytearray()
        while not length or length[-1] & 0x80:
            length += await self._reader.readexactly(1)
        decoded = read_varint(bytes(length), 0)
        assert decoded is not None
        body = await self._reader.readexactly(decoded[0])
        received = (head[0] >> 4, head[0] & 0x0F, body)
        async with self.got:
            self.received.append(received)
            self.got.notify_all()
        return received

    async def send(self, data: bytes, *, byte_by_byte: bool = False) -> None:
        for piece in [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]:
            self._writer.write(piece)
            await self._writer.drain()

    async def answer_pings(self) -> None:
        """Answer each PINGREQ until the consumer sends DISCONNECT (then close, as a broker does)."""
        while (kind := (await self._read())[0]) != DISCONNECT:
            if kind == PINGREQ:
                await self.send(packet(PINGRESP, 0, b""))

    async def ignore_everything(self) -> None:
        """Answer nothing, until the consumer sends DISCONNECT or goes: a broker that stopped."""
        while (await self._read())[0] != DISCONNECT:
            pass

    async def wait_for(self, kind: int, count: int = 1) -> None:
        """Until the consumer has sent ``count`` packets of ``kind``."""
        async with self.got:
            await asyncio.wait_for(
                self.got.wait_for(lambda: sum(r[0] == kind for r in self.received) >= count), 10
            )

    async def accept(self, connack: bytes | None = None, suback: bytes | None = None) -> None:
        """CONNECT → CONNACK, SUBSCRIBE → SUBACK (QoS 1 granted unless told otherwise)."""
        await self.expect(CONNECT)
        await self.send(connack or connack_packet())
        await self.expect(SUBSCRIBE)
        await self.send(suback or suback_packet())


Script = Callable[[Peer], Awaitable[None]]


async def _accept_then_ignore(peer: Peer) -> None:
    await peer.accept()
    await peer.ignore_everything()


async def _accept_then_answer_pings(peer: Peer) -> None:
    await peer.accept()
    await peer.answer_pings()


@asynccontextmanager
async def scripted_peer(script: Script) -> AsyncIterator[tuple[str, list[Peer]]]:
    """A loopback server running ``script`` for each connection; yields its URL and the peers so far."""
    peers: list[Peer] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        peers.append(peer)
        try:
            await script(peer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"mqtt://127.0.0.1:{port}", peers
    finally:
        server.close()


def prop(identifier: int, value: bytes) -> bytes:
    return bytes([identifier]) + value


def connack_packet(code: int = 0, properties: bytes = b"", *, session_present: bool = False) -> bytes:
    return packet(CONNACK, 0, bytes([int(session_present), code]) + varint(len(properties)) + properties)


def suback_packet(code: int = 1, properties: bytes = b"", packet_id: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + varint(len(properties)) + properties + bytes([code])
    return packet(SUBACK, 0, body)


def disconnect_packet(code: int, reason_string: str) -> bytes:
    properties = prop(PROP_REASON_STRING, string(reason_string))
    return packet(DISCONNECT, 0, bytes([code]) + varint(len(properties)) + properties)


def _consumer(
    url: str, *, keepalive_s: int = 30, connect_timeout_s: float = 30.0, inbox_max_bytes: int = 1 << 26
) -> Consumer:
    return Consumer(
        url,
        "conformance",
        "fleet/v1/+/+/frames",
        clean_start=True,
        keepalive_s=keepalive_s,
        connect_timeout_s=connect_timeout_s,
        inbox_max_bytes=inbox_max_bytes,
    )


async def _receive_forever(consumer: Consumer) -> None:
    """Until the connection fails (bounded by ``_run``)."""
    while True:
        await consumer.receive(10, 1.0)


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_connect_advertises_our_packet_limit_and_subscribe_asks_qos_1_without_retained() -> None:
    async def scenario() -> None:
        async with scripted_peer(_accept_then_ignore) as (url, peers), _consumer(url):
            pass
        connect, subscribe = peers[0].received[0][2], peers[0].received[1][2]
        properties_at = 10  # "MQTT" as a string, version, flags, keepalive
        assert read_properties(connect, properties_at)[0][PROP_MAXIMUM_PACKET_SIZE] == MAX_PACKET_BYTES
        options = subscribe[-1]
        assert options & 0x03 == 1, "QoS 1"
        assert (options >> 4) & 0x03 == 2, "retain handling 2: no retained messages at subscribe"
        assert options & 0x0C == 0, "no local and retain as published left at their defaults"

    _run(scenario)


def test_every_packet_arriving_one_byte_at_a_time_is_parsed() -> None:
    publishes = [
        publish_packet(f"fleet/v1/op/dev{i}/frames", bytes([i]) * (130 + i), i + 1) for i in range(3)
    ]

    async def script(peer: Peer) -> None:
        await peer.expect(CONNECT)
        await peer.send(connack_packet(properties=prop(PROP_RECEIVE_MAXIMUM, b"\x00\x10")), byte_by_byte=True)
        await peer.expect(SUBSCRIBE)
        await peer.send(suback_packet() + b"".join(publishes), byte_by_byte=True)
        await peer.answer_pings()

    async def scenario() -> None:
        async with scripted_peer(script) as (url, _), _consumer(url) as consumer:
            taken: list[Message] = []
            while len(taken) < 3:
                batch = await consumer.receive(10, 5.0)
                assert batch, f"only {len(taken)} of 3 messages arrived"
                taken += batch
        assert [(m.topic, m.payload, m.packet_id) for m in taken] == [
            (f"fleet/v1/op/dev{i}/frames", bytes([i]) * (130 + i), i + 1) for i in range(3)
        ]

    _run(scenario)


def test_publishes_in_the_same_write_as_connack_and_suback_are_received_at_once() -> None:
    """A resumed session's queue arrives with the handshake; nothing else comes to wake the reader."""

    async def script(peer: Peer) -> None:
        await peer.expect(CONNECT)
        await peer.send(connack_packet(session_present=True) + publish_packet("t/a", b"one", 1))
        await peer.expect(SUBSCRIBE)
        queued = publish_packet("t/b", b"two", 2) + suback_packet() + publish_packet("t/c", b"three", 3)
        await peer.send(queued)
        await peer.ignore_everything()

    async def scenario() -> None:
        async with scripted_peer(script) as (url, _), _consumer(url) as consumer:
            assert consumer.session_present
            taken = await consumer.receive(10, 5.0)
        assert [m.payload for m in taken] == [b"one", b"two", b"three"]

    _run(scenario)


def test_silent_broker_fails_the_connection_with_no_pingresp() -> None:
    async def scenario() -> None:
        async with scripted_peer(_accept_then_ignore) as (url, peers):
            async with _consumer(url, keepalive_s=1) as consumer:
                with pytest.raises(MqttError, match="no PINGRESP"):
                    await _receive_forever(consumer)
            assert any(kind == PINGREQ for kind, _, _ in peers[0].received)

    _run(scenario)


def test_broker_that_answers_pings_keeps_the_connection_over_many_keepalives() -> None:
    async def scenario() -> None:
        async with (
            scripted_peer(_accept_then_answer_pings) as (url, peers),
            _consumer(url, keepalive_s=1) as consumer,
        ):
            await peers[0].wait_for(PINGREQ, count=6)  # three keepalives
            assert await consumer.receive(10, 0.1) == []

    _run(scenario)


@pytest.mark.parametrize(
    ("code", "logged"),
    [
        (0x8E, "session taken over by another connection with our client id"),
        (0x98, "the broker disconnected us"),
    ],
)
def test_disconnect_from_the_broker_names_its_reason_in_the_error_and_the_log(
    code: int, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(publish_packet("t/a", b"before", 1) + disconnect_packet(code, "told to go"))

    async def scenario() -> None:
        async with scripted_peer(script) as (url, _), _consumer(url) as consumer:
            assert [m.payload for m in await consumer.receive(10, 5.0)] == [b"before"]
            with pytest.raises(MqttError, match=f"reason code 0x{code:02x}.*'told to go'") as raised:
                await consumer.receive(10, 5.0)
            assert raised.value.reason_code == code

    with caplog.at_level(logging.WARNING, logger="fleet_ingest.mqtt_consumer"):
        _run(scenario)
    [record] = [r for r in caplog.records if r.name == "fleet_ingest.mqtt_consumer"]
    assert record.getMessage() == logged
    assert record.__dict__["reason_code"] == f"0x{code:02x}"
    assert record.__dict__["reason_string"] == "told to go"


@pytest.mark.parametrize(
    ("suback", "error"),
    [
        (suback_packet(0x00), "granted QoS 0 where QoS 1 was asked"),
        (
            suback_packet(0x87, prop(PROP_REASON_STRING, string("no frames for you"))),
            r"refused the subscription: reason code 0x87 \(not authorized\): 'no frames for you'",
        ),
    ],
)
def test_suback_that_grants_less_than_qos_1_is_an_error(suback: bytes, error: str) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept(suback=suback)
        await peer.ignore_everything()

    async def scenario() -> None:
        async with scripted_peer(script) as (url, _):
            with pytest.raises(MqttError, match=error):
                await _consumer(url).__aenter__()

    _run(scenario)


def test_suback_behind_a_queue_that_fills_the_inbox_is_checked_when_it_is_read() -> None:
    """The handshake cannot wait for a SUBACK that sits behind more than the inbox holds."""

    async def script(peer: Peer) -> None:
        await peer.expect(CONNECT)
        await peer.send(connack_packet(session_present=True))
        await peer.expect(SUBSCRIBE)
        queued = b"".join(publish_packet("t/a", bytes([i]) * 1_000, i + 1) for i in range(3))
        await peer.send(queued)
        await asyncio.sleep(0.1)  # the queue and the SUBACK in separate reads
        await peer.send(suback_packet(0x00))
        await peer.ignore_everything()

    async def scenario() -> None:
        async with scripted_peer(script) as (url, _), _consumer(url, inbox_max_bytes=1_500) as consumer:
            taken = await consumer.receive(10, 5.0)
            with pytest.raises(MqttError, match="granted QoS 0"):
                await _receive_forever(consumer)
        assert len(taken) == 3

    _run(scenario)


def test_connack_properties_are_honoured_and_unused_ones_skipped() -> None:
    properties = (
        prop(0x26, string("vendor") + string("x"))  # user property: skipped
        + prop(0x22, b"\x00\x0a")  # topic alias maximum: skipped
        + prop(0x25, b"\x01")  # retain available: skipped
        + prop(PROP_SERVER_KEEP_ALIVE, b"\x00\x01")
        + prop(PROP_RECEIVE_MAXIMUM, b"\x00\x10")
        + prop(PROP_MAXIMUM_PACKET_SIZE, struct.pack("!I", 4096))
        + prop(PROP_ASSIGNED_CLIENT_ID, string("assigned-7"))
        + prop(PROP_SESSION_EXPIRY, struct.pack("!I", 60))
    )

    async def script(peer: Peer) -> None:
        await peer.accept(connack=connack_packet(properties=properties))
        await peer.answer_pings()

    async def scenario() -> None:
        async with scripted_peer(script) as (url, peers), _consumer(url, keepalive_s=60) as consumer:
            assert consumer.keepalive_s == 1, "the broker's Server Keep Alive replaces ours"
            assert consumer.client_id == "assigned-7"
            assert consumer.connack.receive_maximum == 16
            assert consumer.connack.maximum_packet_size == 4096
            assert consumer.connack.session_expiry_s == 60
            await peers[0].wait_for(PINGREQ)  # at keepalive 60 s none would come for 30 s

    _run(scenario)


def test_subscribe_over_the_brokers_maximum_packet_size_is_not_sent() -> None:
    async def script(peer: Peer) -> None:
        await peer.expect(CONNECT)
        await peer.send(connack_packet(properties=prop(PROP_MAXIMUM_PACKET_SIZE, struct.pack("!I", 16))))
        await peer.ignore_everything()

    async def scenario() -> None:
        async with scripted_peer(script) as (url, peers):
            with pytest.raises(MqttError, match="over the broker's maximum packet size of 16"):
                await _consumer(url).__aenter__()
            await asyncio.sleep(0)
            assert [kind for kind, _, _ in peers[0].received] == [CONNECT]

    _run(scenario)


def test_refused_connack_carries_the_brokers_reason_string() -> None:
    async def script(peer: Peer) -> None:
        await peer.expect(CONNECT)
        await peer.send(connack_packet(0x87, prop(PROP_REASON_STRING, string("device logins cannot read"))))

    async def scenario() -> None:
        async with scripted_peer(script) as (url, _):
            with pytest.raises(
                MqttError, match=r"reason code 0x87 \(not authorized\): 'device logins cannot read'"
            ) as raised:
                await _consumer(url).__aenter__()
            assert raised.value.reason_code == 0x87

    _run(scenario)


def test_property_unknown_to_mqtt_5_is_a_malformed_packet() -> None:
    with pytest.raises(MqttError, match="unknown property 0x7f"):
        read_properties(b"\x02\x7f\x00", 0)


@pytest.mark.parametrize(("answered", "missing"), [(0, "CONNACK"), (1, "SUBACK")])
def test_handshake_that_is_never_answered_times_out(answered: int, missing: str) -> None:
    async def script(peer: Peer) -> None:
        await peer.expect(CONNECT)
        if answered:
            await peer.send(connack_packet())
        await peer.ignore_everything()

    async def scenario() -> None:
        async with scripted_peer(script) as (url, _):
            with pytest.raises(MqttError, match=f"no {missing} within 0.5 s"):
                await _consumer(url, connect_timeout_s=0.5).__aenter__()

    _run(scenario)


def test_receive_takes_at_most_max_bytes_of_payload_but_always_one_message() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(b"".join(publish_packet("t/a", bytes([i]) * 1_000, i + 1) for i in range(5)))
        await peer.answer_pings()

    async def scenario() -> None:
        async with scripted_peer(script) as (url, _), _consumer(url) as consumer:
            await consumer.wait(5.0)
            while consumer.waiting < 5:
                await asyncio.sleep(0.01)
            assert consumer.waiting_bytes == 5_000
            assert len(consumer.take(10, max_bytes=2_500)) == 2
            assert len(consumer.take(10, max_bytes=10)) == 1
            assert len(consumer.take(1, max_bytes=10_000)) == 1
            assert len(consumer.take(10, max_bytes=10_000)) == 1
            assert consumer.waiting_bytes == 0

    _run(scenario)


@pytest.mark.stack
def test_ingest_stops_promptly_during_a_connect_the_broker_never_answers(
    database_url: str, redis_url: str
) -> None:
    """SIGTERM sets the stop event; it must not wait for the 30 s CONNACK timeout."""

    async def script(peer: Peer) -> None:
        await peer.expect(CONNECT)
        await peer.ignore_everything()

    async def scenario() -> None:
        pool = await open_pool(database_url)
        redis_client = open_redis(redis_url)
        registry = KeyCache(database_url, KeyEncryptionKey(bytes(32)))  # never asked: no message arrives
        try:
            async with scripted_peer(script) as (url, peers):
                ingest = Ingest(
                    url, pool, LiveState(redis_client), registry, IngestOptions(client_id="stopper")
                )
                stop = asyncio.Event()
                running = asyncio.create_task(ingest.run(stop))
                while not peers or not peers[0].received:
                    await asyncio.sleep(0.01)
                stop.set()
                await asyncio.wait_for(running, 10)
        finally:
            await pool.close()
            await redis_client.aclose()

    _run(scenario)


@pytest.mark.stack
def test_overlapping_batches_ack_only_after_their_commit_and_in_arrival_order(
    database_url: str, redis_url: str, operator_id: str
) -> None:
    """Ingest takes and checks the next batch while the one before commits; acks still follow commits.

    PostgreSQL is held (a lock on the batch ledger) while two batches of five
    messages arrive: nothing may be acked until it is released, and then every
    message is acked once, in the order the broker sent them, and stored.
    """
    kek = KeyEncryptionKey(bytes(32))
    now_ms = int(time.time() * 1000)
    pubacks: list[int] = []

    async def script(peer: Peer) -> None:
        await peer.expect(CONNECT)
        await peer.send(connack_packet())
        await peer.expect(SUBSCRIBE)
        # Frames and OwnTracks: two filters, both granted QoS 1.
        await peer.send(packet(SUBACK, 0, struct.pack("!H", 1) + varint(0) + bytes([1, 1])))
        await peer.send(b"".join(publish_packet(topic, payload, n) for n, payload in enumerate(payloads, 1)))
        while (received := await peer._read())[0] != DISCONNECT:
            if received[0] == PUBACK:
                pubacks.append(struct.unpack("!H", received[2][:2])[0])
            elif received[0] == PINGREQ:
                await peer.send(packet(PINGRESP, 0, b""))

    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        pool = await open_pool(database_url)
        redis_client = open_redis(redis_url)
        try:
            issued = await add_device(conn, kek, operator_id, f"{operator_id}-unit", f"{operator_id}-bus")
            key = issued.key
            frames = [
                Frame(
                    device=key.device,
                    bus=f"{operator_id}-bus",
                    seq=n,
                    time_ms=now_ms - 10_000 + n * 1_000,
                    lat=36.75,
                    lon=3.06 + n * 1e-4,
                )
                for n in range(1, 11)
            ]
            payloads[:] = [seal([frame], key) for frame in frames]
            holder = conn.transaction()
            await holder.start()
            await conn.execute("LOCK TABLE ingest_batches IN EXCLUSIVE MODE")
            async with KeyCache(database_url, kek) as registry, scripted_peer(script) as (url, _):
                ingest = Ingest(
                    url,
                    pool,
                    LiveState(redis_client),
                    registry,
                    IngestOptions(client_id="pipelined", batch_max=5, flush_ms=50.0),
                )
                stop = asyncio.Event()
                running = asyncio.create_task(ingest.run(stop))
                await asyncio.sleep(1.0)
                assert pubacks == [], "a message was acked before its batch committed"
                await holder.rollback()
                while len(pubacks) < 10:
                    await asyncio.sleep(0.05)
                stop.set()
                await asyncio.wait_for(running, 10)
            assert pubacks == list(range(1, 11)), "acks out of arrival order, or twice"
            assert ingest.batches == 2
            seqs = await conn.fetch("SELECT seq FROM positions WHERE device = $1 ORDER BY seq", key.device)
            assert [r["seq"] for r in seqs] == list(range(1, 11))
        finally:
            await conn.close()
            await pool.close()
            await redis_client.aclose()

    topic = frames_topic(operator_id, f"{operator_id}-unit")
    payloads: list[bytes] = []
    _run(scenario)
