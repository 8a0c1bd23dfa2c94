"""``/healthz`` (the process answers) and ``/readyz`` (Redis and PostgreSQL answer too).

A load balancer sends traffic only to ready nodes; a node whose stores are
away says so with 503 and which one, and keeps running until they return.
"""

from __future__ import annotations

import asyncio

import msgspec
import redis.exceptions
from litestar import Response, get

from fleet_serve.services import Services, ServicesDep
from fleet_store.outages import POSTGRES_UNAVAILABLE

_UNREACHABLE: tuple[type[Exception], ...] = (*POSTGRES_UNAVAILABLE, TimeoutError)

PROBE_TIMEOUT_S = 2.0


class Health(msgspec.Struct, frozen=True, omit_defaults=True):
    status: str
    redis: str | None = None
    postgresql: str | None = None


@get("/healthz", sync_to_thread=False, include_in_schema=True, tags=["operations"])
def healthz() -> Health:
    """Alive: the process answers."""
    return Health("ok")


@get("/readyz", tags=["operations"])
async def readyz(services: ServicesDep) -> Response[Health]:
    """Ready: Redis and PostgreSQL both answer within two seconds."""
    redis_state, pg_state = await asyncio.gather(_redis(services), _postgresql(services))
    ready = redis_state == pg_state == "ok"
    return Response(
        Health("ok" if ready else "unavailable", redis_state, pg_state), status_code=200 if ready else 503
    )


async def _redis(services: Services) -> str:
    try:
        await asyncio.wait_for(services.redis.ping(), PROBE_TIMEOUT_S)
    except (redis.exceptions.RedisError, OSError, TimeoutError):
        return "unreachable"
    return "ok"


async def _postgresql(services: Services) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S), services.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
    except _UNREACHABLE:
        return "unreachable"
    return "ok"


ROUTES = [healthz, readyz]
