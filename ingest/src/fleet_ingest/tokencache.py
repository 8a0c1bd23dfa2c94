"""Verified device tokens, in memory: argon2 once per token, not once per request.

A phone sends its token (``DEVICE:SECRET``, ``fleet_store.device_tokens``)
with every fix. Checking it against its argon2id hash costs tens of
milliseconds of CPU on purpose, so :class:`TokenCache` checks a token once and
then answers from a bounded cache keyed by the token's SHA-256 (a wrong token
is remembered as refused for a minute, so guessing costs the server nothing
more). Concurrent requests with the same unchecked token wait for one check.
Guessing with ever new secrets is bounded too: a device id gets at most
``CHECKS_BURST`` checks at once and one every ``1 / CHECKS_PER_S`` seconds
(:class:`TooManyChecks`, a 429), and at most ``HASHING_AT_ONCE`` hashes run
at a time, so verification cannot take the CPU from the requests it serves.

A revoked token (or device, or a device moved to another bus) is forgotten
within seconds, as the key cache does it (``fleet_ingest.keycache``):

* at once: PostgreSQL announces token and device changes at commit
  (``NOTIFY fleet_device_tokens`` / ``fleet_devices``, sql/015 and sql/002),
  and every cached token of that device is dropped;
* every ``poll_s`` (2 s): the cached tokens are looked up again, in one
  query, and those no longer active are dropped, in case a notification was
  missed.

A check that started before a revocation is not cached if the revocation was
announced meanwhile. If the database is unreachable, tokens already verified
keep working, new ones cannot be checked (the caller answers 503), and the
cache reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from fleet_ingest import metrics
from fleet_ingest.ratelimit import RateLimiter
from fleet_ingest.refresher import keep_fresh
from fleet_store import device_tokens
from fleet_store.device_tokens import Credential
from fleet_store.outages import POSTGRES_UNAVAILABLE

log = logging.getLogger("fleet_ingest.tokencache")

POLL_S = 2.0
SIZE = 50_000
REFUSED_S = 60.0
READ_TIMEOUT_S = 5.0
CHECKS_PER_S = 0.2
CHECKS_BURST = 5
HASHING_AT_ONCE = 2
DEVICES_CHANNEL = "fleet_devices"
_STILL_ACTIVE = (
    "SELECT t.token_id, d.operator, d.bus FROM device_tokens t JOIN devices d USING (device)"
    " WHERE t.token_id = ANY($1::text[]) AND t.status = 'active' AND d.status = 'active'"
)


class TooManyChecks(Exception):
    """A device id was presented with more unchecked tokens than it may be; retry after ``wait_s``."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"too many token checks for this device; retry in {wait_s:.0f} s")
        self.wait_s = wait_s


class Verified(msgspec.Struct, frozen=True):
    """Who a verified token speaks for."""

    token_id: str
    device: str
    operator: str
    bus: str


class TokenCache:
    """Device tokens checked against the registry; open it with ``async with``."""

    def __init__(
        self, pool: asyncpg.Pool, database_url: str, size: int = SIZE, poll_s: float = POLL_S
    ) -> None:
        self._pool = pool
        self._url = database_url
        self._size = size
        self._poll_s = poll_s
        self._verified: OrderedDict[bytes, Verified] = OrderedDict()
        self._by_device: defaultdict[str, set[bytes]] = defaultdict(set)
        self._refused: OrderedDict[bytes, float] = OrderedDict()
        self._checking: dict[bytes, asyncio.Future[Verified | None]] = {}
        self._checks = RateLimiter(CHECKS_PER_S, CHECKS_BURST)
        self._hashing = asyncio.Semaphore(HASHING_AT_ONCE)
        self._changes = 0
        """announced changes so far: a check that saw one happen while it ran is not cached"""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TokenCache:
        self._task = asyncio.create_task(keep_fresh("token cache", self._follow, log))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def verify(self, credential: Credential) -> Verified | None:
        """The device the token speaks for, or None if it is wrong, revoked or its device is.

        Raises a database error when the token is not cached and the registry cannot be read,
        TooManyChecks when its device id was tried too often with unchecked tokens.
        """
        digest = hashlib.sha256(f"{credential.device}:{credential.secret}".encode()).digest()
        found = self._verified.get(digest)
        if found is not None:
            self._verified.move_to_end(digest)
            metrics.TOKEN_CHECKS.labels("cached").inc()
            return found
        refused_until = self._refused.get(digest)
        if refused_until is not None and refused_until > time.monotonic():
            metrics.TOKEN_CHECKS.labels("refused_cached").inc()
            return None
        checking = self._checking.get(digest)
        if checking is None:
            wait = self._checks.wait_s(credential.device, time.monotonic())
            if wait > 0:
                metrics.TOKEN_CHECKS.labels("too_many").inc()
                raise TooManyChecks(wait)
            checking = asyncio.ensure_future(self._check(credential, digest))
            self._checking[digest] = checking
            checking.add_done_callback(lambda _: self._checking.pop(digest, None))
        return await asyncio.shield(checking)

    async def _check(self, credential: Credential, digest: bytes) -> Verified | None:
        changes = self._changes
        async with asyncio.timeout(READ_TIMEOUT_S), self._pool.acquire() as conn:  # TimeoutError: an OSError
            holder = await device_tokens.token_holder(conn, credential.device)
        matches = False
        if holder is not None:
            async with self._hashing:
                matches = await asyncio.to_thread(
                    device_tokens.secret_matches, holder.token_hash, credential.secret
                )
        if holder is None or not matches:
            metrics.TOKEN_CHECKS.labels("refused").inc()
            self._refused[digest] = time.monotonic() + REFUSED_S
            self._refused.move_to_end(digest)
            while len(self._refused) > self._size:
                self._refused.popitem(last=False)
            return None
        metrics.TOKEN_CHECKS.labels("verified").inc()
        verified = Verified(holder.token_id, holder.device, holder.operator, holder.bus)
        if changes == self._changes:
            self._remember(digest, verified)
        return verified

    def _remember(self, digest: bytes, verified: Verified) -> None:
        self._verified[digest] = verified
        self._by_device[verified.device].add(digest)
        while len(self._verified) > self._size:
            old, gone = self._verified.popitem(last=False)
            self._forget_index(old, gone.device)

    def _forget_index(self, digest: bytes, device: str) -> None:
        held = self._by_device.get(device)
        if held is not None:
            held.discard(digest)
            if not held:
                del self._by_device[device]

    def forget_device(self, device: str) -> None:
        """Drop every cached token of ``device`` (it changed: revoked, new token, other bus)."""
        self._changes += 1
        for digest in self._by_device.pop(device, set()):
            self._verified.pop(digest, None)

    # ------------------------------------------------------------ staying fresh

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        self.forget_device(str(payload))

    async def _follow(self, healthy: Callable[[], None]) -> None:
        conn = await asyncpg.connect(self._url)
        try:
            await conn.add_listener(device_tokens.CHANNEL, self._notified)
            await conn.add_listener(DEVICES_CHANNEL, self._notified)
            while True:
                await self._poll(conn)
                healthy()
                await asyncio.sleep(self._poll_s)
        finally:
            with contextlib.suppress(*POSTGRES_UNAVAILABLE):
                await conn.close(timeout=5)

    async def _poll(self, conn: asyncpg.Connection) -> None:
        """Drop cached tokens no longer active, or whose device moved to another operator or bus."""
        now = time.monotonic()
        while self._refused and next(iter(self._refused.values())) <= now:
            self._refused.popitem(last=False)
        if not self._verified:
            return
        changes = self._changes
        held = list(self._verified.items())
        rows = await conn.fetch(_STILL_ACTIVE, list({v.token_id for _, v in held}))
        if changes != self._changes:
            return  # dropped by a notification meanwhile; look again at the next poll
        current = {row["token_id"]: (row["operator"], row["bus"]) for row in rows}
        for digest, verified in held:
            stale = current.get(verified.token_id) != (verified.operator, verified.bus)
            if stale and self._verified.pop(digest, None) is not None:
                self._forget_index(digest, verified.device)
                log.info("device token no longer valid", extra={"token_id": verified.token_id})
