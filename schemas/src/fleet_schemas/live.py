"""A bus's live position as ingest writes it to Redis and the live channel carries it.

JSON, because the websocket fan-out forwards it to browsers unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

import msgspec

from fleet_schemas.trips import Calculated

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


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
    battery_pct: float | None = None
    """the sending phone's battery level, percent (None: an onboard unit, or the app did not say)"""
    charging: bool | None = None


LIVE_ENCODER = msgspec.json.Encoder()
LIVE_DECODER = msgspec.json.Decoder(LivePosition)


def newest_each(
    items: Iterable[T], key: Callable[[T], K], stamp: Callable[[T], tuple[int, int]]
) -> dict[K, T]:
    """The newest item of each ``key`` by ``stamp`` (fix time, sequence): what a live record keeps of a
    bus, whichever order its frames came in; the first of equal stamps stays."""
    newest: dict[K, T] = {}
    for item in items:
        k = key(item)
        held = newest.get(k)
        if held is None or stamp(item) > stamp(held):
            newest[k] = item
    return newest


def position_stamp(position: LivePosition) -> tuple[int, int]:
    return position.time_ms, position.seq
