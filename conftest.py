"""Session fixtures: the real local stack (or the servers FLEET_*_URL point at), clean per test.

No server is mocked: tests that take these fixtures talk to real Mosquitto,
Redis and PostgreSQL+TimescaleDB. The stack is started once per session and
stopped afterwards if this session started it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from fleet_devtools import stack
from fleet_devtools.scratch import recreate_database
from fleet_schemas import DeviceKey, topics
from fleet_store.migrate import migrate
from fleet_store.settings import ServiceUrls, load_settings
from fleet_testing.agents import MakeReceiver, Receiver
from fleet_testing.broker import PrivateBroker
from fleet_testing.cleanup import BrokerCleanup, left_behind, look
from fleet_testing.database import empty_tables
from fleet_testing.ingest import IngestProcesses

TEST_REDIS_DB = 15


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def stack_urls() -> Iterator[ServiceUrls]:
    """The servers of this test session; the run fails if its tests left sessions or retained messages.

    Tests share this broker, so whatever one leaves there (a session queues
    every later frame for nobody, a retained status is sent to every later
    subscriber) outlives it: the broker is looked at before the first test and
    after the last, and must be as it was. Each look waits for a fresh $SYS
    pass (up to 10 s), since the session count it keeps may be 10 s old.
    """
    with stack.running(load_settings()) as urls:
        before = look(urls.mqtt_url, fresh=True)
        yield urls
        left = left_behind(before, look(urls.mqtt_url, fresh=True))
        assert not left, (
            f"the tests left on the shared broker ({urls.mqtt_url.split('@')[-1]}): {'; '.join(left)}."
            " Take client ids and retained topics from the broker_cleanup (or receivers) fixture."
        )


@pytest.fixture(scope="session")
def migrated_database_url(stack_urls: ServiceUrls) -> Iterator[str]:
    """A database of its own for the tests (``<name>_test``), migrated once, dropped after the last test."""
    name = urlsplit(stack_urls.database_url).path.lstrip("/") + "_test"
    asyncio.run(recreate_database(stack_urls.database_url, name))
    url = _with_database(stack_urls.database_url, name)
    asyncio.run(migrate(url))
    yield url
    asyncio.run(recreate_database(stack_urls.database_url, name, create=False))


@pytest.fixture
def database_url(migrated_database_url: str) -> str:
    """The migrated test database, emptied before the test."""
    asyncio.run(empty_tables(migrated_database_url))
    return migrated_database_url


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="session")
def test_redis_url(stack_urls: ServiceUrls) -> Iterator[str]:
    """The tests' Redis database, left empty after the last test."""
    url = _with_database(stack_urls.redis_url, str(TEST_REDIS_DB))
    yield url
    _flush(url)


@pytest.fixture
def redis_url(test_redis_url: str) -> str:
    """A Redis database of its own, flushed before the test."""
    _flush(test_redis_url)
    return test_redis_url


@pytest.fixture
def broker(stack_urls: ServiceUrls) -> Iterator[PrivateBroker]:
    """A Mosquitto of the test's own, with fleet's config, to stop and restart at will."""
    private = PrivateBroker()
    private.start()
    try:
        yield private
    finally:
        private.close()


@pytest.fixture
def broker_cleanup() -> Iterator[BrokerCleanup]:
    """Persistent sessions and retained topics the test makes on any broker, removed when it ends."""
    cleanup = BrokerCleanup()
    try:
        yield cleanup
    finally:
        cleanup.close()


@pytest.fixture
def receivers(broker_cleanup: BrokerCleanup) -> MakeReceiver:
    """Receivers of the test's own; their sessions, and what their operator's agents retained, go after it."""

    def make(broker_url: str, operator: str, keys: dict[str, DeviceKey]) -> Receiver:
        broker_cleanup.retained(broker_url, f"{topics.ROOT}/{operator}/#")
        return Receiver(broker_url, operator, keys, broker_cleanup.client_id(broker_url, "receiver"))

    return make


@pytest.fixture
def operator_id() -> str:
    """An operator id no other test uses, so each test has its own MQTT topics."""
    return f"op-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def ingest(stack_urls: ServiceUrls, database_url: str, redis_url: str) -> Iterator[IngestProcesses]:
    """Real ``fleet ingest`` processes of the test's own; their broker sessions are deleted afterwards."""
    processes = IngestProcesses(stack_urls, database_url, redis_url)
    try:
        yield processes
    finally:
        processes.close()
