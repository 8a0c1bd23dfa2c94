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

import queue
import socket
from datetime import datetime

import asyncpg
import msgspec

from fleet_store.mqtt import connect_client

SYS_TOPICS = {
    "$SYS/broker/store/messages/count": "stored_messages",
    "$SYS/broker/store/messages/bytes": "stored_bytes",
    "$SYS/broker/clients/disconnected": "disconnected_clients",
}


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


def broker_store(mqtt_url: str, wait_s: float = 3.0) -> BrokerStore:
    """The broker's $SYS totals (retained, so they come at once on subscribe)."""
    received: queue.Queue[tuple[str, bytes | bytearray]] = queue.Queue()
    client = connect_client(mqtt_url)
    client.on_message = lambda _c, _u, message: received.put((message.topic, message.payload))
    try:
        for topic in SYS_TOPICS:
            client.subscribe(topic, qos=0)
        values: dict[str, int] = {}
        while len(values) < len(SYS_TOPICS):
            try:
                topic, payload = received.get(timeout=wait_s)
            except queue.Empty:
                break
            try:
                values[SYS_TOPICS[topic]] = int(payload)
            except (KeyError, ValueError):
                continue
        return BrokerStore(**values)
    finally:
        client.loop_stop()
        client.disconnect()
