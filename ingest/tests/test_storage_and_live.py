"""History in TimescaleDB and live state in Redis, against the real servers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis

from fleet_ingest.assess import Accepted, Rejected
from fleet_ingest.live import LiveState, geo_key, positions_channel
from fleet_ingest.maintain import Retention, maintain
from fleet_ingest.service import open_pool
from fleet_ingest.storage import store_batch
from fleet_schemas.live import LIVE_DECODER
from fleet_testing.frames import frame

pytestmark = pytest.mark.stack

NOW_MS = 1_795_000_000_000


def accepted(seq: int, **fields: object) -> Accepted:
    return Accepted("op-a", "unit-1-k1", frame("unit-1", seq, **fields))


def test_duplicate_frames_are_stored_once_and_reported_as_not_new(database_url: str) -> None:
    async def scenario() -> tuple[set[tuple[str, int]], set[tuple[str, int]], int]:
        pool = await open_pool(database_url)
        try:
            first = (await store_batch(pool, uuid.uuid4(), [accepted(1), accepted(2), accepted(2)], [])).new
            second = (await store_batch(pool, uuid.uuid4(), [accepted(2), accepted(3)], [])).new
            count = await pool.fetchval("SELECT count(*) FROM positions")
            return first, second, count
        finally:
            await pool.close()

    first, second, count = asyncio.run(scenario())
    assert first == {("unit-1", 1), ("unit-1", 2)}
    assert second == {("unit-1", 3)}
    assert count == 3


def test_a_batch_retried_after_an_unknown_commit_outcome_is_stored_once(database_url: str) -> None:
    bad = Rejected("fleet/v1/op-a/unit-1/frames", "undecodable", "garbage", "unit-1", None, b"\xc1")
    batch = uuid.uuid4()

    async def scenario() -> tuple[set[tuple[str, int]], set[tuple[str, int]], int, int]:
        pool = await open_pool(database_url)
        try:
            first = (await store_batch(pool, batch, [accepted(1)], [bad])).new
            again = (await store_batch(pool, batch, [accepted(1)], [bad])).new
            return (
                first,
                again,
                await pool.fetchval("SELECT count(*) FROM positions"),
                await pool.fetchval("SELECT count(*) FROM rejected_frames"),
            )
        finally:
            await pool.close()

    first, again, positions, rejected = asyncio.run(scenario())
    assert first == {("unit-1", 1)}
    assert again == set()
    assert (positions, rejected) == (1, 1)


def test_rejected_frames_keep_their_raw_bytes_and_reason(database_url: str) -> None:
    bad = Rejected(
        "fleet/v1/op-a/unit-1/frames",
        "bad_signature",
        "signature does not match",
        "unit-1",
        None,
        b"\x94\x01raw",
    )

    async def scenario() -> asyncpg.Record:
        pool = await open_pool(database_url)
        try:
            await store_batch(pool, uuid.uuid4(), [], [bad])
            row = await pool.fetchrow("SELECT topic, reason, detail, device, seq, raw FROM rejected_frames")
            assert row is not None
            return row
        finally:
            await pool.close()

    row = asyncio.run(scenario())
    assert dict(row) == {
        "topic": bad.topic,
        "reason": "bad_signature",
        "detail": bad.detail,
        "device": "unit-1",
        "seq": None,
        "raw": bad.raw,
    }


def test_live_position_moves_forward_only_and_is_published(redis_url: str) -> None:
    async def scenario() -> tuple[list[int], int, list[Any], list[bytes]]:
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub()
        await pubsub.subscribe(positions_channel("op-a"))
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        live = LiveState(client, ttl_s=60)
        moved = [
            await live.update([accepted(5, lat=36.70), accepted(4, lat=36.60)], NOW_MS),
            await live.update([accepted(3, lat=36.50)], NOW_MS),  # older: must not move it back
            await live.update([accepted(6, lat=36.80)], NOW_MS),
        ]
        position = await live.position("op-a", "BUS-01")
        assert position is not None
        near = await client.geosearch(geo_key("op-a"), longitude=3.042, latitude=36.8, radius=1, unit="km")
        published: list[bytes] = []
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] == "message":
                published.append(message["data"])
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
        return moved, position.seq, list(near), published

    moved, seq, near, published = asyncio.run(scenario())
    assert moved == [1, 0, 1]
    assert seq == 6
    assert near == [b"BUS-01"]
    assert [LIVE_DECODER.decode(p[1:-1]).seq for p in published] == [5, 6]


def test_polar_fix_updates_the_hash_but_not_the_geo_set(redis_url: str) -> None:
    async def scenario() -> int:
        client = aioredis.Redis.from_url(redis_url)
        moved = await LiveState(client).update([accepted(1, lat=89.0)], NOW_MS)
        await client.aclose()
        return moved

    assert asyncio.run(scenario()) == 1
    assert redis.Redis.from_url(redis_url).zcard(geo_key("op-a")) == 0


def test_expired_buses_are_pruned_from_the_geo_set(redis_url: str) -> None:
    async def scenario() -> tuple[int, int]:
        client = aioredis.Redis.from_url(redis_url)
        live = LiveState(client, ttl_s=60)
        await live.update([accepted(1)], NOW_MS)
        kept = await live.prune(NOW_MS + 30_000)
        pruned = await live.prune(NOW_MS + 61_000)
        await client.aclose()
        return kept, pruned

    assert asyncio.run(scenario()) == (0, 1)


def test_rollups_follow_late_frames_and_retention_drops_old_chunks(database_url: str) -> None:
    minute = 1_795_000_020_000 - 1_795_000_020_000 % 60_000
    recent = [accepted(i, time_ms=minute + i * 1_000, speed_mps=10.0 + i) for i in range(1, 11)]
    late = [accepted(100, time_ms=minute + 30_500, speed_mps=40.0)]
    ancient = [accepted(200, time_ms=int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1000))]

    async def scenario() -> tuple[asyncpg.Record | None, asyncpg.Record | None, int, dict[str, int]]:
        pool = await open_pool(database_url)
        try:
            await store_batch(pool, uuid.uuid4(), recent, [])
            await maintain(database_url)
            before = await pool.fetchrow(
                "SELECT frames, speed_max FROM positions_1m WHERE bucket = fleet_ms($1)", minute
            )
            await store_batch(pool, uuid.uuid4(), late + ancient, [])
            report = await maintain(database_url, Retention(positions_days=365 * 3))
            after = await pool.fetchrow(
                "SELECT frames, speed_max FROM positions_1m WHERE bucket = fleet_ms($1)", minute
            )
            old = await pool.fetchval("SELECT count(*) FROM positions WHERE time < '2021-01-01'")
            return before, after, old, report.chunks_dropped
        finally:
            await pool.close()

    before, after, old, dropped = asyncio.run(scenario())
    assert before is not None
    assert after is not None
    assert (before["frames"], before["speed_max"]) == (10, 20.0)
    assert (after["frames"], after["speed_max"]) == (11, 40.0)
    assert old == 0
    assert dropped["positions"] >= 1
