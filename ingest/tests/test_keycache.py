"""The key cache against the real database: what verifies, and how soon changes are seen."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta

import asyncpg
import pytest

from fleet_ingest.assess import DeviceInfo
from fleet_ingest.keycache import KeyCache
from fleet_ingest.owntracks import Tracker
from fleet_processing.owntracks import secretbox_key
from fleet_schemas import DeviceKey, UnknownKeyError, open_envelope, seal
from fleet_store import devices
from fleet_store.errors import KeyEncryptionError
from fleet_store.owntracks import add_owntracks, set_encryption_key
from fleet_store.secretbox import KeyEncryptionKey
from fleet_testing.frames import frame

pytestmark = pytest.mark.stack

SEEN_WITHIN_S = 5.0


async def _eventually(condition: Callable[[], bool], what: str) -> float:
    """Seconds until ``condition`` held; fails after SEEN_WITHIN_S."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > SEEN_WITHIN_S:
            pytest.fail(f"not within {SEEN_WITHIN_S} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def kek() -> KeyEncryptionKey:
    return KeyEncryptionKey(os.urandom(32))


def test_cache_verifies_a_signed_batch_and_knows_the_device(database_url: str, kek: KeyEncryptionKey) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            issued = await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0001")
            await devices.add_device(conn, kek, "sogral", "unit-2", "DZ-16-0002")
            await devices.revoke_device(conn, "unit-2")
        finally:
            await conn.close()
        async with KeyCache(database_url, kek) as cache:
            raw = seal([frame("unit-1", seq=1)], issued.key)
            batch = open_envelope(raw, cache, topic_device="unit-1")
            assert (batch.key_id, len(batch.frames)) == ("unit-1-k1", 1)
            assert cache.key("unit-1-k1") == issued.key
            assert cache.device("unit-1") == DeviceInfo(operator="sogral", bus="DZ-16-0001", active=True)
            assert cache.device("unit-2") == DeviceInfo(operator="sogral", bus="DZ-16-0002", active=False)
            assert cache.key("unit-2-k1") is None
            assert cache.device("nobody") is None
            forged = seal([frame("unit-1", seq=2)], DeviceKey("unit-9-k1", "unit-1", os.urandom(32)))
            with pytest.raises(UnknownKeyError):
                open_envelope(forged, cache, topic_device="unit-1")

    asyncio.run(scenario())


def test_new_keys_and_devices_appear_and_revoked_ones_vanish_within_seconds(
    database_url: str, kek: KeyEncryptionKey
) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with KeyCache(database_url, kek, poll_s=60) as cache:
                await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0001")
                await _eventually(lambda: cache.key("unit-1-k1") is not None, "added key appears")
                await _eventually(lambda: cache.device("unit-1") is not None, "added device appears")
                await devices.revoke_key(conn, "unit-1", "unit-1-k1")
                await _eventually(lambda: cache.key("unit-1-k1") is None, "revoked key vanishes")
                await devices.rotate_key(conn, kek, "unit-1")
                await _eventually(lambda: cache.key("unit-1-k2") is not None, "new key appears")
                await devices.revoke_device(conn, "unit-1")
                await _eventually(lambda: cache.key("unit-1-k2") is None, "keys of a revoked device vanish")
                info = cache.device("unit-1")
                assert info is not None
                assert not info.active
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_retired_key_verifies_within_grace_and_not_after(database_url: str, kek: KeyEncryptionKey) -> None:
    grace = timedelta(seconds=2)

    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with KeyCache(database_url, kek) as cache:
                await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0001")
                rotated = await devices.rotate_key(conn, kek, "unit-1", grace)
                await _eventually(lambda: cache.key("unit-1-k2") is not None, "new key appears")
                grace_until = rotated.device.keys[1].grace_until
                assert grace_until is not None
                end = grace_until.timestamp()
                while (old := cache.key("unit-1-k1")) is not None:
                    assert time.time() < end, "verified after its grace ended"
                    await asyncio.sleep(0.02)
                assert old is None
                assert time.time() >= end - 0.05, "refused before its grace ended"
                assert cache.key("unit-1-k2") is not None
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_a_change_whose_notification_is_lost_is_seen_by_the_poll(
    database_url: str, kek: KeyEncryptionKey
) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0001")
            async with KeyCache(database_url, kek, poll_s=0.5) as cache:
                assert cache.key("unit-1-k1") is not None
                # Triggers off: no NOTIFY, and updated_at is set by hand as the trigger would.
                await conn.execute("SET session_replication_role = replica")
                await conn.execute(
                    "UPDATE device_keys SET status = 'revoked', revoked_at = now(), updated_at = now()"
                    " WHERE key_id = 'unit-1-k1'"
                )
                await _eventually(lambda: cache.key("unit-1-k1") is None, "poll drops the revoked key")
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_cache_reconnects_and_reloads_after_losing_the_database(
    database_url: str, kek: KeyEncryptionKey, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0001")
            async with KeyCache(database_url, kek, poll_s=0.2) as cache:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                assert cache.key("unit-1-k1") is not None, "answers from memory meanwhile"
                await devices.revoke_key(conn, "unit-1", "unit-1-k1")
                await _eventually(
                    lambda: cache.key("unit-1-k1") is None, "revocation seen after reconnecting"
                )
        finally:
            await conn.close()

    with caplog.at_level(logging.INFO, logger="fleet_ingest.keycache"):
        asyncio.run(scenario())
    assert "key cache reconnected and reloaded" in caplog.text


def test_cache_refuses_to_start_under_another_kek(database_url: str, kek: KeyEncryptionKey) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0001")
        finally:
            await conn.close()
        other = KeyEncryptionKey(os.urandom(32))
        with pytest.raises(KeyEncryptionError, match=f"sealed under key-encryption key {kek.kek_id}"):
            async with KeyCache(database_url, other):
                pass

    asyncio.run(scenario())


def test_an_owntracks_app_appears_with_its_login_and_its_secret_opened(
    database_url: str, kek: KeyEncryptionKey
) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await add_owntracks(conn, kek, "sogral", "ot-1", "DZ-16-0001")
            async with KeyCache(database_url, kek, poll_s=60) as cache:
                assert cache.tracker("ot-1") == Tracker("ot-1", None)
                await add_owntracks(conn, kek, "sogral", "ot-2", "DZ-16-0002", "driver-2", "s3cret")
                await _eventually(lambda: cache.tracker("ot-2") is not None, "added app appears")
                assert cache.tracker("ot-2") == Tracker("driver-2", secretbox_key("s3cret"))
                assert cache.device("ot-2") == DeviceInfo(operator="sogral", bus="DZ-16-0002", active=True)
                await devices.add_device(conn, kek, "sogral", "unit-3", "DZ-16-0003")
                await _eventually(lambda: cache.device("unit-3") is not None, "added unit appears")
                assert cache.tracker("unit-3") is None
                await set_encryption_key(conn, kek, "ot-2", None)
                await _eventually(
                    lambda: cache.tracker("ot-2") == Tracker("driver-2", None), "secret removed"
                )
        finally:
            await conn.close()
        with pytest.raises(KeyEncryptionError):
            async with KeyCache(database_url, KeyEncryptionKey(os.urandom(32))):
                pass

    asyncio.run(scenario())
