"""Agents configured for tests, and a receiver that verifies what they publish through a real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

import msgspec
import tomli_w

from fleet_agent.config import AgentConfig, SourceConfig
from fleet_agent.outbox import OutboxLimits
from fleet_agent.publisher import BrokerConfig
from fleet_devtools import stack
from fleet_ingest.mqtt_consumer import Consumer, MqttError
from fleet_schemas import DeviceKey, Frame, frames_subscription, open_envelope, parse_topic
from fleet_schemas.keyfile import write_key_file
from fleet_store import dynsec
from fleet_testing.broker import PrivateBroker


def agent_config(
    directory: Path,
    broker_url: str,
    *,
    operator: str,
    device: str | None = None,
    speedup: float = 20.0,
    seed: int = 1,
    durability: str = "normal",
) -> tuple[AgentConfig, DeviceKey]:
    """A simulated agent whose key file, outbox and health file live under ``directory``."""
    device = device or f"unit-{uuid.uuid4().hex[:8]}"
    key = DeviceKey(f"{device}-k1", device, os.urandom(32))
    write_key_file(directory / "key.toml", key)
    config = AgentConfig(
        operator=operator,
        device=device,
        bus=f"BUS-{device[-4:]}",
        key_file=str(directory / "key.toml"),
        data_dir=str(directory / "data"),
        health_file=str(directory / "health.json"),
        broker=BrokerConfig(url=broker_url, backoff_initial_s=0.2, backoff_max_s=1.0),
        source=SourceConfig(kind="sim", seed=seed, speedup=speedup, start_ago_s=6 * 3600),
        outbox=OutboxLimits(durability=durability),  # type: ignore[arg-type]
    )
    return config, key


def config_toml(config: AgentConfig) -> bytes:
    """agent.toml for ``config`` (TOML has no null: unset options are left out)."""

    def without_none(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: without_none(v) for k, v in value.items() if v is not None}
        return value

    return tomli_w.dumps(without_none(msgspec.to_builtins(config))).encode()


def add_login(broker: PrivateBroker, username: str, password: str, may_publish: list[str]) -> str:
    """Give a private broker one more login that may publish only to ``may_publish``; restart it.

    The password goes into the broker's password file, the rights into its
    dynamic-security file as a role of the login's own (the plugin reads that
    file at start). Returns the login's URL.
    """
    subprocess.run(
        ["mosquitto_passwd", "-b", str(broker.directory / "passwords"), username, password],
        check=True,
        capture_output=True,
    )
    path = broker.directory / dynsec.CONFIG_FILE
    config = msgspec.json.decode(path.read_bytes(), type=dynsec.Config)
    role = dynsec.Role(f"test:{username}", [dynsec.Acl("publishClientSend", topic) for topic in may_publish])
    client = dynsec.Client(username, [dynsec.RoleRef(role.rolename)])
    updated = msgspec.structs.replace(config, clients=[*config.clients, client], roles=[*config.roles, role])
    path.write_text(dynsec.render(updated))
    stack.chown_to_service_user(broker.directory)
    broker.stop()
    broker.start()
    return f"mqtt://{username}:{password}@127.0.0.1:{broker.port}"


class MakeReceiver(Protocol):
    """The ``receivers`` fixture: a receiver for ``operator`` on a broker."""

    def __call__(self, broker_url: str, operator: str, keys: dict[str, DeviceKey]) -> Receiver: ...


class Receiver:
    """Collects every batch on the fleet topics of one operator, acking after it kept it.

    It uses a persistent session under a fixed client id, so it misses nothing
    across broker restarts or its own reconnects. Batches are verified when
    looked at, with the keys known by then (``keys`` may be filled later).
    Take one from the ``receivers`` fixture: it deletes the session, and what
    the operator's agents retained, when the test ends.
    """

    def __init__(self, broker_url: str, operator: str, keys: dict[str, DeviceKey], client_id: str) -> None:
        self.broker_url = broker_url
        self.subscription = frames_subscription().replace("+/+", f"{operator}/+")
        self.keys = keys
        self.client_id = client_id
        self._raw: list[tuple[str, bytes]] = []
        self._frames: dict[str, list[Frame]] = defaultdict(list)
        self.batches = 0
        self.largest = 0
        """the largest payload received, in bytes"""
        self.errors: list[str] = []
        self.last_broker_error: str | None = None
        """why the last connection to the broker failed or ended, if one did"""

    @property
    def frames(self) -> dict[str, list[Frame]]:
        """Every verified frame by device, in arrival order."""
        pending, self._raw = self._raw, []
        for topic, payload in pending:
            try:
                batch = open_envelope(payload, self.keys.get, parse_topic(topic).device)
            except Exception as exc:  # a test records every failure, whatever it is
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            self._frames[batch.device].extend(batch.frames)
            self.batches += 1
        return self._frames

    def seqs(self, device: str) -> set[int]:
        return {f.seq for f in self.frames[device]}

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until ``stop``, connecting again whenever the broker goes away."""
        while not stop.is_set():
            try:
                async with Consumer(self.broker_url, self.client_id, self.subscription) as consumer:
                    while not stop.is_set():
                        messages = await consumer.receive(1_000, 0.2)
                        self._raw.extend((m.topic, m.payload) for m in messages)
                        self.largest = max([self.largest, *(len(m.payload) for m in messages)])
                        consumer.ack([m.packet_id for m in messages])
            except (MqttError, OSError) as exc:  # tests stop and restart brokers on purpose: kept, not raised
                self.last_broker_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)

    async def wait_for(self, device: str, wanted: set[int], timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not wanted <= self.seqs(device):
            if asyncio.get_running_loop().time() > deadline:
                missing = sorted(wanted - self.seqs(device))
                raise AssertionError(
                    f"{len(missing)} frames never arrived, first {missing[:10]};"
                    f" last broker error: {self.last_broker_error}"
                )
            await asyncio.sleep(0.1)
