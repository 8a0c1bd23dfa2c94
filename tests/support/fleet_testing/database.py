"""The tests' database: emptied between tests, and async work run from a synchronous test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

T = TypeVar("T")

TABLES_KEPT = ("schema_migrations",)


async def empty_tables(url: str) -> None:
    """Empty every table but the migrations' record."""
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> ALL($1::text[])",
            list(TABLES_KEPT),
        )
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(t['name'] for t in tables)} CASCADE")
    finally:
        await conn.close()


def run_on(database_url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def run() -> T:
        conn = await asyncpg.connect(database_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())
