"""What every handler reads through: one Redis client and one PostgreSQL pool per process.

Handlers take ``services: Services`` as a Litestar dependency; nothing is
kept between requests beyond these connections (serve is stateless, so any
node answers any request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import asyncpg
import redis.asyncio as aioredis
from litestar.di import NamedDependency

from fleet_serve.settings import ServeSettings
from fleet_store.etas import EtaBoards
from fleet_store.live import LiveState
from fleet_store.tokens import RevocationWatcher


@dataclass(frozen=True, slots=True)
class Services:
    settings: ServeSettings
    redis: aioredis.Redis
    pool: asyncpg.Pool
    live: LiveState
    boards: EtaBoards
    revocations: RevocationWatcher
    """revoked token ids, in memory (fleet_store.tokens)"""


ServicesDep: TypeAlias = NamedDependency[Services]
"""How a handler asks for them: ``services: ServicesDep``."""


async def open_services(settings: ServeSettings, redis_url: str, database_url: str) -> Services:
    """Connect to Redis and PostgreSQL (the pool opens lazily: /readyz says when they answer)."""
    client = aioredis.Redis.from_url(
        redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
    )
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=8, command_timeout=30)
    assert pool is not None
    revocations = RevocationWatcher(pool, client)
    revocations.start()
    return Services(settings, client, pool, LiveState(client), EtaBoards(client), revocations)


async def close_services(services: Services) -> None:
    await services.revocations.stop()
    await services.pool.close()
    await services.redis.aclose()
