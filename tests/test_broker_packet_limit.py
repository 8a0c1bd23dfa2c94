"""The broker refuses a PUBLISH bigger than ingest accepts, instead of acknowledging and dropping it."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from fleet_schemas import MAX_MESSAGE_BYTES, MAX_PACKET_BYTES, frames_topic
from fleet_testing.broker import PrivateBroker

WAIT_S = 10.0
PACKET_TOO_LARGE = 0x95


class _Publisher:
    def __init__(self, broker: PrivateBroker) -> None:
        self.connected = threading.Event()
        self.acked = threading.Event()
        self.gone = threading.Event()
        self.disconnect_code: ReasonCode | None = None
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set("fleet-server", broker.password)
        self.client.on_connect = lambda *_: self.connected.set()
        self.client.on_publish = lambda *_: self.acked.set()
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.connected.wait(WAIT_S)

    def _on_disconnect(self, _c: object, _u: object, _f: object, code: ReasonCode, _p: object) -> None:
        self.disconnect_code = code
        self.gone.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.stack
def test_publish_over_the_packet_limit_is_refused_and_one_under_it_is_delivered(
    broker: PrivateBroker, operator_id: str
) -> None:
    topic = frames_topic(operator_id, "unit-1")
    received: list[int] = []
    arrived = threading.Event()
    reader = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    reader.username_pw_set("fleet-server", broker.password)
    subscribed = threading.Event()
    reader.on_subscribe = lambda *_: subscribed.set()

    def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        received.append(len(message.payload))
        arrived.set()

    reader.on_message = on_message
    reader.connect("127.0.0.1", broker.port)
    reader.loop_start()
    reader.subscribe(topic, qos=1)
    assert subscribed.wait(WAIT_S)

    publisher = _Publisher(broker)
    try:
        publisher.client.publish(topic, b"x" * MAX_MESSAGE_BYTES, qos=1)
        assert publisher.acked.wait(WAIT_S), "the largest envelope ingest accepts is acknowledged"
        assert arrived.wait(WAIT_S)
        assert received == [MAX_MESSAGE_BYTES]
        publisher.acked.clear()
        publisher.client.publish(topic, b"x" * MAX_PACKET_BYTES, qos=1)
        assert publisher.gone.wait(WAIT_S), "the broker drops a client that sends a packet over the limit"
        assert not publisher.acked.is_set(), "never acknowledged"
        assert publisher.disconnect_code is not None
        assert publisher.disconnect_code.value == PACKET_TOO_LARGE
        assert received == [MAX_MESSAGE_BYTES], "nothing over the limit was delivered"
    finally:
        publisher.close()
        reader.disconnect()
        reader.loop_stop()
