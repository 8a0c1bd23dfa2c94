"""A lean asyncio MQTT 5 consumer: just what ingest's hot path needs.

Why by hand: ingest must ack a message only after its batch is committed,
and it must take tens of thousands of one-frame messages a second in one
Python process. aiomqtt 2.5 acks on arrival; paho-mqtt 2 can ack manually but
spends most of a core on its own per-message machinery (about 30,000 msg/s at
best, see ../shared/GUIDE.md). This client speaks only the subset ingest
uses: CONNECT with a persistent session, SUBSCRIBE, receiving PUBLISH at QoS
0/1, PUBACKs written in batches after commit, PINGREQ and DISCONNECT. Every
other feature (publishing, QoS 2, topic aliases, AUTH) is refused by not
being advertised in CONNECT; an unexpected packet is a protocol error.
It is tested against the real Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from types import TracebackType

import msgspec

from fleet_ingest.mqtt_wire import (
    DISCONNECT,
    PINGREQ_BYTES,
    PINGRESP,
    PROP_MAXIMUM_PACKET_SIZE,
    PROP_RECEIVE_MAXIMUM,
    PROP_SESSION_EXPIRY,
    PUBACK_HEADER,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    MqttError,
    check_connack,
    connect_packet,
    packet,
    read_varint,
    reason,
    string,
)
from fleet_schemas.broker import BrokerUrl

__all__ = ["Consumer", "Message", "MqttError"]

log = logging.getLogger("fleet_ingest.mqtt_consumer")


class Message(msgspec.Struct, frozen=True, array_like=True):
    """One received PUBLISH; ``packet_id`` is 0 for QoS 0 (nothing to ack)."""

    topic: str
    payload: bytes
    packet_id: int
    duplicate: bool


class Consumer:
    """One MQTT 5 session: ``async with Consumer(...) as c``, then ``c.receive()`` and ``c.ack(...)``."""

    def __init__(
        self,
        url: str,
        client_id: str,
        subscription: str,
        *,
        session_expiry_s: int = 86_400,
        receive_maximum: int = 20_000,
        keepalive_s: int = 30,
        clean_start: bool = False,
    ) -> None:
        self._broker = BrokerUrl.parse(url)
        self._client_id = client_id
        self._subscription = subscription
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = max(1, min(receive_maximum, 65_535))
        self._keepalive_s = keepalive_s
        self._clean_start = clean_start
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: list[Message] = []
        self._arrived = asyncio.Event()
        self._closed: asyncio.Future[None] | None = None
        self.session_present = False

    async def __aenter__(self) -> Consumer:
        tls = ssl.create_default_context() if self._broker.tls else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._broker.host, self._broker.port, ssl=tls, limit=1 << 20), 30
            )
        except (OSError, TimeoutError) as exc:
            raise MqttError(
                f"cannot reach the broker at {self._broker.host}:{self._broker.port}: {exc}"
            ) from exc
        self._reader, self._writer = reader, writer
        self._closed = asyncio.get_running_loop().create_future()
        try:
            await self._handshake()
        except BaseException:
            writer.close()
            raise
        self._tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._keepalive())]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._writer is not None and self._reader is not None:
            with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                self._writer.write(packet(DISCONNECT, 0, b"\x00\x00"))
                await self._writer.drain()
                # The broker closes the socket once it has handled DISCONNECT, and so every PUBACK
                # before it. Waiting for that keeps a quick reconnect under the same client id from
                # taking the session over before those acks count (they would come again as duplicates).
                await asyncio.wait_for(self._drain_until_closed(self._reader), 5.0)
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()

    @staticmethod
    async def _drain_until_closed(reader: asyncio.StreamReader) -> None:
        while await reader.read(65_536):
            pass

    async def _handshake(self) -> None:
        properties = (
            bytes([PROP_SESSION_EXPIRY])
            + struct.pack("!I", self._session_expiry_s)
            + bytes([PROP_RECEIVE_MAXIMUM])
            + struct.pack("!H", self._receive_maximum)
            + bytes([PROP_MAXIMUM_PACKET_SIZE])
            + struct.pack("!I", 4 * 1024 * 1024)
        )
        self._write(
            connect_packet(self._client_id, self._broker, self._keepalive_s, self._clean_start, properties)
        )
        kind, _, connack = await self._next_packet()
        self.session_present = check_connack(kind, connack)
        subscribe = struct.pack("!H", 1) + b"\x00" + string(self._subscription) + b"\x01"
        self._write(packet(SUBSCRIBE, 0b0010, subscribe))
        while True:  # a resumed session may deliver queued PUBLISHes before the SUBACK
            kind, flags, body = await self._next_packet()
            if kind == PUBLISH:
                self._on_publish(flags, body, 0, len(body))
                continue
            if kind != SUBACK:
                raise MqttError(f"expected SUBACK, got packet type {kind}")
            suback_properties = read_varint(body, 2)
            codes = body[suback_properties[1] + suback_properties[0] :] if suback_properties else b""
            if not codes or codes[0] > 0x02:
                raise MqttError(f"broker refused the subscription to {self._subscription}: {codes.hex()}")
            return

    async def _next_packet(self) -> tuple[int, int, bytes]:
        """Read one whole packet (during the handshake only; afterwards the read loop parses)."""
        assert self._reader is not None
        while True:
            packets = self._parse(limit=1)
            if packets:
                return packets[0]
            chunk = await self._reader.read(65_536)
            if not chunk:
                raise MqttError("the broker closed the connection")
            self._buffer += chunk

    def _parse(self, limit: int | None = None) -> list[tuple[int, int, bytes]]:
        """Split complete packets off the buffer; PUBLISH goes straight to the inbox.

        The buffer is copied once and trimmed once per call, not per packet: a
        1 MB read holds thousands of small PUBLISHes.
        """
        data = bytes(self._buffer)
        size, offset = len(data), 0
        others: list[tuple[int, int, bytes]] = []
        while size - offset >= 2 and (limit is None or len(others) < limit):
            length = read_varint(data, offset + 1)
            if length is None or length[1] + length[0] > size:
                break
            start, end = length[1], length[1] + length[0]
            header = data[offset]
            if header >> 4 == PUBLISH and limit is None:
                self._on_publish(header & 0x0F, data, start, end)
            else:
                others.append((header >> 4, header & 0x0F, data[start:end]))
            offset = end
        del self._buffer[:offset]
        return others

    def _on_publish(self, flags: int, data: bytes, start: int, end: int) -> None:
        topic_end = start + 2 + ((data[start] << 8) | data[start + 1])
        topic = data[start + 2 : topic_end].decode()
        offset = topic_end
        packet_id = 0
        if flags & 0x06:
            if flags & 0x06 != 0x02:
                raise MqttError("QoS 2 message received but QoS 1 was subscribed")
            packet_id = (data[offset] << 8) | data[offset + 1]
            offset += 2
        properties = read_varint(data, offset)
        if properties is None or properties[1] + properties[0] > end:
            raise MqttError("malformed PUBLISH properties")
        self._inbox.append(
            Message(topic, data[properties[1] + properties[0] : end], packet_id, bool(flags & 0x08))
        )

    async def _read_loop(self) -> None:
        assert self._reader is not None
        assert self._closed is not None
        try:
            if self._inbox:
                self._arrived.set()
            while True:
                chunk = await self._reader.read(1 << 20)
                if not chunk:
                    raise MqttError("the broker closed the connection")
                self._buffer += chunk
                for kind, _flags, body in self._parse():
                    if kind == DISCONNECT:
                        raise MqttError(f"the broker disconnected us: {reason(body[0] if body else 0)}")
                    if kind != PINGRESP:
                        raise MqttError(f"unexpected packet type {kind}")
                if self._inbox:
                    self._arrived.set()
        except (MqttError, OSError, ConnectionError, IndexError, UnicodeDecodeError) as exc:
            error = exc if isinstance(exc, MqttError) else MqttError(f"connection failed: {exc!r}")
            if not self._closed.done():
                self._closed.set_exception(error)
            self._arrived.set()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive_s / 2)
            with contextlib.suppress(OSError, ConnectionError):
                self._write(PINGREQ_BYTES)

    def _write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)

    def _raise_if_closed(self) -> None:
        if self._closed is not None and self._closed.done():
            self._closed.result()

    async def receive(self, max_messages: int, timeout: float) -> list[Message]:
        """Wait up to ``timeout`` s for at least one message; return up to ``max_messages``.

        Raises MqttError once the connection is gone (after what arrived before).
        """
        if not self._inbox:
            self._raise_if_closed()
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        taken, self._inbox = self._inbox[:max_messages], self._inbox[max_messages:]
        if not taken:
            self._raise_if_closed()
        return taken

    @property
    def waiting(self) -> int:
        """Messages received and not yet taken."""
        return len(self._inbox)

    def ack(self, packet_ids: list[int]) -> None:
        """PUBACK these (QoS 1) messages, in one write."""
        self._raise_if_closed()
        acks = b"".join(PUBACK_HEADER + packet_id.to_bytes(2, "big") for packet_id in packet_ids if packet_id)
        if acks:
            self._write(acks)

    async def flush(self) -> None:
        """Wait until written acks have left the socket buffer."""
        assert self._writer is not None
        await self._writer.drain()
