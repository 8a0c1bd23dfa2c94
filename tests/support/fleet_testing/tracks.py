"""Fixes written straight into ``positions`` (COPY), for tests of what serve reads back as tracks."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

TRACK_COLUMNS = (
    "time",
    "device",
    "seq",
    "operator",
    "bus",
    "lat",
    "lon",
    "speed_mps",
    "heading_deg",
    "source",
    "key_id",
    "received_at",
)
"""what each row gives, in this order"""


async def copy_fixes(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, rows: Sequence[tuple[object, ...]]
) -> None:
    await conn.copy_records_to_table("positions", records=rows, columns=TRACK_COLUMNS)
