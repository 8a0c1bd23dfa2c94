"""The retained status a device publishes to ``fleet/v1/{operator}/{device}/status``.

JSON, not msgpack: it is small, rare, and read by people with ``mosquitto_sub``.
The agent's Last Will publishes the same record with ``state="offline"``.
Fields are only ever appended, with defaults, as the wire format's
(:mod:`fleet_schemas.frames`), so an older reader decodes a newer status.
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
    refusals: dict[str, int] | None = None
    """PUBACKs that were not a delivery, by reason code ('0x10', '0x87', …); their frames are kept"""
    last_refusal_code: int | None = None
    """the reason code of the last PUBACK that was not a delivery (0x10 or >= 0x80)"""


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(DeviceStatus)


def encode_status(status: DeviceStatus) -> bytes:
    return _ENCODER.encode(status)


def decode_status(raw: bytes | bytearray) -> DeviceStatus:
    """Raises msgspec.DecodeError/ValidationError on a bad status (status is not a trusted input)."""
    return _DECODER.decode(raw)
