"""What every handler reads through: one Redis client and one PostgreSQL pool per process.

Handlers take ``services: Services`` as a Litestar dependency; nothing is
kept between requests beyond these connections (serve is stateless, so any
node answers any request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

import asyncpg
import redis.asyncio as aioredis
from litestar.di import NamedDependency

from fleet_schemas.trips import TripEtas
from fleet_serve.caching import Encoded
from fleet_serve.hot import MicroCache
from fleet_serve.settings import ServeSettings
from fleet_store.etas import EtaBoards
from fleet_store.feed_headers import FeedHeaders
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
    feed_headers: FeedHeaders
    """the GTFS-realtime headers last served, shared by every node"""
    trips: MicroCache[tuple[str, str], list[TripEtas]] = field(default_factory=MicroCache)
    """trip predictions by (operator, trip_id), held a quarter second (:mod:`fleet_serve.hot`)"""
    answers: MicroCache[tuple[str, ...], Encoded] = field(default_factory=MicroCache)
    """the hottest answers encoded, by (endpoint, operator, id), held as long"""


REDIS_CONNECTIONS = 64

ServicesDep: TypeAlias = NamedDependency[Services]
"""How a handler asks for them: ``services: ServicesDep``."""


async def open_services(settings: ServeSettings, redis_url: str, database_url: str) -> Services:
    """Connect to Redis and PostgreSQL (the pool opens lazily: /readyz says when they answer)."""
    # A burst waits up to 5 s for one of 64 connections, instead of failing past the default pool's 100.
    connections = aioredis.BlockingConnectionPool.from_url(
        redis_url,
        max_connections=REDIS_CONNECTIONS,
        timeout=5,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    client = aioredis.Redis(connection_pool=connections)
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=8, command_timeout=30)
    assert pool is not None
    revocations = RevocationWatcher(pool, client)
    revocations.start()
    return Services(
        settings, client, pool, LiveState(client), EtaBoards(client), revocations, FeedHeaders(client)
    )


async def close_services(services: Services) -> None:
    await services.revocations.stop()
    await services.pool.close()
    await services.redis.aclose()
