"""Run one coroutine on a fresh connection to the test database, from a synchronous test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

T = TypeVar("T")


def on_database(database_url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``work(conn)`` on its own connection, closed afterwards; its result."""

    async def run() -> T:
        conn = await asyncpg.connect(database_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())
