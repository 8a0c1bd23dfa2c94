"""Token revocations with the real PostgreSQL and Redis: the table, the Redis copy, each node's memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest
import redis.asyncio as aioredis

from fleet_store import tokens
from fleet_store.tokens import RevocationWatcher

pytestmark = pytest.mark.stack

LATER_MS = int(time.time() * 1000) + 3_600_000


@asynccontextmanager
async def _stores(database_url: str, redis_url: str) -> AsyncIterator[tuple[asyncpg.Pool, aioredis.Redis]]:
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=4)
    assert pool is not None
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield pool, client
    finally:
        await pool.close()
        await client.aclose()


async def _until(done: Callable[[], Awaitable[bool] | bool]) -> None:
    """Wait for a background task to get there (bounded, so a broken one fails instead of hanging)."""
    for _ in range(3_000):
        outcome = done()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


@asynccontextmanager
async def _watching(pool: asyncpg.Pool, client: aioredis.Redis) -> AsyncIterator[RevocationWatcher]:
    watcher = RevocationWatcher(pool, client)
    watcher.start()
    try:
        await _until(lambda: watcher.live)
        yield watcher
    finally:
        await watcher.stop()


def test_a_live_watcher_answers_from_memory_once_the_revocation_is_published(
    database_url: str, redis_url: str
) -> None:
    async def scenario() -> None:
        async with _stores(database_url, redis_url) as (pool, client), _watching(pool, client) as watcher:
            assert not await watcher.is_revoked("j1")
            assert await tokens.revoke(pool, client, "j1", LATER_MS)
            await _until(lambda: watcher.is_revoked("j1"))
            await client.flushdb()
            await pool.execute("DELETE FROM revoked_tokens")
            assert await watcher.is_revoked("j1")
            assert not await watcher.is_revoked("j2")

    asyncio.run(scenario())


def test_a_watcher_that_starts_later_loads_the_revocations_made_before(
    database_url: str, redis_url: str
) -> None:
    async def scenario() -> None:
        async with _stores(database_url, redis_url) as (pool, client):
            await tokens.revoke(pool, client, "early", LATER_MS)
            await tokens.revoke(pool, client, "expired", int(time.time() * 1000) - 1_000)
            await client.flushdb()
            async with _watching(pool, client) as watcher:
                assert await watcher.is_revoked("early")
                assert not await watcher.is_revoked("expired")

    asyncio.run(scenario())


def test_without_a_live_watcher_each_check_asks_redis_and_reloads_a_lost_copy(
    database_url: str, redis_url: str
) -> None:
    async def scenario() -> None:
        async with _stores(database_url, redis_url) as (pool, client):
            watcher = RevocationWatcher(pool, client)  # never started: not live
            await tokens.revoke(pool, client, "j1", LATER_MS)
            assert await watcher.is_revoked("j1")
            await client.flushdb()
            assert await watcher.is_revoked("j1")
            assert await client.exists(tokens.LOADED_KEY, tokens.revoked_key("j1")) == 2
            assert not await watcher.is_revoked("j2")

    asyncio.run(scenario())


def test_a_stranger_message_on_the_channel_makes_the_watcher_reload_not_stop(
    database_url: str, redis_url: str
) -> None:
    async def scenario() -> None:
        async with _stores(database_url, redis_url) as (pool, client), _watching(pool, client) as watcher:
            await client.publish(tokens.CHANNEL, b"not a revocation")
            await tokens.revoke(pool, client, "after", LATER_MS)
            await _until(lambda: watcher.live and watcher.is_revoked("after"))

    asyncio.run(scenario())


def test_revoking_twice_keeps_the_later_expiry(database_url: str, redis_url: str) -> None:
    async def scenario() -> None:
        async with _stores(database_url, redis_url) as (pool, client):
            assert await tokens.revoke(pool, client, "j1", LATER_MS + 60_000)
            assert not await tokens.revoke(pool, client, "j1", LATER_MS)
            kept = await pool.fetchval("SELECT expires_at FROM revoked_tokens WHERE jti = 'j1'")
            assert int(kept.timestamp() * 1000) == LATER_MS + 60_000
            assert abs(await client.pexpiretime(tokens.revoked_key("j1")) - (LATER_MS + 60_000)) <= 1

    asyncio.run(scenario())
