"""Revoked API tokens: PostgreSQL holds the record, Redis the copy every serve node reads.

A revocation writes the row in ``revoked_tokens`` (migration 014) first, then
``fleet:tokens:revoked:{jti}`` in Redis with an expiry at the token's own
expiry (PXAT): past it the token is refused as expired, so the key may go.
Checking a token is one Redis round trip (both EXISTS in one pipeline): the
jti's key, and the marker ``fleet:tokens:revocations-loaded`` that says the
copy is whole. Without the marker (Redis flushed or restarted empty) the
checker reloads every unexpired row from PostgreSQL, sets the marker, and
checks again, so a lost cache never lets a revoked token back in. Reloads by
two nodes at once are harmless: both write the same keys.

The jti sits in braces (a Redis Cluster hash tag), so the keys spread over
the slots by token.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

LOADED_KEY = "fleet:tokens:revocations-loaded"
"""present while the Redis copy holds every unexpired revocation of the table"""


def revoked_key(jti: str) -> str:
    return f"fleet:tokens:revoked:{{{jti}}}"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def revoke(pool: asyncpg.Pool, client: aioredis.Redis, jti: str, expires_at_ms: int) -> bool:
    """Refuse the token ``jti`` from now on, everywhere; True if it was not revoked before."""
    expires_at = datetime.fromtimestamp(expires_at_ms / 1000, UTC)
    row = await pool.fetchrow(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2)"
        " ON CONFLICT (jti) DO NOTHING RETURNING jti",
        jti,
        expires_at,
    )
    if expires_at_ms > _ms(datetime.now(UTC)):
        await client.set(revoked_key(jti), b"1", pxat=expires_at_ms)
    return row is not None


async def is_revoked(pool: asyncpg.Pool, client: aioredis.Redis, jti: str) -> bool:
    """Whether ``jti`` was revoked (and the token has not yet expired)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.exists(revoked_key(jti))
        pipe.exists(LOADED_KEY)
        revoked, loaded = await pipe.execute()
    if revoked:
        return True
    if loaded:
        return False
    await reload(pool, client)
    return bool(await client.exists(revoked_key(jti)))


async def reload(pool: asyncpg.Pool, client: aioredis.Redis) -> int:
    """Copy every unexpired revocation from PostgreSQL to Redis, then mark the copy whole."""
    rows = await pool.fetch("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > now()")
    async with client.pipeline(transaction=False) as pipe:
        for row in rows:
            pipe.set(revoked_key(row["jti"]), b"1", pxat=_ms(row["expires_at"]))
        pipe.set(LOADED_KEY, b"1")
        await pipe.execute()
    return len(rows)


async def purge_expired(pool: asyncpg.Pool) -> int:
    """Delete the rows of tokens that have expired (refused anyway); returns how many."""
    status: str = await pool.execute("DELETE FROM revoked_tokens WHERE expires_at <= now()")
    return int(status.rsplit(" ", 1)[-1])
