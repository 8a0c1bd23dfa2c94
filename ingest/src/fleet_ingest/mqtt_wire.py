"""MQTT 5 packet encoding for fleet's lean clients (ingest's consumer, the benchmark's load publisher).

Only the packets those clients use; see fleet_ingest.mqtt_consumer for why
they are written by hand.
"""

from __future__ import annotations

import struct

from fleet_schemas.broker import BrokerUrl

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14
PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21
PROP_MAXIMUM_PACKET_SIZE = 0x27
PINGREQ_BYTES = b"\xc0\x00"
REASONS = {
    0x80: "unspecified error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x97: "quota exceeded",
    0x9F: "connection rate exceeded",
}


def reason(code: int) -> str:
    return f"reason code 0x{code:02x} ({REASONS.get(code, 'see the MQTT 5 specification')})"


PUBACK_HEADER = b"\x40\x02"


class MqttError(Exception):
    """The broker refused us, closed the connection, or broke the protocol."""

    code = "mqtt_error"


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


def check_connack(kind: int, body: bytes) -> bool:
    """Raise MqttError unless this is a successful CONNACK; return whether the session was resumed."""
    if kind != CONNACK or len(body) < 2:
        raise MqttError(f"expected CONNACK, got packet type {kind}")
    if body[1] != 0:
        raise MqttError(f"broker refused the connection: {reason(body[1])}")
    return bool(body[0] & 0x01)


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH at QoS 1 with no properties."""
    return packet(PUBLISH, 0b0010, string(topic) + struct.pack("!H", packet_id) + b"\x00" + payload)
