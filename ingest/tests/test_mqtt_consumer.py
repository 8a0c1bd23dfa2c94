"""The lean MQTT 5 consumer against the real Mosquitto: ack-after-commit semantics."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from fleet_ingest.mqtt_consumer import READ_BYTES, Consumer, Message, MqttError
from fleet_ingest.runner import forget_session, open_session
from fleet_schemas import MAX_PACKET_BYTES, frames_subscription, frames_topic
from fleet_store.mqtt import connect_client
from fleet_store.settings import ServiceUrls
from fleet_testing.broker import PrivateBroker
from fleet_testing.cleanup import BrokerCleanup
from fleet_testing.mqtt import publish_all

pytestmark = pytest.mark.stack


async def _take(consumer: Consumer, count: int) -> list[Message]:
    taken: list[Message] = []
    while len(taken) < count:
        batch = await consumer.receive(count - len(taken), 5.0)
        assert batch, f"only {len(taken)} of {count} messages arrived"
        taken += batch
    return taken


def _messages(prefix: str, count: int) -> list[tuple[str, bytes]]:
    return [(f"{prefix}/{i % 7}", f"payload-{i}".encode()) for i in range(count)]


def test_unacked_messages_come_again_after_reconnect_and_acked_ones_do_not(
    stack_urls: ServiceUrls, broker_cleanup: BrokerCleanup
) -> None:
    prefix = f"consumer-test/{uuid.uuid4().hex[:8]}"
    client_id = broker_cleanup.client_id(stack_urls.mqtt_url, "consumer")

    async def scenario() -> tuple[list[Message], list[Message]]:
        async with Consumer(stack_urls.mqtt_url, client_id, f"{prefix}/+", clean_start=True) as consumer:
            await asyncio.to_thread(publish_all, stack_urls.mqtt_url, _messages(prefix, 200))
            first = await _take(consumer, 200)
            consumer.ack([m.packet_id for m in first[:120]])
            await consumer.flush()
        async with Consumer(stack_urls.mqtt_url, client_id, f"{prefix}/+") as consumer:
            assert consumer.session_present
            again = await _take(consumer, 80)
            consumer.ack([m.packet_id for m in again])
            assert await consumer.receive(10, 0.5) == []
        return first, again

    first, again = asyncio.run(scenario())
    assert {m.payload for m in first} == {f"payload-{i}".encode() for i in range(200)}
    assert {m.payload for m in again} == {m.payload for m in first[120:]}
    assert all(m.duplicate for m in again)


def test_shared_subscription_splits_messages_between_consumers(
    stack_urls: ServiceUrls, broker_cleanup: BrokerCleanup
) -> None:
    prefix = f"consumer-test/{uuid.uuid4().hex[:8]}"
    group = f"g{uuid.uuid4().hex[:8]}"
    broker_cleanup.session(stack_urls.mqtt_url, f"{group}-a")
    broker_cleanup.session(stack_urls.mqtt_url, f"{group}-b")

    async def scenario() -> tuple[int, int]:
        subscription = f"$share/{group}/{prefix}/+"
        async with (
            Consumer(stack_urls.mqtt_url, f"{group}-a", subscription, clean_start=True) as a,
            Consumer(stack_urls.mqtt_url, f"{group}-b", subscription, clean_start=True) as b,
        ):
            await asyncio.to_thread(publish_all, stack_urls.mqtt_url, _messages(prefix, 1_000))
            got_a: list[Message] = []
            got_b: list[Message] = []
            while len(got_a) + len(got_b) < 1_000:
                batch_a, batch_b = await asyncio.gather(a.receive(1_000, 0.2), b.receive(1_000, 0.2))
                assert batch_a or batch_b, "messages stopped arriving"
                a.ack([m.packet_id for m in batch_a])
                b.ack([m.packet_id for m in batch_b])
                got_a += batch_a
                got_b += batch_b
            assert {m.payload for m in got_a}.isdisjoint({m.payload for m in got_b})
            return len(got_a), len(got_b)

    count_a, count_b = asyncio.run(scenario())
    assert count_a + count_b == 1_000
    assert count_a > 200
    assert count_b > 200


def test_wrong_password_is_a_clear_refusal(stack_urls: ServiceUrls) -> None:
    bad = stack_urls.mqtt_url.replace("://fleet-server:", "://fleet-server:wrong")

    async def connect() -> None:
        async with Consumer(bad, "nobody", "x/+", clean_start=True):
            pass

    with pytest.raises(
        MqttError,
        match=r"refused the connection: reason code 0x8[67] \((bad user name or password|not authorized)\)",
    ):
        asyncio.run(connect())


def test_lagging_consumer_loses_nothing_beyond_the_brokers_default_queue_limit(
    stack_urls: ServiceUrls, broker_cleanup: BrokerCleanup
) -> None:
    """Mosquitto's default queues 1,000 messages per client and drops the rest; the stack's keeps all."""
    prefix = f"consumer-test/{uuid.uuid4().hex[:8]}"
    client_id = broker_cleanup.client_id(stack_urls.mqtt_url, "consumer")
    count = 20_000

    async def scenario() -> set[bytes]:
        async with Consumer(stack_urls.mqtt_url, client_id, f"{prefix}/+", clean_start=True):
            pass  # the session exists; the consumer is now away (as far behind as it gets)
        await asyncio.to_thread(publish_all, stack_urls.mqtt_url, _messages(prefix, count))
        async with Consumer(stack_urls.mqtt_url, client_id, f"{prefix}/+", session_expiry_s=0) as consumer:
            taken = await _take(consumer, count)
            consumer.ack([m.packet_id for m in taken])
            return {m.payload for m in taken}

    assert len(asyncio.run(scenario())) == count


def test_forgotten_ingest_session_no_longer_queues_messages(
    stack_urls: ServiceUrls, broker_cleanup: BrokerCleanup
) -> None:
    group = f"g{uuid.uuid4().hex[:8]}"
    client_id = f"{group}-1"
    broker_cleanup.session(stack_urls.mqtt_url, client_id)
    operator = f"op{uuid.uuid4().hex[:6]}"

    async def scenario() -> tuple[bool, list[Message]]:
        await open_session(stack_urls.mqtt_url, client_id, group)
        await forget_session(stack_urls.mqtt_url, client_id, group)
        await asyncio.to_thread(
            publish_all, stack_urls.mqtt_url, [(frames_topic(operator, "unit-1"), b"x")] * 50
        )
        async with Consumer(
            stack_urls.mqtt_url, client_id, frames_subscription(group), session_expiry_s=0
        ) as c:
            return c.session_present, await c.receive(100, 0.5)

    present, queued = asyncio.run(scenario())
    assert not present
    assert queued == []


def test_retained_message_on_a_frames_topic_is_not_delivered_at_subscribe(stack_urls: ServiceUrls) -> None:
    """Retain handling 2. Mosquitto >= 2.0.13 also withholds retained messages from ``$share``
    subscriptions, so a plain one shows the option itself (other brokers, other subscriptions)."""
    operator = f"op{uuid.uuid4().hex[:6]}"
    topic = frames_topic(operator, "unit-1")

    def publish_retained(payload: bytes) -> None:
        client = connect_client(stack_urls.mqtt_url)
        try:
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(timeout=10)
        finally:
            client.loop_stop()
            client.disconnect()

    async def scenario() -> tuple[list[Message], list[Message]]:
        await asyncio.to_thread(publish_retained, b"retained")
        try:
            async with Consumer(
                stack_urls.mqtt_url,
                f"consumer-{uuid.uuid4().hex[:8]}",
                topic,
                clean_start=True,
                session_expiry_s=0,
            ) as consumer:
                at_subscribe = await consumer.receive(10, 1.0)
                await asyncio.to_thread(publish_all, stack_urls.mqtt_url, [(topic, b"live")])
                after = await _take(consumer, 1)
                consumer.ack([m.packet_id for m in at_subscribe + after])
                return at_subscribe, after
        finally:
            await asyncio.to_thread(publish_retained, b"")  # an empty retained message clears it

    at_subscribe, after = asyncio.run(scenario())
    assert at_subscribe == []
    assert [m.payload for m in after] == [b"live"]


def test_inbox_stops_reading_past_its_byte_bound_and_everything_arrives(
    stack_urls: ServiceUrls, broker_cleanup: BrokerCleanup
) -> None:
    """The broker keeps what the inbox has no room for; taking from the inbox lets the rest in."""
    prefix = f"consumer-test/{uuid.uuid4().hex[:8]}"
    client_id = broker_cleanup.client_id(stack_urls.mqtt_url, "consumer")
    bound = 1 << 20
    messages = [(f"{prefix}/{i % 3}", bytes([i]) * 100_000) for i in range(60)]  # 6 MB
    total = sum(len(payload) for _, payload in messages)

    async def held_before_receive(consumer: Consumer) -> int:
        """What the consumer holds once it has stopped reading (or has everything)."""
        held = -1
        while consumer.waiting_bytes != held and consumer.waiting_bytes < total:
            held = consumer.waiting_bytes
            await asyncio.sleep(0.3)
        return consumer.waiting_bytes

    async def scenario() -> tuple[int, set[bytes]]:
        async with Consumer(stack_urls.mqtt_url, client_id, f"{prefix}/+", clean_start=True):
            pass  # the session exists; the broker queues for it from now
        await asyncio.to_thread(publish_all, stack_urls.mqtt_url, messages)
        async with Consumer(
            stack_urls.mqtt_url, client_id, f"{prefix}/+", session_expiry_s=0, inbox_max_bytes=bound
        ) as consumer:
            await consumer.wait(5.0)
            held = await held_before_receive(consumer)
            taken = await _take(consumer, len(messages))
            consumer.ack([m.packet_id for m in taken])
            return held, {m.payload for m in taken}

    held, payloads = asyncio.run(scenario())
    assert bound < held <= bound + READ_BYTES + MAX_PACKET_BYTES
    assert payloads == {payload for _, payload in messages}


def test_a_session_opened_before_ingest_ran_keeps_its_queue_across_a_broker_restart(
    broker: PrivateBroker,
) -> None:
    group, client_id = f"g{uuid.uuid4().hex[:8]}", f"ingest-{uuid.uuid4().hex[:8]}"
    messages = [(frames_topic("op-restart", "unit-1"), f"queued {n}".encode()) for n in range(200)]

    async def scenario() -> list[Message]:
        await open_session(broker.url, client_id, group)
        publish_all(broker.url, messages)
        broker.stop()  # SIGTERM: Mosquitto writes its persistence
        broker.start()
        async with Consumer(broker.url, client_id, frames_subscription(group)) as consumer:
            received = await _take(consumer, len(messages))
            consumer.ack([m.packet_id for m in received])
            await consumer.flush()
        await forget_session(broker.url, client_id, group)
        return received

    assert sorted(m.payload for m in asyncio.run(scenario())) == sorted(p for _, p in messages)
