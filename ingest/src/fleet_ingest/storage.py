"""History in TimescaleDB: one transaction per micro-batch, idempotent.

Accepted frames are COPYed into a per-connection TEMP staging table and moved
with one ``INSERT … ON CONFLICT DO NOTHING RETURNING``: a frame stored before
(a QoS 1 redelivery, an agent retry) is skipped, and what comes back tells
which frames are new. Rejections go to ``rejected_frames`` in the same
transaction, so a batch is stored whole or not at all, and so are the minutes
whose rollups it makes stale (``rollup_pending``, see fleet_ingest.maintain).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from fleet_ingest.assess import Accepted, Rejected

POSITION_COLUMNS = (
    "time",
    "device",
    "seq",
    "operator",
    "bus",
    "lat",
    "lon",
    "accuracy_m",
    "speed_mps",
    "heading_deg",
    "altitude_m",
    "satellites",
    "hdop",
    "ignition",
    "door_open",
    "passengers",
    "fuel_pct",
    "trip_id",
    "source",
    "key_id",
)
REJECTED_COLUMNS = ("topic", "reason", "detail", "device", "seq", "raw")
_STAGED = ", ".join(POSITION_COLUMNS)
# Built from the constant column list above, never from input.
_MOVE = (
    f"INSERT INTO positions ({_STAGED}, received_at)"
    f" SELECT {_STAGED}, clock_timestamp() FROM positions_staging"
    " ON CONFLICT DO NOTHING RETURNING device, seq"
)

_CLAIM_BATCH = "INSERT INTO ingest_batches (id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id"
_MARK_PENDING = (
    "INSERT INTO rollup_pending (bucket) SELECT DISTINCT time_bucket('1 minute', time) FROM positions_staging"
    " ORDER BY 1"
    " ON CONFLICT DO NOTHING"
)


async def prepare_connection(conn: asyncpg.Connection) -> None:
    """Pool ``init``: the staging table lives as long as the connection, emptied at each commit."""
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS positions_staging ON COMMIT DELETE ROWS"
        f" AS SELECT {_STAGED} FROM positions WITH NO DATA"
    )


def _position_row(item: Accepted) -> tuple[object, ...]:
    f = item.frame
    return (
        datetime.fromtimestamp(f.time_ms / 1000, UTC),
        f.device,
        f.seq,
        item.operator,
        f.bus,
        f.lat,
        f.lon,
        f.accuracy_m,
        f.speed_mps,
        f.heading_deg,
        f.altitude_m,
        f.satellites,
        f.hdop,
        f.ignition,
        f.door_open,
        f.passengers,
        f.fuel_pct,
        f.trip_id,
        f.source,
        item.key_id,
    )


async def store_batch(
    pool: asyncpg.Pool, batch_id: uuid.UUID, accepted: list[Accepted], rejected: list[Rejected]
) -> set[tuple[str, int]]:
    """Commit one micro-batch; return the (device, seq) of frames stored for the first time.

    Retrying with the same ``batch_id`` after a failure whose outcome is
    unknown (the connection lost during COMMIT) stores nothing twice.
    """
    async with pool.acquire() as conn, conn.transaction():
        new: set[tuple[str, int]] = set()
        if await conn.fetchval(_CLAIM_BATCH, batch_id) is None:
            return new  # committed by the attempt whose answer was lost
        if accepted:
            await conn.copy_records_to_table(
                "positions_staging", records=[_position_row(a) for a in accepted], columns=POSITION_COLUMNS
            )
            new = {(r["device"], r["seq"]) for r in await conn.fetch(_MOVE)}
            await conn.execute(_MARK_PENDING)
        if rejected:
            await conn.copy_records_to_table(
                "rejected_frames",
                records=[(r.topic, r.reason, r.detail, r.device, r.seq, r.raw) for r in rejected],
                columns=REJECTED_COLUMNS,
            )
        return new
