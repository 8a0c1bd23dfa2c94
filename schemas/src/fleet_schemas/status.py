"""The retained status a device publishes to ``fleet/v1/{operator}/{device}/status``.

JSON, not msgpack: it is small, rare, and read by people with ``mosquitto_sub``.
The agent's Last Will publishes the same record with ``state="offline"``.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class DeviceStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a device says about itself, retained by the broker."""

    state: Literal["online", "offline"]
    device: str
    agent_version: str
    time_ms: int | None = None
    backlog: int | None = None
    outbox_full: bool = False
    last_fix_ms: int | None = None
    key_id: str | None = None
    clock_offset_ms: int | None = None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(DeviceStatus)


def encode_status(status: DeviceStatus) -> bytes:
    return _ENCODER.encode(status)


def decode_status(raw: bytes | bytearray) -> DeviceStatus:
    """Raises msgspec.DecodeError/ValidationError on a bad status (status is not a trusted input)."""
    return _DECODER.decode(raw)
