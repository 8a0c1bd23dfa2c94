"""Broker accounts written from the registry, checked by a real Mosquitto: who logs in, who writes where."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleet_schemas import frames_topic, status_topic
from fleet_store import broker_accounts, devices, dynsec
from fleet_store.broker_accounts import MARKER, BrokerLogin, access_rules, mosquitto_hash, render_passwords
from fleet_store.errors import BrokerAccountsError
from fleet_store.secretbox import KeyEncryptionKey
from fleet_store.stackfile import MQTT_USER
from fleet_testing.broker import PrivateBroker

NOT_AUTHORIZED = 0x87
SEEN_WITHIN_S = 10.0


def test_hash_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "unit-1", "pässword 1"], check=True)
    written = passwords.read_text().strip().split(":", 1)[1]
    salt = base64.b64decode(written.split("$")[3])
    assert mosquitto_hash("pässword 1", salt) == written
    assert mosquitto_hash("pässword 1") != written, "a fresh salt each time"


def test_files_keep_service_accounts_and_replace_every_device_entry() -> None:
    service = "fleet-server:$7$101$c2FsdA==$aGFzaA=="
    logins = [BrokerLogin("unit-1", "sogral", "$7$101$a$b"), BrokerLogin("unit-2", "tahkout", "$7$101$c$d")]
    passwords = render_passwords(f"{service}\n", logins)
    assert passwords.splitlines() == [service, MARKER, "unit-1:$7$101$a$b", "unit-2:$7$101$c$d"]
    rules = access_rules(f"{service}\n", logins)
    assert [(c.username, c.clientid) for c in rules.clients] == [
        ("fleet-server", None),
        ("unit-1", "agent-unit-1"),
        ("unit-2", "agent-unit-2"),
    ]
    unit_2 = next(role for role in rules.roles if role.rolename == dynsec.device_role("unit-2"))
    assert unit_2.acls == [
        dynsec.Acl("publishClientSend", "fleet/v1/tahkout/unit-2/frames"),
        dynsec.Acl("publishClientSend", "fleet/v1/tahkout/unit-2/status"),
    ]
    assert not rules.default_access["subscribe"]
    assert not rules.default_access["publishClientSend"]
    # Written again from their own output with one device fewer: stable, and the device is gone.
    assert render_passwords(passwords, logins) == passwords
    assert access_rules(passwords, logins) == rules
    assert "unit-1" not in render_passwords(passwords, logins[1:])
    assert "unit-1" not in dynsec.render(access_rules(passwords, logins[1:]))


def test_plan_turns_the_broker_state_into_the_registry_state_and_then_is_empty() -> None:
    before = dynsec.desired(["fleet-server"], [("unit-1", "sogral"), ("unit-2", "sogral")])
    after = dynsec.desired(["fleet-server"], [("unit-2", "tahkout"), ("unit-3", "sogral")])
    commands = [(c["command"], c.get("username") or c.get("rolename")) for c in dynsec.plan(before, after)]
    assert commands == [
        ("deleteClient", "unit-1"),
        ("deleteClient", "unit-2"),
        ("deleteRole", "device:unit-1"),
        ("deleteRole", "device:unit-2"),
        ("createRole", "device:unit-2"),
        ("createRole", "device:unit-3"),
        ("createClient", "unit-2"),
        ("createClient", "unit-3"),
    ]
    assert dynsec.plan(after, after) == []


def test_a_device_cannot_take_the_name_of_a_service_account() -> None:
    with pytest.raises(BrokerAccountsError, match="device fleet-server has the name of a broker account"):
        render_passwords("fleet-server:$7$101$a$b\n", [BrokerLogin("fleet-server", "sogral", "$7$101$c$d")])


# ---------------------------------------------------------------- a real broker


class _Session:
    """One MQTT 5 login to a broker; its network loop runs in the caller's thread, answer by answer."""

    def __init__(
        self, port: int, username: str, password: str, client_id: str, *, clean_start: bool = True
    ) -> None:
        self._connack: ReasonCode | None = None
        self._pubacks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self.received: list[bytes] = []
        self.disconnected: ReasonCode | None = None
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, code, _p: setattr(self, "_connack", code)
        self.client.on_publish = lambda _c, _u, mid, code, _p: self._pubacks.__setitem__(mid, code)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self._subacks.__setitem__(mid, codes)
        self.client.on_message = lambda _c, _u, message: self.received.append(bytes(message.payload))
        self.client.on_disconnect = lambda _c, _u, _f, code, _p: setattr(self, "disconnected", code)
        self.client.connect(
            "127.0.0.1",
            port,
            keepalive=10,
            clean_start=clean_start,
            properties=_expiry(0 if clean_start else 600),
        )
        self.connack = self._until(lambda: self._connack)

    def _until(self, answer: Callable[[], T | None]) -> T:
        deadline = time.monotonic() + 10
        while (found := answer()) is None:
            assert time.monotonic() < deadline, "the broker did not answer"
            self.client.loop(timeout=0.05)
        return found

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """The PUBACK reason code of one QoS 1 publish."""
        mid = self.client.publish(topic, payload, qos=1).mid
        return int(self._until(lambda: self._pubacks.get(mid)).value)

    def subscribe(self, topic: str) -> int:
        """The SUBACK reason code of one QoS 1 subscription."""
        mid = self.client.subscribe(topic, qos=1)[1]
        assert mid is not None
        return int(self._until(lambda: self._subacks.get(mid))[0].value)

    def pump(self, until: Callable[[], bool]) -> None:
        """Run the network loop until ``until()`` holds (bounded)."""
        self._until(lambda: True if until() else None)

    def close(self) -> None:
        self.client.disconnect()


T = TypeVar("T")


def _expiry(seconds: int) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = seconds
    return properties


def _login(broker: PrivateBroker, username: str, password: str, client_id: str | None = None) -> _Session:
    """A login with ``client_id``, by default the one the login must use (``agent-<device>`` for a device)."""
    if client_id is None:
        client_id = (
            f"test-{uuid.uuid4().hex[:8]}" if username == MQTT_USER else dynsec.agent_client_id(username)
        )
    session = _Session(broker.port, username, password, client_id)
    if session.connack.is_failure:
        session.close()
    return session


def _until_login(broker: PrivateBroker, username: str, password: str, *, accepted: bool) -> _Session:
    """The first login whose outcome is ``accepted`` (the broker reloads its files asynchronously)."""
    deadline = time.monotonic() + SEEN_WITHIN_S
    while True:
        session = _login(broker, username, password)
        if session.connack.is_failure != accepted:
            return session
        if not session.connack.is_failure:
            session.close()
        assert time.monotonic() < deadline, f"{username}: login still {session.connack} after reload"
        time.sleep(0.05)


def _sync(database_url: str, broker: PrivateBroker) -> int | None:
    """Write the broker files from the registry and make the broker take them, as `fleet devices` does."""

    async def logins() -> list[BrokerLogin]:
        conn = await asyncpg.connect(database_url)
        try:
            return await devices.broker_logins(conn)
        finally:
            await conn.close()

    pid, _ = broker_accounts.sync(broker.directory, asyncio.run(logins()), lambda: broker.url)
    return pid


def _add_devices(database_url: str, operator: str, *names: str) -> dict[str, str]:
    """Register devices; their broker passwords."""
    kek = KeyEncryptionKey(os.urandom(32))

    async def add() -> dict[str, str]:
        conn = await asyncpg.connect(database_url)
        try:
            issued = [await devices.add_device(conn, kek, operator, name, f"BUS-{name}") for name in names]
        finally:
            await conn.close()
        return {i.device.device: i.mqtt_password for i in issued if i.mqtt_password is not None}

    return asyncio.run(add())


@pytest.mark.stack
def test_device_publishes_only_under_its_own_topics_and_revocation_locks_it_out(
    broker: PrivateBroker, database_url: str, operator_id: str
) -> None:
    kek = KeyEncryptionKey(os.urandom(32))

    async def add_two() -> devices.Issued:
        conn = await asyncpg.connect(database_url)
        try:
            await devices.add_device(conn, kek, operator_id, "unit-2", "DZ-16-0002")
            return await devices.add_device(conn, kek, operator_id, "unit-1", "DZ-16-0001")
        finally:
            await conn.close()

    before = {name: (broker.directory / name).stat() for name in ("passwords", dynsec.CONFIG_FILE)}
    mine = asyncio.run(add_two())
    assert mine.mqtt_password is not None
    assert _sync(database_url, broker) is not None, "the private broker's pid was signalled"
    for name, old in before.items():
        new = (broker.directory / name).stat()
        assert (new.st_uid, new.st_gid, new.st_mode) == (old.st_uid, old.st_gid, old.st_mode), name

    device = _until_login(broker, "unit-1", mine.mqtt_password, accepted=True)
    try:
        assert device.publish(frames_topic(operator_id, "unit-1")) < 0x80
        assert device.publish(status_topic(operator_id, "unit-1")) < 0x80
    finally:
        device.close()
    # Mosquitto 2.0 answers a refused publish with PUBACK 0x87, then drops the connection: one login each.
    for topic in (
        frames_topic(operator_id, "unit-2"),
        frames_topic("other-operator", "unit-1"),
        f"fleet/v1/{operator_id}/unit-1/other",
    ):
        device = _login(broker, "unit-1", mine.mqtt_password)
        try:
            assert device.publish(topic) == NOT_AUTHORIZED, topic
        finally:
            device.close()
    assert _login(broker, "unit-1", "wrong password").connack.is_failure
    server = _login(broker, "fleet-server", broker.password)
    assert not server.connack.is_failure, "the service account survives the rewrite"
    server.close()

    async def revoke() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await devices.revoke_device(conn, "unit-1")
        finally:
            await conn.close()

    asyncio.run(revoke())
    _sync(database_url, broker)
    refused = _until_login(broker, "unit-1", mine.mqtt_password, accepted=False)
    assert refused.connack.is_failure


# ---------------------------------------------------------------- a device may touch only its own data


@pytest.fixture
def passwords(broker: PrivateBroker, database_url: str, operator_id: str) -> dict[str, str]:
    """Devices unit-1 and unit-2 registered and given to the broker; their passwords."""
    issued = _add_devices(database_url, operator_id, "unit-1", "unit-2")
    _sync(database_url, broker)
    return issued


@pytest.mark.stack
def test_a_device_cannot_subscribe_to_the_ingest_share_and_no_frame_of_another_device_is_lost(
    broker: PrivateBroker, passwords: dict[str, str], operator_id: str
) -> None:
    share = f"$share/{uuid.uuid4().hex[:8]}/fleet/v1/+/+/frames"
    ingest = _login(broker, MQTT_USER, broker.password)
    assert ingest.subscribe(share) < 0x80
    attacker = _until_login(broker, "unit-1", passwords["unit-1"], accepted=True)
    assert attacker.subscribe(share) == NOT_AUTHORIZED
    victim = _until_login(broker, "unit-2", passwords["unit-2"], accepted=True)
    sent = [f"frame {n}".encode() for n in range(40)]
    for payload in sent:
        assert victim.publish(frames_topic(operator_id, "unit-2"), payload) == 0
    ingest.pump(lambda: len(ingest.received) >= len(sent))
    assert sorted(ingest.received) == sorted(sent), "the whole stream reached ingest, none was shared away"
    for session in (ingest, attacker, victim):
        session.close()


@pytest.mark.stack
def test_a_device_cannot_connect_with_the_client_id_of_ingest_nor_of_another_device(
    broker: PrivateBroker, passwords: dict[str, str], operator_id: str
) -> None:
    ingest = _Session(broker.port, MQTT_USER, broker.password, "ingest-host", clean_start=False)
    assert ingest.subscribe(f"fleet/v1/{operator_id}/+/frames") < 0x80
    _until_login(broker, "unit-1", passwords["unit-1"], accepted=True).close()
    for client_id in ("ingest-host", dynsec.agent_client_id("unit-2"), "anything-else"):
        assert _login(broker, "unit-1", passwords["unit-1"], client_id).connack.is_failure, client_id
    victim = _login(broker, "unit-2", passwords["unit-2"])
    assert victim.publish(frames_topic(operator_id, "unit-2"), b"after the attempts") == 0
    ingest.pump(lambda: bool(ingest.received))
    assert ingest.disconnected is None, "ingest's connection was never taken over"
    assert ingest.received == [b"after the attempts"]
    victim.close()
    ingest.close()


@pytest.mark.stack
def test_a_device_cannot_subscribe_to_any_topic(
    broker: PrivateBroker, passwords: dict[str, str], operator_id: str
) -> None:
    device = _until_login(broker, "unit-1", passwords["unit-1"], accepted=True)
    for topic in (
        frames_topic(operator_id, "unit-2"),
        status_topic(operator_id, "unit-2"),
        f"fleet/v1/{operator_id}/+/frames",
        "#",
        "$SYS/#",
        dynsec.CONTROL_TOPIC + "/#",
        frames_topic(operator_id, "unit-1"),
    ):
        assert device.subscribe(topic) == NOT_AUTHORIZED, topic
    device.close()
