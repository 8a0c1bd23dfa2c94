"""A bus's live position as ingest writes it to Redis and the live channel carries it.

JSON, because the websocket fan-out forwards it to browsers unchanged.
"""

from __future__ import annotations

import msgspec


class LivePosition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The newest accepted fix of one bus."""

    operator: str
    bus: str
    device: str
    seq: int
    time_ms: int
    lat: float
    lon: float
    speed_mps: float | None = None
    heading_deg: float | None = None
    accuracy_m: float | None = None
    trip_id: str | None = None
    received_ms: int | None = None


LIVE_ENCODER = msgspec.json.Encoder()
LIVE_DECODER = msgspec.json.Decoder(LivePosition)
