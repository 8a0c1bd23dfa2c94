"""``fleet broker-exporter``: Mosquitto's ``$SYS`` totals and the agents' retained status, for Prometheus.

Written here rather than taken from mosquitto-exporter (a Go program, not a
Debian package) because it must also read fleet's own retained status
(``fleet/v1/{operator}/{device}/status``: state, outbox backlog, outbox
full), which no generic exporter knows. One MQTT subscriber fills a
snapshot; a Prometheus collector reads it at each scrape. Labels are the
operator and the state only, never a device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec
import paho.mqtt.client as mqtt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet_schemas.status import DeviceStatus, decode_status
from fleet_store.mqtt import connect_client

log = logging.getLogger("fleet.broker_exporter")

STATUS_FILTER = "fleet/v1/+/+/status"
SYS_FILTER = "$SYS/broker/#"
SYS_STALE_S = 60.0
"""``fleet_broker_up`` is 0 when no ``$SYS`` pass came for this long (Mosquitto publishes every 10 s)"""

GAUGES = {
    "$SYS/broker/clients/connected": ("fleet_broker_clients_connected", "Clients connected"),
    "$SYS/broker/clients/disconnected": (
        "fleet_broker_clients_disconnected",
        "Clients disconnected that keep a persistent session",
    ),
    "$SYS/broker/store/messages/count": (
        "fleet_broker_stored_messages",
        "Messages the broker holds (retained and queued for sessions)",
    ),
    "$SYS/broker/store/messages/bytes": ("fleet_broker_stored_bytes", "Payload bytes of the messages held"),
    "$SYS/broker/heap/current": ("fleet_broker_heap_bytes", "Broker heap in use"),
    "$SYS/broker/uptime": ("fleet_broker_uptime_seconds", "Seconds since the broker started"),
}
COUNTERS = {
    "$SYS/broker/publish/messages/received": (
        "fleet_broker_publish_received",
        "PUBLISH packets received from clients",
    ),
    "$SYS/broker/publish/messages/sent": ("fleet_broker_publish_sent", "PUBLISH packets sent to clients"),
    "$SYS/broker/publish/messages/dropped": (
        "fleet_broker_publish_dropped",
        "PUBLISH packets dropped (queue limits, offline clients)",
    ),
}


def _sys_value(payload: bytes) -> float | None:
    """The number in a ``$SYS`` payload (``uptime`` says ``"123 seconds"``); None if there is none."""
    text = payload.decode("ascii", "replace").split(" ", 1)[0]
    try:
        return float(text)
    except ValueError:
        return None


def _device_of(topic: str) -> tuple[str, str] | None:
    parts = topic.split("/")
    if len(parts) != 5 or parts[:2] != ["fleet", "v1"] or parts[4] != "status":
        return None
    return parts[2], parts[3]


@dataclass
class BrokerSnapshot:
    """What the subscriber saw last; read by the collector under the lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    connected: bool = False
    sys_at: float = 0.0
    sys: dict[str, float] = field(default_factory=dict)
    statuses: dict[tuple[str, str], DeviceStatus] = field(default_factory=dict)
    bad_statuses: int = 0

    def on_message(self, topic: str, payload: bytes) -> None:
        with self.lock:
            if topic.startswith("$SYS/"):
                value = _sys_value(payload)
                self.sys_at = time.monotonic()
                if value is not None and (topic in GAUGES or topic in COUNTERS):
                    self.sys[topic] = value
                return
            device = _device_of(topic)
            if device is None:
                return
            if not payload:  # the retained status was cleared: the device is gone
                self.statuses.pop(device, None)
                return
            try:
                self.statuses[device] = decode_status(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.bad_statuses += 1


class BrokerCollector(Collector):
    def __init__(self, snapshot: BrokerSnapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot
        with s.lock:
            up = s.connected and time.monotonic() - s.sys_at < SYS_STALE_S
            sys = dict(s.sys)
            statuses = list(s.statuses.items())
            bad = s.bad_statuses
        yield GaugeMetricFamily(
            "fleet_broker_up", "1 while connected to the broker and its $SYS passes arrive", value=int(up)
        )
        for topic, (name, doc) in GAUGES.items():
            if topic in sys:
                yield GaugeMetricFamily(name, doc, value=sys[topic])
        for topic, (name, doc) in COUNTERS.items():
            if topic in sys:
                yield CounterMetricFamily(name, doc, value=sys[topic])
        yield CounterMetricFamily(
            "fleet_broker_exporter_bad_statuses", "Retained statuses that did not decode", value=bad
        )
        yield from _agent_metrics(statuses)


def _agent_metrics(statuses: list[tuple[tuple[str, str], DeviceStatus]]) -> Iterator[Metric]:
    agents = GaugeMetricFamily("fleet_agents", "Units by their retained status", labels=["operator", "state"])
    backlog = GaugeMetricFamily(
        "fleet_agent_outbox_backlog_frames", "Frames waiting in online units' outboxes", labels=["operator"]
    )
    largest = GaugeMetricFamily(
        "fleet_agent_outbox_backlog_max_frames",
        "Largest outbox backlog of one online unit",
        labels=["operator"],
    )
    full = GaugeMetricFamily(
        "fleet_agents_outbox_full", "Online units whose outbox is full", labels=["operator"]
    )
    counts: dict[tuple[str, str], int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    filled: dict[str, int] = defaultdict(int)
    for (operator, _device), status in statuses:
        counts[(operator, status.state)] += 1
        if status.state == "online":
            total[operator] += status.backlog or 0
            most[operator] = max(most[operator], status.backlog or 0)
            filled[operator] += int(status.outbox_full)
    for operator in sorted({op for op, _ in counts}):
        for state in ("online", "offline"):
            agents.add_metric([operator, state], counts.get((operator, state), 0))
        backlog.add_metric([operator], total[operator])
        largest.add_metric([operator], most[operator])
        full.add_metric([operator], filled[operator])
    yield from (agents, backlog, largest, full)


def follow(mqtt_url: str, snapshot: BrokerSnapshot, stop: threading.Event, retry_s: float = 5.0) -> None:
    """Keep a subscriber on the broker until ``stop``: paho reconnects, this loop covers the first connect."""
    topics = [(SYS_FILTER, 0), (STATUS_FILTER, 0)]
    while not stop.is_set():
        try:
            client = connect_client(mqtt_url)
        except OSError as exc:
            log.warning("broker unreachable; retrying", extra={"error": str(exc)})
            stop.wait(retry_s)
            continue

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            snapshot.connected = not getattr(reason, "is_failure", False)
            c.subscribe(topics)

        def on_disconnect(_c: mqtt.Client, _u: object, _f: object, _r: object, _p: object) -> None:
            snapshot.connected = False
            log.warning("broker connection lost; paho reconnects")

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = lambda _c, _u, message: snapshot.on_message(message.topic, bytes(message.payload))
        client.reconnect_delay_set(1, 30)
        client.subscribe(topics)
        snapshot.connected = True
        stop.wait()
        client.loop_stop()
        client.disconnect()


def parse_addr(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)
