"""The live view rebuilt from PostgreSQL after Redis lost its keys: each bus's newest frame, none older."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import pytest
import redis.asyncio as aioredis

from fleet_schemas.live import LivePosition
from fleet_store.live import LiveState
from fleet_store.live_rebuild import rebuild_live

pytestmark = pytest.mark.stack


async def _store(conn: asyncpg.Connection, bus: str, seq: int, time_ms: int, received_ago_s: float) -> None:
    await conn.execute(
        "INSERT INTO positions (time, device, seq, operator, bus, lat, lon, source, key_id, received_at)"
        " VALUES ($1, $2, $3, 'op-r', $4, 36.7, 3.0, 'sim', 'k1', now() - make_interval(secs => $5))",
        datetime.fromtimestamp(time_ms / 1000, UTC),
        f"dev-{bus}",
        seq,
        bus,
        received_ago_s,
    )


def test_rebuild_writes_each_recent_buss_newest_frame_and_moves_none_back(
    database_url: str, redis_url: str
) -> None:
    now_ms = int(time.time() * 1000)

    async def scenario() -> dict[str, int]:
        conn = await asyncpg.connect(database_url)
        client = aioredis.Redis.from_url(redis_url)
        try:
            for seq in range(3):
                await _store(conn, "parked", seq, now_ms - 60_000 + seq * 1_000, received_ago_s=30)
            await _store(conn, "late", 9, now_ms - 30_000, received_ago_s=5)  # newest by seq, older by time
            await _store(conn, "late", 5, now_ms - 20_000, received_ago_s=6)
            await _store(conn, "gone", 1, now_ms - 7_200_000, received_ago_s=7_200)  # beyond the TTL
            await _store(conn, "ahead", 1, now_ms - 50_000, received_ago_s=40)
            live = LiveState(client)
            newer = LivePosition(
                operator="op-r", bus="ahead", device="dev-ahead", seq=2, time_ms=now_ms, lat=36.8, lon=3.1
            )
            await live.update([newer], now_ms)
            assert await rebuild_live(conn, live, "op-r", ttl_s=900) == 3
            return {p.bus: p.seq for p in await live.buses("op-r")}
        finally:
            await conn.close()
            await client.aclose()

    assert asyncio.run(scenario()) == {"parked": 2, "late": 5, "ahead": 2}
