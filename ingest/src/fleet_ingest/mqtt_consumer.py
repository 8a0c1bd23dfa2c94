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

It owes what paho does: a deadline on CONNACK, SUBACK and PINGRESP (a
silent broker is detected within one keepalive of going quiet), the
CONNACK's properties honoured, broker reason codes and strings in errors
and logs. Its inbox is bounded in bytes as well as by the receive maximum:
past ``inbox_max_bytes`` it stops reading the socket, so TCP pushes back
and the broker keeps the rest in the session. It is tested against the
real Mosquitto and against a scripted peer (ingest/tests/test_mqtt_conformance.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from bisect import bisect_right
from itertools import accumulate
from operator import attrgetter
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
    RETAIN_HANDLING_DO_NOT_SEND,
    SESSION_TAKEN_OVER,
    SUBACK,
    Connack,
    MqttError,
    check_connack,
    check_suback,
    connect_packet,
    packet,
    read_disconnect,
    read_varint,
    reason,
    subscribe_packet,
)
from fleet_schemas import MAX_PACKET_BYTES
from fleet_schemas.broker import BrokerUrl

__all__ = ["BATCH_MAX_BYTES", "INBOX_MAX_BYTES", "READ_BYTES", "Consumer", "Message", "MqttError"]

log = logging.getLogger("fleet_ingest.mqtt_consumer")

READ_BYTES = 1 << 20
"""One socket read: thousands of small PUBLISHes, parsed in one pass."""
INBOX_MAX_BYTES = 64 << 20
"""Payload held before reading stops: over a second of ingest's peak input, so a commit never
starves the loop, and a bound on memory however big the messages (20,000 of 500 frames are ~1 GB)."""
BATCH_MAX_BYTES = 8 << 20
"""Payload per batch: about 80,000 frames in big messages, ~0.2 s of decoding and verifying, so one
batch cannot block the event loop for seconds (keepalives, SIGTERM)."""
_SUBSCRIPTION_OPTIONS = 1 | RETAIN_HANDLING_DO_NOT_SEND
"""QoS 1, and no retained message at subscribe: one retained on a frames topic would come again
on every resubscribe."""
_SUBSCRIBE_ID = 1
_payload = attrgetter("payload")


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
        subscription: str | tuple[str, ...],
        *,
        session_expiry_s: int = 86_400,
        receive_maximum: int = 20_000,
        keepalive_s: int = 30,
        clean_start: bool = False,
        connect_timeout_s: float = 30.0,
        inbox_max_bytes: int = INBOX_MAX_BYTES,
    ) -> None:
        self._broker = BrokerUrl.parse(url)
        self._client_id = client_id
        self._filters = (subscription,) if isinstance(subscription, str) else subscription
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = max(1, min(receive_maximum, 65_535))
        self._keepalive_s = keepalive_s
        self._clean_start = clean_start
        self._connect_timeout_s = connect_timeout_s
        self._inbox_max_bytes = inbox_max_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()
        self._control: list[tuple[int, bytes]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: list[Message] = []
        self._inbox_bytes = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ping_outstanding = False
        self._suback_pending = False
        self._closed: asyncio.Future[None] | None = None
        self.connack = Connack(session_present=False)

    @property
    def session_present(self) -> bool:
        return self.connack.session_present

    @property
    def client_id(self) -> str:
        """Ours, or the one the broker assigned."""
        return self.connack.assigned_client_id or self._client_id

    @property
    def keepalive_s(self) -> int:
        """The keepalive in force: the broker's Server Keep Alive if it sent one, else ours."""
        return self._keepalive_s

    async def __aenter__(self) -> Consumer:
        tls = ssl.create_default_context() if self._broker.tls else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._broker.host, self._broker.port, ssl=tls, limit=1 << 20),
                self._connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            raise MqttError(
                f"cannot reach the broker at {self._broker.host}:{self._broker.port}: {exc!r}"
            ) from exc
        self._reader, self._writer = reader, writer
        self._closed = asyncio.get_running_loop().create_future()
        try:
            await self._handshake()
        except BaseException:
            writer.transport.abort()
            raise
        self._tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._keepalive())]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._writer is None or self._reader is None:
            return
        if self._closed is not None and self._closed.done():
            self._closed.exception()  # the connection failed (and receive said so): nothing to say to it
            self._writer.transport.abort()
            return
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
            + struct.pack("!I", MAX_PACKET_BYTES)
        )
        self._write(
            connect_packet(self._client_id, self._broker, self._keepalive_s, self._clean_start, properties)
        )
        kind, body = await self._next_control("CONNACK") or (0, b"")
        self.connack = connack = check_connack(kind, body)
        if connack.server_keep_alive_s is not None:
            self._keepalive_s = connack.server_keep_alive_s
        if connack.session_expiry_s is not None:
            self._session_expiry_s = connack.session_expiry_s
        subscribe = subscribe_packet(_SUBSCRIBE_ID, self._filters, _SUBSCRIPTION_OPTIONS)
        if connack.maximum_packet_size is not None and len(subscribe) > connack.maximum_packet_size:
            raise MqttError(
                f"SUBSCRIBE to {', '.join(self._filters)} is {len(subscribe)} bytes, "
                f"over the broker's maximum packet size of {connack.maximum_packet_size}"
            )
        self._write(subscribe)
        self._suback_pending = True
        # A resumed session's queued PUBLISHes come before the SUBACK: _parse puts them in the inbox.
        # If they fill it first, the SUBACK is left unread behind them and the read loop checks it.
        answer = await self._next_control("SUBACK")
        if answer is not None:
            self._on_control(*answer)
            if self._suback_pending:
                raise MqttError(f"expected SUBACK, got packet type {answer[0]}")

    async def _next_control(self, waiting_for: str) -> tuple[int, bytes] | None:
        """The next packet other than PUBLISH within the connect timeout, or None once the inbox is full.

        During the handshake only; afterwards the read loop parses.
        """
        assert self._reader is not None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                while not self._control:
                    if self._inbox_bytes > self._inbox_max_bytes:
                        return None
                    chunk = await self._reader.read(READ_BYTES)
                    if not chunk:
                        raise MqttError(f"the broker closed the connection before {waiting_for}")
                    self._buffer += chunk
                    self._parse()
        except TimeoutError:
            raise MqttError(f"no {waiting_for} within {self._connect_timeout_s:g} s") from None
        return self._control.pop(0)

    def _parse(self) -> None:
        """Split complete packets off the buffer: PUBLISH to the inbox, the rest to ``_control``.

        The buffer is copied once and trimmed once per call, not per packet: a
        1 MB read holds thousands of small PUBLISHes.
        """
        data = bytes(self._buffer)
        size, offset = len(data), 0
        while size - offset >= 2:
            length = read_varint(data, offset + 1)
            if length is None or length[1] + length[0] > size:
                break
            start, end = length[1], length[1] + length[0]
            header = data[offset]
            if header >> 4 == PUBLISH:
                self._on_publish(header & 0x0F, data, start, end)
            else:
                self._control.append((header >> 4, data[start:end]))
            offset = end
        del self._buffer[:offset]

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
        payload_start = properties[1] + properties[0]
        self._inbox_bytes += end - payload_start
        self._inbox.append(Message(topic, data[payload_start:end], packet_id, bool(flags & 0x08)))

    def _on_control(self, kind: int, body: bytes) -> None:
        if kind == PINGRESP:
            return
        if kind == SUBACK and self._suback_pending:
            try:
                check_suback(body, _SUBSCRIBE_ID, 1, self._filters)
            except MqttError as exc:
                raise MqttError(
                    f"subscribing to {', '.join(self._filters)}: {exc}", exc.reason_code
                ) from None
            self._suback_pending = False
            return
        if kind == DISCONNECT:
            raise self._disconnected(body)
        raise MqttError(f"unexpected packet type {kind}")

    def _disconnected(self, body: bytes) -> MqttError:
        code, text = read_disconnect(body)
        extra = {"client_id": self.client_id, "reason_code": f"0x{code:02x}", "reason_string": text}
        if code == SESSION_TAKEN_OVER:
            what = "session taken over by another connection with our client id"
            log.warning(what, extra=extra)
            return MqttError(f"{what}: {reason(code, text)}", code)
        log.warning("the broker disconnected us", extra=extra)
        return MqttError(f"the broker disconnected us: {reason(code, text)}", code)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                for kind, body in self._control:
                    self._on_control(kind, body)
                self._control.clear()
                if self._inbox:
                    self._arrived.set()
                    if self._inbox_bytes > self._inbox_max_bytes:
                        self._room.clear()  # stop reading: TCP pushes back, the broker keeps the rest
                        await self._room.wait()
                chunk = await self._reader.read(READ_BYTES)
                if not chunk:
                    raise MqttError("the broker closed the connection")
                self._ping_outstanding = False  # any bytes show the broker is alive
                self._buffer += chunk
                self._parse()
        except (MqttError, OSError, ConnectionError, IndexError, UnicodeDecodeError) as exc:
            self._fail(exc if isinstance(exc, MqttError) else MqttError(f"connection failed: {exc!r}"))

    def _fail(self, error: MqttError) -> None:
        assert self._closed is not None
        if not self._closed.done():
            self._closed.set_exception(error)
        self._arrived.set()

    async def _keepalive(self) -> None:
        """PINGREQ every half keepalive; no answer by the next one fails the connection.

        So a broker that goes quiet is found within one keepalive. While the
        inbox is full nothing is read, so no answer is expected then.
        """
        if not self._keepalive_s:
            return
        interval = self._keepalive_s / 2
        while True:
            await asyncio.sleep(interval)
            if self._ping_outstanding and self._room.is_set():
                self._fail(
                    MqttError(
                        f"no PINGRESP within {interval:g} s (keepalive {self._keepalive_s} s): "
                        "the broker stopped answering"
                    )
                )
                return
            self._ping_outstanding = True
            with contextlib.suppress(OSError, ConnectionError):
                self._write(PINGREQ_BYTES)

    def _write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)

    def _raise_if_closed(self) -> None:
        if self._closed is not None and self._closed.done():
            self._closed.result()

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` s until a message is waiting (or the connection is gone)."""
        if self._inbox:
            return
        self._raise_if_closed()
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout)

    def take(self, max_messages: int, max_bytes: int = BATCH_MAX_BYTES) -> list[Message]:
        """Up to ``max_messages`` waiting messages and ``max_bytes`` of payload, but at least one.

        Raises MqttError once the connection is gone (after what arrived before).
        """
        inbox = self._inbox
        if not inbox:
            self._raise_if_closed()
            return []
        if len(inbox) <= max_messages and self._inbox_bytes <= max_bytes:
            taken, self._inbox, size = inbox, [], self._inbox_bytes
        else:
            sizes = list(accumulate(map(len, map(_payload, inbox[:max_messages]))))
            count = max(1, bisect_right(sizes, max_bytes))
            taken, self._inbox, size = inbox[:count], inbox[count:], sizes[count - 1]
        self._inbox_bytes -= size
        if not self._room.is_set() and self._inbox_bytes <= self._inbox_max_bytes:
            self._ping_outstanding = False  # answers to pings sent while paused are still unread
            self._room.set()
        return taken

    async def receive(
        self, max_messages: int, timeout: float, max_bytes: int = BATCH_MAX_BYTES
    ) -> list[Message]:
        """Wait up to ``timeout`` s for at least one message; return what ``take`` gives."""
        await self.wait(timeout)
        return self.take(max_messages, max_bytes)

    @property
    def waiting(self) -> int:
        """Messages received and not yet taken."""
        return len(self._inbox)

    @property
    def waiting_bytes(self) -> int:
        """Payload bytes received and not yet taken."""
        return self._inbox_bytes

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
