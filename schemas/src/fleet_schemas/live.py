"""A bus's live position as ingest writes it to Redis and the live channel carries it.

JSON, because the websocket fan-out forwards it to browsers unchanged.
"""

from __future__ import annotations

import msgspec

from fleet_schemas.trips import Calculated


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
    calculated: Calculated | None = None
    """where the bus is on its trip (None until processing has a feed for its operator)"""


LIVE_ENCODER = msgspec.json.Encoder()
LIVE_DECODER = msgspec.json.Decoder(LivePosition)
