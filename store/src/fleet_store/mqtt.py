"""Connecting paho-mqtt 2 clients (MQTT 5) to the broker named by a URL.

paho-mqtt, not aiomqtt: aiomqtt 2.5 acks a message when it is queued, before
the application has stored it, while paho 2 has ``manual_ack`` for
ack-after-commit (see ../shared/GUIDE.md).
"""

from __future__ import annotations

import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet_schemas.broker import BrokerUrl


def connect_client(url: str, client_id: str | None = None, *, manual_ack: bool = False) -> mqtt.Client:
    """A connected MQTT 5 client with its network loop running in a thread."""
    broker = BrokerUrl.parse(url)
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or f"fleet-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set()
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    return client
