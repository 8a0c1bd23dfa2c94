"""Retention and rollups, done by the application so they work on the Apache build of TimescaleDB.

``fleet db maintain`` (and a periodic task of ``fleet ingest``) recomputes the
1-minute rollups of the minutes ingest marked pending and the segment travel
times of the stop visits not rolled up yet (``fleet_store.history``), then
drops chunks (positions, rollups, rejections, events) and stop visits past
their retention. Under the Timescale license it also turns on native
compression of positions older than ``compress_after_days``. Events stay
uncompressed: they are few, and their unique key would have to be all in
``segmentby``/``orderby``, with every reprocess insert or delete in an old
range decompressing the segments it touches.

Only minutes that ended two minutes ago are rolled up: the current minute
still gets frames, and refreshing it would make ingest transactions marking it
wait for the refresh (seen as lag spikes of seconds at 10,000 frames/s). A late
frame marks its old minute again.

Why a minute cannot be lost: ingest adds a mark row per batch and minute and
never updates one; a refresh deletes the marks its statement's snapshot sees
and aggregates from that same snapshot. A batch that commits meanwhile has a
mark the refresh did not see, so that minute is refreshed again next time.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import msgspec

from fleet_store import tokens
from fleet_store.history import RefreshReport, forget_visits, refresh_segment_times
from fleet_store.migrate import timescale_features

_REFRESH = """
WITH minutes AS (
    SELECT DISTINCT bucket FROM rollup_pending WHERE bucket < now() - INTERVAL '2 minutes'
    ORDER BY bucket LIMIT $1
), marks AS (
    DELETE FROM rollup_pending p USING minutes m WHERE p.bucket = m.bucket RETURNING p.bucket
), claimed AS (
    SELECT DISTINCT bucket FROM marks
)
INSERT INTO positions_1m AS r (bucket, device, operator, bus, frames, first_time, last_time, lat_avg, lon_avg,
                               last_lat, last_lon, speed_avg, speed_max)
SELECT time_bucket('1 minute', p.time) AS bucket, p.device,
       (array_agg(p.operator ORDER BY p.time DESC))[1], (array_agg(p.bus ORDER BY p.time DESC))[1],
       count(*), min(p.time), max(p.time), avg(p.lat), avg(p.lon),
       (array_agg(p.lat ORDER BY p.time DESC))[1], (array_agg(p.lon ORDER BY p.time DESC))[1],
       avg(p.speed_mps), max(p.speed_mps)
FROM positions p
JOIN claimed c ON p.time >= c.bucket AND p.time < c.bucket + INTERVAL '1 minute'
GROUP BY 1, 2
ON CONFLICT (device, bucket) DO UPDATE SET
    operator = excluded.operator, bus = excluded.bus, frames = excluded.frames,
    first_time = excluded.first_time, last_time = excluded.last_time,
    lat_avg = excluded.lat_avg, lon_avg = excluded.lon_avg, last_lat = excluded.last_lat,
    last_lon = excluded.last_lon, speed_avg = excluded.speed_avg, speed_max = excluded.speed_max
"""


REPEAT_WINDOW = timedelta(days=8)
"""How long a rejection's fingerprint is kept: one seen again within it is not stored again.
Longer than the ingest session lasts (a week), so every redelivery falls inside."""


class Retention(msgspec.Struct, frozen=True):
    """How long each kind of row is kept (FLEET_RETENTION_* settings)."""

    positions_days: int = 90
    rollups_days: int = 365
    rejected_days: int = 90
    events_days: int = 365
    compress_after_days: int = 7


class MaintenanceReport(msgspec.Struct, frozen=True):
    minutes_refreshed: int
    rollup_rows: int
    chunks_dropped: dict[str, int]
    compression: str
    history: RefreshReport | None = None
    """stop visits rolled up into segment and dwell times"""
    visits_forgotten: int = 0


async def refresh_rollups(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, minutes_per_round: int = 240
) -> tuple[int, int]:
    """Recompute every pending minute, in rounds; return (minutes, rollup rows written)."""
    minutes = rows = 0
    while True:
        async with conn.transaction():
            pending = await conn.fetchval(
                "SELECT count(*) FROM (SELECT DISTINCT bucket FROM rollup_pending"
                " WHERE bucket < now() - INTERVAL '2 minutes' LIMIT $1) p",
                minutes_per_round,
            )
            if not pending:
                return minutes, rows
            status = await conn.execute(_REFRESH, minutes_per_round)
        minutes += pending
        rows += int(status.split()[-1])


async def _forget_frame_ids(conn: asyncpg.Connection, days: int, rows_per_round: int = 50_000) -> int:
    """Delete the identities of frames past retention (a day later than their positions), in rounds."""
    deleted = 0
    while True:
        status = await conn.execute(
            "DELETE FROM frame_ids WHERE ctid = ANY (ARRAY("
            "SELECT ctid FROM frame_ids WHERE time < now() - $1::interval LIMIT $2))",
            timedelta(days=days + 1),
            rows_per_round,
        )
        done = int(status.split()[-1])
        deleted += done
        if done < rows_per_round:
            return deleted


async def _drop(conn: asyncpg.Connection, table: str, days: int) -> int:
    dropped = await conn.fetch(
        "SELECT drop_chunks($1::regclass, older_than => $2::interval)", table, timedelta(days=days)
    )
    return len(dropped)


async def _compression(conn: asyncpg.Connection, retention: Retention) -> str:
    features = await timescale_features(conn)
    if not features.policies:
        return f"not available under the {features.license} license"
    await conn.execute(
        "ALTER TABLE positions SET (timescaledb.compress, timescaledb.compress_segmentby = 'device')"
    )
    await conn.execute(
        "SELECT add_compression_policy('positions', $1::interval, if_not_exists => true)",
        timedelta(days=retention.compress_after_days),
    )
    return f"positions compressed after {retention.compress_after_days} days"


async def maintain(database_url: str, retention: Retention | None = None) -> MaintenanceReport:
    """Refresh the rollups (positions, segment and dwell times), then apply retention and compression."""
    retention = retention or Retention()
    conn = await asyncpg.connect(database_url)
    try:
        minutes, rows = await refresh_rollups(conn)
        history = await refresh_segment_times(conn)
        forgotten = await forget_visits(conn, retention.positions_days)
        await conn.execute("DELETE FROM ingest_batches WHERE committed_at < now() - INTERVAL '1 day'")
        await tokens.purge_expired(conn)
        await conn.execute(
            "DELETE FROM rejection_fingerprints WHERE seen_at < now() - $1::interval", REPEAT_WINDOW
        )
        dropped = {
            "positions": await _drop(conn, "positions", retention.positions_days),
            "positions_1m": await _drop(conn, "positions_1m", retention.rollups_days),
            "rejected_frames": await _drop(conn, "rejected_frames", retention.rejected_days),
            "events": await _drop(conn, "events", retention.events_days),
        }
        await _forget_frame_ids(conn, retention.positions_days)
        compression = await _compression(conn, retention)
    finally:
        await conn.close()
    return MaintenanceReport(minutes, rows, dropped, compression, history, forgotten)
