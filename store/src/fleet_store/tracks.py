"""What the ``positions`` hypertable tells analysts: a bus's track, and the distance each bus drove in a day.

The queries are the README's "Querying history" ones (``fleet_distance_m``
from migration 004), bound to parameters. ``track_rows`` walks a server-side
cursor inside a transaction so a day of 1 Hz fixes is streamed, never held
in memory whole; ``track`` reads a bounded range at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import msgspec

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = "(extract(epoch FROM {0}) * 1000)::bigint"

_TRACK = (
    f"SELECT {_MS.format('time')} AS time_ms, lat, lon, speed_mps, heading_deg FROM positions"
    " WHERE operator = $1 AND bus = $2 AND time >= $3 AND time < $4 ORDER BY time, seq"
)

_DISTANCE = f"""
SELECT bus, count(*) AS fixes, coalesce(sum(step_m), 0)::double precision AS distance_m,
       {_MS.format("min(time)")} AS first_ms, {_MS.format("max(time)")} AS last_ms
FROM (
    SELECT bus, time, fleet_distance_m(lag(lat) OVER w, lag(lon) OVER w, lat, lon) AS step_m
    FROM positions
    WHERE operator = $1 AND time >= $2 AND time < $3
    WINDOW w AS (PARTITION BY bus ORDER BY time, seq)
) steps
GROUP BY bus ORDER BY bus
"""

CURSOR_PREFETCH = 2_000
"""rows fetched per round trip while streaming a track"""


class TrackPoint(msgspec.Struct, frozen=True, array_like=True):
    time_ms: int
    lat: float
    lon: float
    speed_mps: float | None
    heading_deg: float | None


class BusDistance(msgspec.Struct, frozen=True, kw_only=True):
    """How far one bus drove in a UTC day: the sum of great-circle steps between its fixes."""

    bus: str
    distance_m: float
    fixes: int
    first_ms: int
    last_ms: int


def _at(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


async def track(conn: Connection, operator: str, bus: str, since_ms: int, until_ms: int) -> list[TrackPoint]:
    """The bus's fixes with ``since_ms <= time < until_ms``, oldest first."""
    rows = await conn.fetch(_TRACK, operator, bus, _at(since_ms), _at(until_ms))
    return [TrackPoint(*row) for row in rows]


async def track_rows(
    conn: Connection, operator: str, bus: str, since_ms: int, until_ms: int
) -> AsyncIterator[TrackPoint]:
    """The same fixes one by one from a server-side cursor (needs no transaction of the caller's)."""
    async with conn.transaction(readonly=True):
        cursor = conn.cursor(_TRACK, operator, bus, _at(since_ms), _at(until_ms), prefetch=CURSOR_PREFETCH)
        async for row in cursor:
            yield TrackPoint(*row)


async def distance_per_bus(conn: Connection, operator: str, day: date) -> list[BusDistance]:
    """Each bus of ``operator`` with fixes on ``day`` (UTC), by bus id."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows = await conn.fetch(_DISTANCE, operator, start, start + timedelta(days=1))
    return [BusDistance(**dict(row)) for row in rows]
