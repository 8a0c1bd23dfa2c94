"""Databases of a run's own beside the stack's: the test session's, a campaign's; dropped afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

from fleet_store.migrate import migrate
from fleet_store.settings import ServiceUrls


def with_database(url: str, database: str) -> str:
    """``url`` with its path (PostgreSQL database, Redis database number) replaced."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def recreate_database(admin_url: str, name: str, *, create: bool = True) -> None:
    """Drop database ``name`` (closing its sessions) and, with ``create``, make it again empty."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch(urls: ServiceUrls, suffix: str, redis_db: int) -> AsyncIterator[tuple[str, str]]:
    """A migrated database ``<stack database><suffix>`` and Redis database ``redis_db``, for a block;
    dropped and flushed after it whatever happens."""
    name = urlsplit(urls.database_url).path.lstrip("/") + suffix
    database_url = with_database(urls.database_url, name)
    redis_url = with_database(urls.redis_url, str(redis_db))

    async def reset(create: bool) -> None:
        await recreate_database(urls.database_url, name, create=create)
        client = redis.Redis.from_url(redis_url)
        try:
            client.flushdb()
        finally:
            client.close()

    await reset(True)
    await migrate(database_url)
    try:
        yield database_url, redis_url
    finally:
        await reset(False)
