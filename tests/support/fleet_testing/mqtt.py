"""Real MQTT 5 clients for tests: a subscriber that collects messages, a publisher that waits for PUBACK."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt

from fleet_store.mqtt import connect_client


@contextmanager
def subscribed(url: str, topic: str) -> Iterator[queue.Queue[mqtt.MQTTMessage]]:
    """Messages on ``topic`` (QoS 1) arrive in the yielded queue; SUBACK is awaited first."""
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    acked: queue.Queue[list[object]] = queue.Queue()
    client = connect_client(url)
    client.on_message = lambda _c, _u, message: received.put(message)
    client.on_subscribe = lambda _c, _u, _mid, codes, _p: acked.put(list(codes))
    client.subscribe(topic, qos=1)
    codes = acked.get(timeout=10)
    assert all(not code.is_failure for code in codes), f"subscribe to {topic} refused: {codes}"  # type: ignore[attr-defined]
    try:
        yield received
    finally:
        client.loop_stop()
        client.disconnect()


def publish_all(
    url: str, messages: list[tuple[str, bytes]], window: int = 5_000, *, retain: bool = False
) -> None:
    """Publish each (topic, payload) at QoS 1, in order, and wait for every PUBACK.

    At most ``window`` are outstanding: paho refuses a message whose 16-bit
    packet id is still in use, which happens past 65,535 outstanding.
    """
    client = connect_client(url)
    try:
        for start in range(0, len(messages), window):
            infos = [
                client.publish(topic, payload, qos=1, retain=retain)
                for topic, payload in messages[start : start + window]
            ]
            for info in infos:
                info.wait_for_publish(timeout=30)
                assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()
