"""The device-token cache against the real database: one argon2 check per token, revocation within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY

from fleet_ingest.tokencache import CHECKS_BURST, TokenCache, TooManyChecks, Verified
from fleet_store import devices
from fleet_store.device_tokens import Credential, parse_credential
from fleet_store.secretbox import KeyEncryptionKey

pytestmark = pytest.mark.stack

WITHIN_S = 5.0


def _checks(result: str) -> float:
    return REGISTRY.get_sample_value("fleet_http_ingest_token_checks_total", {"result": result}) or 0.0


async def _add_phone(database_url: str, device: str) -> Credential:
    conn = await asyncpg.connect(database_url)
    try:
        issued = await devices.add_device(
            conn, KeyEncryptionKey(os.urandom(32)), "sogral", device, "DZ-16-0007", kind="phone"
        )
    finally:
        await conn.close()
    assert issued.token is not None
    credential = parse_credential(issued.token)
    assert credential is not None
    return credential


@contextlib.asynccontextmanager
async def _cache(database_url: str) -> AsyncIterator[TokenCache]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        async with TokenCache(pool, database_url) as cache:
            yield cache
    finally:
        await pool.close()


async def _on(database_url: str, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


def test_a_token_is_checked_once_however_many_requests_carry_it(database_url: str) -> None:
    async def scenario() -> None:
        credential = await _add_phone(database_url, "phone-7")
        async with _cache(database_url) as cache:
            verified_before, cached_before = _checks("verified"), _checks("cached")
            answers = await asyncio.gather(*(cache.verify(credential) for _ in range(20)))
            assert set(answers) == {Verified("phone-7-t1", "phone-7", "sogral", "DZ-16-0007")}
            assert _checks("verified") - verified_before == 1
            assert await cache.verify(credential) == answers[0]
            assert _checks("cached") - cached_before == 1
            wrong = Credential(
                "phone-7", credential.secret[:-1] + ("A" if credential.secret[-1] != "A" else "B")
            )
            refused_before = _checks("refused")
            assert await cache.verify(wrong) is None
            assert await cache.verify(wrong) is None
            assert _checks("refused") - refused_before == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE device_tokens SET status = 'revoked', revoked_at = now() WHERE device = $1",
        "UPDATE devices SET status = 'revoked', revoked_at = now() WHERE device = $1",
        "UPDATE devices SET bus = 'DZ-16-0099' WHERE device = $1",
    ],
)
def test_a_revoked_token_or_device_or_a_moved_bus_is_forgotten_within_seconds(
    database_url: str, change: str
) -> None:
    async def scenario() -> None:
        credential = await _add_phone(database_url, "phone-7")
        async with _cache(database_url) as cache:
            first = await cache.verify(credential)
            assert first is not None
            await _on(database_url, change, "phone-7")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WITHIN_S
            while (now := await cache.verify(credential)) == first:
                assert loop.time() < deadline, "the cache still answers from before the change"
                await asyncio.sleep(0.05)
            if "bus" in change and "status" not in change:
                assert now == Verified("phone-7-t1", "phone-7", "sogral", "DZ-16-0099")
            else:
                assert now is None

    asyncio.run(scenario())


def test_guessing_secrets_for_one_device_is_refused_after_a_few_checks(database_url: str) -> None:
    async def scenario() -> None:
        credential = await _add_phone(database_url, "phone-7")
        async with _cache(database_url) as cache:
            for n in range(CHECKS_BURST):
                assert await cache.verify(Credential("phone-7", f"guess-{n}")) is None
            with pytest.raises(TooManyChecks) as refused:
                await cache.verify(Credential("phone-7", "guess-again"))
            assert refused.value.wait_s > 0
            assert await cache.verify(Credential("phone-7", "guess-0")) is None  # remembered: no check
            with pytest.raises(TooManyChecks):
                await cache.verify(credential)  # the right one waits its turn too

    asyncio.run(scenario())
