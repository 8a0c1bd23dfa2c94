"""Tests leave no session and no retained message on a broker: what the cleanup removes, the check sees."""

from __future__ import annotations

import asyncio

import pytest

from fleet_ingest.mqtt_consumer import Consumer
from fleet_schemas import status_topic
from fleet_testing.broker import PrivateBroker
from fleet_testing.cleanup import BrokerCleanup, left_behind, look
from fleet_testing.mqtt import publish_all

pytestmark = pytest.mark.stack


def _persistent_session(url: str, client_id: str) -> None:
    """Connect once without a clean start, with the consumer's default day of session expiry."""

    async def connect() -> bool:
        async with Consumer(url, client_id, "fleet/v1/op-left/+/frames") as consumer:
            return consumer.session_present

    assert asyncio.run(connect()) is False


def test_a_session_and_a_retained_status_are_seen_as_left_over_until_the_cleanup_removes_them(
    broker: PrivateBroker,
) -> None:
    before = look(broker.url, fresh=True)
    cleanup = BrokerCleanup()
    _persistent_session(broker.url, cleanup.client_id(broker.url, "left"))
    topic = status_topic("op-left", "unit-1")
    cleanup.retained(broker.url, "fleet/v1/op-left/#")
    publish_all(broker.url, [(topic, b'{"state":"offline"}')], retain=True)

    left = left_behind(before, look(broker.url, fresh=True))
    cleanup.close()
    after = look(broker.url, fresh=True)

    assert left == [
        f"1 retained messages: {topic}",
        f"1 persistent sessions ({before.sessions or 0} disconnected clients with a session before the run,"
        f" {(before.sessions or 0) + 1} after)",
    ]
    assert left_behind(before, after) == []
    assert after.retained == before.retained


def test_cleanup_of_a_broker_the_test_stopped_for_good_is_not_an_error(broker: PrivateBroker) -> None:
    cleanup = BrokerCleanup()
    _persistent_session(broker.url, cleanup.client_id(broker.url, "gone"))
    cleanup.retained(broker.url, "fleet/v1/op-gone/#")
    broker.stop()
    cleanup.close()  # nothing to remove from: the broker's folder goes with the test
