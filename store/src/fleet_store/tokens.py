"""Revoked API tokens: PostgreSQL holds the record; every serve node keeps them in memory.

A revocation writes the row in ``revoked_tokens`` (migration 014) first, then
``fleet:tokens:revoked:{jti}`` in Redis with an expiry at the token's own
expiry (PXAT: past it the token is refused as expired anyway), then publishes
the jti on ``fleet:tokens:revocations``.

Each serve node runs a :class:`RevocationWatcher`: it subscribes to that
channel, *then* loads every unexpired row from PostgreSQL (so a revocation
made in between is in one or the other), and from then on answers from
memory, with no round trip per request (a Redis check costs about 200 µs of
the process's CPU, the whole budget of a 5,000 requests/s endpoint). While it
is not subscribed (starting, Redis away, the connection dropped or silent
past a ping deadline) it says so, and each check asks Redis instead
(:func:`is_revoked`, one pipeline): the jti's key, and the marker
``fleet:tokens:revocations-loaded`` that says the Redis copy is whole.
Without the marker (Redis flushed or restarted empty) that check reloads the
copy from PostgreSQL first, so a lost cache never lets a revoked token back
in. On reconnecting, the watcher reloads from PostgreSQL: whatever was
published while it was away is in the table.

The jti sits in braces (a Redis Cluster hash tag), so the keys spread over
the slots by token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fleet_store.outages import POSTGRES_UNAVAILABLE

_FOLLOW_LOST: tuple[type[Exception], ...] = (*POSTGRES_UNAVAILABLE, RedisError, TimeoutError)

log = logging.getLogger("fleet_store.tokens")

CHANNEL = "fleet:tokens:revocations"
"""one message per revocation: ``{"jti", "expires_at_ms"}``"""

LOADED_KEY = "fleet:tokens:revocations-loaded"
"""present while the Redis copy holds every unexpired revocation of the table"""


class Revocation(msgspec.Struct, frozen=True):
    jti: str
    expires_at_ms: int


_REVOCATION = msgspec.json.Encoder()
_REVOCATION_DECODER = msgspec.json.Decoder(Revocation)


def revoked_key(jti: str) -> str:
    return f"fleet:tokens:revoked:{{{jti}}}"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def revoke(
    db: asyncpg.Pool | asyncpg.Connection, client: aioredis.Redis, jti: str, expires_at_ms: int
) -> bool:
    """Refuse the token ``jti`` from now on, everywhere; True if it was not revoked before.

    Revoked twice, the later expiry is kept (a revocation by jti alone, whose
    expiry is a guess, never shortens one made with the token).
    """
    expires_at = datetime.fromtimestamp(expires_at_ms / 1000, UTC)
    row = await db.fetchrow(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti)"
        " DO UPDATE SET expires_at = greatest(revoked_tokens.expires_at, EXCLUDED.expires_at)"
        " RETURNING expires_at, (xmax = 0) AS inserted",
        jti,
        expires_at,
    )
    assert row is not None  # an upsert always returns its row
    kept_until_ms = _ms(row["expires_at"])
    if kept_until_ms > _ms(datetime.now(UTC)):
        await client.set(revoked_key(jti), b"1", pxat=kept_until_ms)
        await client.publish(CHANNEL, _REVOCATION.encode(Revocation(jti, kept_until_ms)))
    return bool(row["inserted"])


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


async def purge_expired(db: asyncpg.Pool | asyncpg.Connection) -> None:
    """Delete the rows of tokens that have expired (refused anyway)."""
    await db.execute("DELETE FROM revoked_tokens WHERE expires_at <= now()")


class RevocationWatcher:
    """Every unexpired revocation in memory, kept current by the channel; one per process."""

    PING_EVERY_S = 5.0
    SILENCE_LIMIT_S = 15.0
    """a subscription that answered no ping for this long is treated as lost"""
    RETRY_S = 1.0
    POLL_S = 0.2
    """how often the loop looks at the stop event between messages"""

    def __init__(self, pool: asyncpg.Pool, client: aioredis.Redis) -> None:
        self._pool = pool
        self._client = client
        self._revoked: dict[str, int] = {}
        self._live = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def live(self) -> bool:
        """True while subscribed with the table loaded: checks answer from memory."""
        return self._live

    async def is_revoked(self, jti: str) -> bool:
        if self._live:
            return jti in self._revoked
        return await is_revoked(self._pool, self._client, jti)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="revocation-watcher")

    async def stop(self) -> None:
        """Ask the loop to end and wait for it (it looks every POLL_S); cancel it only as a last resort.

        Cancelling redis-py's ``get_message(timeout=…)`` can be swallowed and
        leave the task reading for ever, so the loop ends on an event instead.
        """
        if self._task is None:
            return
        self._stopping.set()
        done, _ = await asyncio.wait({self._task}, timeout=self.PING_EVERY_S)
        if not done:
            log.warning("token revocations: the watcher did not stop; cancelling it")
            self._task.cancel()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._follow()
            except _FOLLOW_LOST as exc:
                log.warning(
                    "token revocations: %s; checking Redis per request until back", type(exc).__name__
                )
            except msgspec.DecodeError:  # not ours: reload rather than guess what it meant
                log.error("token revocations: a message on %s is not a revocation; reloading", CHANNEL)
            except Exception:
                log.exception("token revocations: unexpected error; checking Redis per request until back")
            finally:
                self._live = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.RETRY_S)

    async def _follow(self) -> None:
        async with self._client.pubsub() as pubsub:
            await pubsub.subscribe(CHANNEL)
            rows = await self._pool.fetch(
                "SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > now()"
            )
            self._revoked = {row["jti"]: _ms(row["expires_at"]) for row in rows}
            self._live = True
            last_heard = last_ping = time.monotonic()
            while not self._stopping.is_set():
                message = await pubsub.get_message(timeout=self.POLL_S)
                now = time.monotonic()
                if message is not None:
                    last_heard = now
                    if message["type"] == "message":
                        self._add(_REVOCATION_DECODER.decode(message["data"]))
                if now - last_heard > self.SILENCE_LIMIT_S:
                    raise TimeoutError("no answer to pings")
                if now - last_ping > self.PING_EVERY_S:
                    await pubsub.ping()
                    last_ping = now

    def _add(self, revocation: Revocation) -> None:
        now_ms = int(time.time() * 1000)
        self._revoked = {j: t for j, t in self._revoked.items() if t > now_ms}
        self._revoked[revocation.jti] = revocation.expires_at_ms
