"""MQTT 5 packet encoding for fleet's lean clients (ingest's consumer, the benchmark's load publisher).

Only the packets those clients use; see fleet_ingest.mqtt_consumer for why
they are written by hand.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import msgspec

from fleet_schemas.broker import BrokerUrl

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14
PROP_SESSION_EXPIRY = 0x11
PROP_ASSIGNED_CLIENT_ID = 0x12
PROP_SERVER_KEEP_ALIVE = 0x13
PROP_REASON_STRING = 0x1F
PROP_RECEIVE_MAXIMUM = 0x21
PROP_MAXIMUM_PACKET_SIZE = 0x27
PINGREQ_BYTES = b"\xc0\x00"
SESSION_TAKEN_OVER = 0x8E
REASONS = {
    0x00: "normal disconnection",
    0x04: "disconnect with will message",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    SESSION_TAKEN_OVER: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def reason(code: int, text: str | None = None) -> str:
    """``reason code 0x87 (not authorized)``, with the broker's reason string if it sent one."""
    said = f": {text!r}" if text else ""
    return f"reason code 0x{code:02x} ({REASONS.get(code, 'see the MQTT 5 specification')}){said}"


PUBACK_HEADER = b"\x40\x02"
RETAIN_HANDLING_DO_NOT_SEND = 2 << 4
"""Subscription option: retained messages are not sent at subscribe (MQTT 5, 3.8.3.1)."""


class MqttError(Exception):
    """The broker refused us, closed the connection, or broke the protocol.

    ``reason_code`` is the broker's MQTT 5 reason code when it gave one (CONNACK, SUBACK, DISCONNECT).
    """

    code = "mqtt_error"

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + varint(len(body)) + body


def read_varint(buffer: bytes | bytearray, offset: int) -> tuple[int, int] | None:
    """(value, next offset), or None if the buffer ends inside the varint."""
    value = shift = 0
    for index in range(offset, min(offset + 4, len(buffer))):
        byte = buffer[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    if len(buffer) - offset >= 4:
        raise MqttError("malformed remaining length")
    return None


def connect_packet(
    client_id: str, broker: BrokerUrl, keepalive_s: int, clean_start: bool, properties: bytes
) -> bytes:
    """CONNECT for MQTT 5 with the broker URL's login."""
    flags = 0x02 if clean_start else 0x00
    payload = string(client_id)
    if broker.username is not None:
        flags |= 0x80
        payload += string(broker.username)
    if broker.password is not None:
        flags |= 0x40
        payload += string(broker.password.encode())
    body = string("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive_s) + varint(len(properties))
    return packet(CONNECT, 0, body + properties + payload)


_BYTE, _TWO, _FOUR, _VARINT, _TEXT, _PAIR = range(6)
_PROPERTY_TYPES = {
    **dict.fromkeys((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A), _BYTE),
    **dict.fromkeys((0x13, 0x21, 0x22, 0x23), _TWO),
    **dict.fromkeys((0x02, 0x11, 0x18, 0x27), _FOUR),
    0x0B: _VARINT,
    **dict.fromkeys((0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F), _TEXT),
    0x26: _PAIR,
}
"""How each MQTT 5 property is encoded (2.2.2.2); binary data is laid out as a string."""


def read_properties(body: bytes, offset: int) -> tuple[dict[int, int | bytes], int]:
    """The properties at ``offset`` (integers, or raw bytes for strings) and the offset after them.

    Properties we do not use are skipped by their type's length; user
    properties are dropped. An identifier MQTT 5 does not define cannot be
    skipped (its length is unknown), so it is a malformed packet.
    """
    length = read_varint(body, offset)
    if length is None or length[1] + length[0] > len(body):
        raise MqttError("malformed properties")
    position, end = length[1], length[1] + length[0]
    found: dict[int, int | bytes] = {}
    while position < end:
        identifier = body[position]
        kind = _PROPERTY_TYPES.get(identifier)
        position += 1
        if kind is None:
            raise MqttError(f"malformed properties: unknown property 0x{identifier:02x}")
        if kind == _VARINT:
            value = read_varint(body, position)
            if value is None:
                raise MqttError("malformed properties")
            found[identifier], position = value
            continue
        if kind in (_TEXT, _PAIR):
            size = 2 + int.from_bytes(body[position : position + 2], "big")
            if kind == _PAIR:
                size += 2 + int.from_bytes(body[position + size : position + size + 2], "big")
            else:
                found[identifier] = body[position + 2 : position + size]
        else:
            size = {_BYTE: 1, _TWO: 2, _FOUR: 4}[kind]
            found[identifier] = int.from_bytes(body[position : position + size], "big")
        position += size
    if position != end:
        raise MqttError("malformed properties: a property runs past their end")
    return found, end


def _text(properties: dict[int, int | bytes], identifier: int) -> str | None:
    value = properties.get(identifier)
    return value.decode(errors="replace") if isinstance(value, bytes) else None


def _number(properties: dict[int, int | bytes], identifier: int) -> int | None:
    value = properties.get(identifier)
    return value if isinstance(value, int) else None


class Connack(msgspec.Struct, frozen=True):
    """What the broker said in CONNACK; ``None`` where it left our request (or the default) standing."""

    session_present: bool
    server_keep_alive_s: int | None = None
    receive_maximum: int = 65_535
    """QoS 1 publishes *we* may have unacked; the consumer publishes nothing, so it is only reported"""
    maximum_packet_size: int | None = None
    assigned_client_id: str | None = None
    session_expiry_s: int | None = None


def check_connack(kind: int, body: bytes) -> Connack:
    """Parse a successful CONNACK; raise MqttError (with the broker's reason string) for anything else."""
    if kind != CONNACK or len(body) < 2:
        raise MqttError(f"expected CONNACK, got packet type {kind}")
    properties = read_properties(body, 2)[0] if len(body) > 2 else {}
    if body[1] != 0:
        raise MqttError(
            f"broker refused the connection: {reason(body[1], _text(properties, PROP_REASON_STRING))}",
            body[1],
        )
    return Connack(
        session_present=bool(body[0] & 0x01),
        server_keep_alive_s=_number(properties, PROP_SERVER_KEEP_ALIVE),
        receive_maximum=_number(properties, PROP_RECEIVE_MAXIMUM) or 65_535,
        maximum_packet_size=_number(properties, PROP_MAXIMUM_PACKET_SIZE),
        assigned_client_id=_text(properties, PROP_ASSIGNED_CLIENT_ID),
        session_expiry_s=_number(properties, PROP_SESSION_EXPIRY),
    )


def subscribe_packet(packet_id: int, topic_filters: Sequence[str], options: int) -> bytes:
    """SUBSCRIBE to these filters, each with ``options`` (the subscription options byte), no properties."""
    entries = b"".join(string(topic_filter) + bytes([options]) for topic_filter in topic_filters)
    return packet(SUBSCRIBE, 0b0010, struct.pack("!H", packet_id) + b"\x00" + entries)


def check_suback(body: bytes, packet_id: int, qos: int, filters: Sequence[str]) -> None:
    """Raise MqttError unless this SUBACK answers ``packet_id`` granting exactly ``qos`` to every filter.

    A lower QoS than asked is an error too: at QoS 0 the broker sends without
    waiting for our ack, so a message in a batch that fails is lost.
    """
    if len(body) < 3 or int.from_bytes(body[:2], "big") != packet_id:
        raise MqttError("malformed SUBACK or one for another SUBSCRIBE")
    properties, offset = read_properties(body, 2)
    codes = body[offset:]
    if len(codes) != len(filters):
        raise MqttError(f"SUBACK with {len(codes)} reason codes for {len(filters)} filters")
    text = _text(properties, PROP_REASON_STRING)
    for topic_filter, code in zip(filters, codes, strict=True):
        if code >= 0x80:
            raise MqttError(f"broker refused the subscription: {reason(code, text)} ({topic_filter})", code)
        if code != qos:
            raise MqttError(
                f"broker granted QoS {code} where QoS {qos} was asked for {topic_filter}:"
                " messages would not wait for our ack",
                code,
            )


def read_disconnect(body: bytes) -> tuple[int, str | None]:
    """A DISCONNECT's reason code (0 if omitted) and reason string (if any)."""
    if not body:
        return 0, None
    properties = read_properties(body, 1)[0] if len(body) > 1 else {}
    return body[0], _text(properties, PROP_REASON_STRING)


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH at QoS 1 with no properties."""
    return packet(PUBLISH, 0b0010, string(topic) + struct.pack("!H", packet_id) + b"\x00" + payload)
