"""What asyncpg raises when PostgreSQL is down, restarting or cut off mid-query.

One tuple, so every loop that waits out an outage catches the same things.
``InternalClientError`` is in it because asyncpg raises it ("cannot switch to
state 12; another operation (2) is in progress") on a connection the server
terminated mid-transaction (MagicStack/asyncpg#1069, sqlalchemy#13241): a
restart of the server, not a bug of the caller.
"""

from __future__ import annotations

import asyncpg

POSTGRES_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
