"""Which persistent broker sessions ingest instances hold, and how much the broker has stored.

Mosquitto keeps a session for every ingest instance that ever ran (so its
share waits while it is away) but neither lists its sessions nor says what
each has queued. So each ``fleet ingest`` records its own session in
``ingest_sessions`` and refreshes it while it runs, and the broker's own
totals come from its ``$SYS`` topics (stored messages and their bytes, clients
disconnected with a session). Together they show a session nobody consumes:
an old ``last_seen``, and stored messages that keep growing.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import time
from datetime import datetime

import asyncpg
import msgspec
import paho.mqtt.client as mqtt

from fleet_store.mqtt import connect_client

SYS_TOPICS = {
    "$SYS/broker/store/messages/count": "stored_messages",
    "$SYS/broker/store/messages/bytes": "stored_bytes",
    "$SYS/broker/clients/disconnected": "disconnected_clients",
}
_UPTIME = "$SYS/broker/uptime"
_PASS_S = 0.5  # a $SYS pass publishes its totals right after uptime: this covers them


class SessionRow(msgspec.Struct, frozen=True):
    client_id: str
    share_group: str
    host: str
    session_expiry_s: int
    first_seen: datetime
    last_seen: datetime


class BrokerStore(msgspec.Struct, frozen=True):
    """The broker's totals; None where it did not say within the wait."""

    stored_messages: int | None = None
    stored_bytes: int | None = None
    disconnected_clients: int | None = None


Db = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool


async def record(db: Db, client_id: str, share_group: str, session_expiry_s: int) -> None:
    """Say this instance holds its session now (on start, and every 30 s while it runs)."""
    await db.execute(
        "INSERT INTO ingest_sessions (client_id, share_group, host, session_expiry_s) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (client_id) DO UPDATE SET share_group = excluded.share_group, host = excluded.host,"
        " session_expiry_s = excluded.session_expiry_s, last_seen = now()",
        client_id,
        share_group,
        socket.gethostname(),
        session_expiry_s,
    )


async def forget(db: Db, client_id: str) -> None:
    await db.execute("DELETE FROM ingest_sessions WHERE client_id = $1", client_id)


async def listed(db: Db) -> list[SessionRow]:
    rows = await db.fetch(
        "SELECT client_id, share_group, host, session_expiry_s, first_seen, last_seen"
        " FROM ingest_sessions ORDER BY last_seen DESC"
    )
    return [SessionRow(**dict(row)) for row in rows]


def broker_store(mqtt_url: str, wait_s: float = 3.0, *, fresh: bool = False) -> BrokerStore:
    """The broker's $SYS totals.

    They are retained, so they come at once on subscribe, but they are as old
    as the broker's last $SYS pass (every ``sys_interval``, 10 s by default).
    ``fresh`` waits up to ``wait_s`` for the next pass, which publishes
    ``uptime`` first and then each total that changed.
    """
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client = connect_client(mqtt_url)
    client.on_message = lambda _c, _u, message: received.put(message)
    try:
        client.subscribe([(topic, 0) for topic in (*SYS_TOPICS, _UPTIME)])
        values: dict[str, int] = {}
        deadline = time.monotonic() + wait_s
        passed = not fresh
        # Not fresh: done once every total came. Fresh: read on until the pass after uptime is over.
        while (fresh or len(values) < len(SYS_TOPICS)) and time.monotonic() < deadline:
            try:
                message = received.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if message.topic == _UPTIME:
                if not passed and not message.retain:
                    passed = True
                    deadline = time.monotonic() + _PASS_S
                continue
            with contextlib.suppress(KeyError, ValueError):
                values[SYS_TOPICS[message.topic]] = int(message.payload)
        if not passed:
            return BrokerStore()
        return BrokerStore(**values)
    finally:
        client.loop_stop()
        client.disconnect()


def retained_topics(mqtt_url: str, topic_filter: str = "fleet/#", wait_s: float = 10.0) -> list[str] | None:
    """The topics under ``topic_filter`` that hold a retained message; None if the broker did not answer.

    The broker sends the retained messages of a subscription before it reads
    the client's next packet, and at QoS 0 none waits for an ack, so once the
    SUBACK of a second subscription arrives every one of them has come.
    """
    retained: set[str] = set()
    acked: queue.Queue[int] = queue.Queue()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        if message.retain and mqtt.topic_matches_sub(topic_filter, message.topic):
            retained.add(message.topic)

    client = connect_client(mqtt_url)
    client.on_message = on_message
    client.on_subscribe = lambda _c, _u, mid, _codes, _p: acked.put(mid)
    try:
        client.subscribe(topic_filter, qos=0)
        _, sentinel = client.subscribe(_UPTIME, qos=0)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if acked.get(timeout=max(0.0, deadline - time.monotonic())) == sentinel:
                    return sorted(retained)
            except queue.Empty:
                return None
    finally:
        client.loop_stop()
        client.disconnect()
