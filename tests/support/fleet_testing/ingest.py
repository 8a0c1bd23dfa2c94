"""Real ``fleet ingest`` processes for scenario tests, and what they stored."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis

from fleet_ingest.assess import Assessment, Incoming
from fleet_ingest.runner import forget_session, open_session
from fleet_ingest.service import open_pool
from fleet_ingest.storage import store_messages
from fleet_schemas import DeviceKey
from fleet_schemas.live import LIVE_DECODER
from fleet_store.devices import add_device
from fleet_store.live import bus_key
from fleet_store.secretbox import KeyEncryptionKey
from fleet_store.settings import ServiceUrls


async def register_devices(
    database_url: str, kek: KeyEncryptionKey, operator: str, count: int
) -> tuple[dict[str, str], list[DeviceKey]]:
    """Register ``count`` devices; return device -> bus and their keys."""
    conn = await asyncpg.connect(database_url)
    try:
        buses, keys = {}, []
        for n in range(count):
            device, bus = f"{operator}-unit-{n:03d}", f"{operator[:12]}-BUS-{n:03d}"
            issued = await add_device(conn, kek, operator, device, bus)
            keys.append(issued.key)
            buses[device] = bus
        return buses, keys
    finally:
        await conn.close()


def fleet_env(urls: ServiceUrls, database_url: str, broker_dir: Path) -> dict[str, str]:
    """``fleet`` commands on the test database and servers, with a KEK of their own and broker
    account files written to ``broker_dir`` (never the stack's broker)."""
    broker_dir.mkdir(parents=True, exist_ok=True)
    return {
        "FLEET_MQTT_URL": urls.mqtt_url,
        "FLEET_DATABASE_URL": database_url,
        "FLEET_REDIS_URL": urls.redis_url,
        "FLEET_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "FLEET_MOSQUITTO_DIR": str(broker_dir),
    }


@dataclass
class IngestProcesses:
    """``fleet ingest`` processes of one test: their own share group, client ids and servers."""

    urls: ServiceUrls
    database_url: str
    redis_url: str
    kek_bytes: bytes = field(default_factory=lambda: os.urandom(32))
    group: str = field(default_factory=lambda: f"test{uuid.uuid4().hex[:10]}")
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)
    metrics_addr: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    """more FLEET_INGEST_* settings for the processes of this test"""
    prefix: tuple[str, ...] = ()
    """a command to run the processes under (``ip netns exec NS``)"""
    log_dir: Path | None = None
    """where long-running processes log (``ingest-<instance>.log``) instead of a pipe nobody reads"""

    @property
    def kek(self) -> KeyEncryptionKey:
        return KeyEncryptionKey(self.kek_bytes)

    def client_id(self, instance: str) -> str:
        return f"{self.group}-{instance}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "FLEET_MQTT_URL": self.urls.mqtt_url,
            "FLEET_DATABASE_URL": self.database_url,
            "FLEET_REDIS_URL": self.redis_url,
            "FLEET_KEY_ENCRYPTION_KEY": base64.b64encode(self.kek_bytes).decode(),
            "FLEET_METRICS_ADDR": self.metrics_addr,
            "FLEET_INGEST_GROUP": self.group,
            "FLEET_INGEST_CLIENT_ID": self.group,
            "FLEET_LOG_LEVEL": "WARNING",
            **self.settings,
        }

    async def open_sessions(self, *instances: str) -> None:
        """Create each process's persistent session first, so nothing published before it starts is missed."""
        for instance in instances:
            self.sessions.add(instance)
            await open_session(self.urls.mqtt_url, self.client_id(instance), self.group)

    def start(self, instance: str, *, burst_s: float | None = 3.0) -> subprocess.Popen[bytes]:
        command = [*self.prefix, sys.executable, "-m", "fleet_cli", "ingest", "--instance", instance]
        if burst_s is not None:
            command += ["--burst", str(burst_s)]
        if self.log_dir is None:
            process = subprocess.Popen(command, env=self.env(), stderr=subprocess.PIPE)
        else:
            with (self.log_dir / f"ingest-{instance}.log").open("ab") as log:
                process = subprocess.Popen(command, env=self.env(), stderr=log)
        self.sessions.add(instance)
        self.running[instance] = process
        return process

    def wait(self, instance: str, timeout: float = 300) -> str:
        """Wait for a burst-mode process to finish; return its log (warnings and up)."""
        process = self.running.pop(instance)
        _, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, err.decode()[-3000:]
        return err.decode()

    def terminate(self, instance: str) -> None:
        process = self.running.pop(instance)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, self.log(instance) if err is None else err.decode()[-3000:]

    def log(self, instance: str, tail: int = 3000) -> str:
        """The last ``tail`` characters ``instance`` logged to its file (``log_dir``)."""
        assert self.log_dir is not None
        path = self.log_dir / f"ingest-{instance}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def close(self) -> None:
        """Stop what runs; delete every broker session it made (it would queue every later frame)."""
        for process in self.running.values():
            process.kill()
            process.wait()
        self.running.clear()

        async def forget() -> None:
            for instance in sorted(self.sessions):
                await forget_session(self.urls.mqtt_url, self.client_id(instance), self.group)

        asyncio.run(forget())


@dataclass
class Stored:
    positions: list[tuple[str, int]]
    rejected: Counter[str]
    rejected_raw: set[bytes]
    live: dict[str, tuple[str, int]]


def stored(database_url: str, redis_url: str, operator: str, buses: dict[str, str]) -> Stored:
    """What the servers hold after a run."""

    async def query() -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        conn = await asyncpg.connect(database_url)
        try:
            return (
                await conn.fetch("SELECT device, seq FROM positions WHERE operator = $1", operator),
                await conn.fetch("SELECT reason, raw FROM rejected_frames"),
            )
        finally:
            await conn.close()

    positions, rejected = asyncio.run(query())
    client = redis.Redis.from_url(redis_url)
    live = {}
    for bus in buses.values():
        raw = client.hget(bus_key(operator, bus), "state")
        if raw is not None:
            position = LIVE_DECODER.decode(raw)
            live[bus] = (position.device, position.seq)
    client.close()
    return Stored(
        positions=[(r["device"], r["seq"]) for r in positions],
        rejected=Counter(r["reason"] for r in rejected),
        rejected_raw={bytes(r["raw"]) for r in rejected},
        live=live,
    )


def store_assessed(
    database_url: str, batch: list[Incoming], outcome: Assessment
) -> tuple[set[tuple[str, int]], set[tuple[str, bytes]]]:
    """Store one assessed batch in emptied tables as ingest does; the (device, seq), (reason, raw) kept."""

    async def scenario() -> tuple[set[tuple[str, int]], set[tuple[str, bytes]]]:
        pool = await open_pool(database_url)
        try:
            await pool.execute(
                "TRUNCATE positions, frame_ids, rejected_frames, rejection_fingerprints, ingest_batches"
            )
            result = await store_messages(pool, uuid.uuid4(), batch, outcome.accepted, outcome.rejected)
            assert not result.dropped, "the input let through a value PostgreSQL refuses"
            positions = {
                (r["device"], r["seq"]) for r in await pool.fetch("SELECT device, seq FROM positions")
            }
            rejected = {
                (r["reason"], bytes(r["raw"]))
                for r in await pool.fetch("SELECT reason, raw FROM rejected_frames")
            }
            return positions, rejected
        finally:
            await pool.close()

    return asyncio.run(scenario())
