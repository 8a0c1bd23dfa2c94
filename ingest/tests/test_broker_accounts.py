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

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from fleet_ingest import broker_accounts, devices
from fleet_ingest.broker_accounts import MARKER, BrokerLogin, mosquitto_hash, render_acl, render_passwords
from fleet_ingest.errors import BrokerAccountsError
from fleet_ingest.secretbox import KeyEncryptionKey
from fleet_schemas import frames_topic, status_topic
from fleet_testing.broker import PrivateBroker

NOT_AUTHORIZED = 0x87
SEEN_WITHIN_S = 10.0

DEPLOYED_ACL = (Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl").read_text()


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
    acl = render_acl(DEPLOYED_ACL, f"{service}\n", logins)
    assert "user fleet-server\ntopic readwrite #\n" in acl
    assert "pattern" not in acl
    assert (
        "user unit-2\ntopic write fleet/v1/tahkout/unit-2/frames\ntopic write fleet/v1/tahkout/unit-2/status"
        in acl
    )
    # Written again from their own output with one device fewer: stable, and the device is gone.
    assert render_passwords(passwords, logins) == passwords
    assert render_acl(acl, passwords, logins) == acl
    assert "unit-1" not in render_passwords(passwords, logins[1:])
    assert "unit-1" not in render_acl(acl, passwords, logins[1:])


def test_a_device_cannot_take_the_name_of_a_service_account() -> None:
    with pytest.raises(BrokerAccountsError, match="device fleet-server has the name of a broker account"):
        render_passwords("fleet-server:$7$101$a$b\n", [BrokerLogin("fleet-server", "sogral", "$7$101$c$d")])


# ---------------------------------------------------------------- a real broker


class _Session:
    """One MQTT 5 login to a broker; its network loop runs in the caller's thread, answer by answer."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self._connack: ReasonCode | None = None
        self._pubacks: dict[int, ReasonCode] = {}
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, code, _p: setattr(self, "_connack", code)
        self.client.on_publish = lambda _c, _u, mid, code, _p: self._pubacks.__setitem__(mid, code)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.connack = self._until(lambda: self._connack)

    def _until(self, answer: Callable[[], ReasonCode | None]) -> ReasonCode:
        deadline = time.monotonic() + 10
        while (found := answer()) is None:
            assert time.monotonic() < deadline, "the broker did not answer"
            self.client.loop(timeout=0.05)
        return found

    def publish(self, topic: str) -> int:
        """The PUBACK reason code of one QoS 1 publish."""
        mid = self.client.publish(topic, b"{}", qos=1).mid
        return int(self._until(lambda: self._pubacks.get(mid)).value)

    def close(self) -> None:
        self.client.disconnect()


def _login(broker: PrivateBroker, username: str, password: str) -> _Session:
    session = _Session(broker.port, username, password)
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


def _sync(database_url: str, directory: Path) -> int | None:
    """Write the broker files from the registry and reload the broker, as `fleet devices` does."""

    async def logins() -> list[BrokerLogin]:
        conn = await asyncpg.connect(database_url)
        try:
            return await devices.broker_logins(conn)
        finally:
            await conn.close()

    broker_accounts.write_accounts(directory, asyncio.run(logins()))
    return broker_accounts.reload_broker(directory)


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

    before = {name: (broker.directory / name).stat() for name in ("passwords", "acl")}
    mine = asyncio.run(add_two())
    assert mine.mqtt_password is not None
    assert _sync(database_url, broker.directory) is not None, "the private broker's pid was signalled"
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
    _sync(database_url, broker.directory)
    refused = _until_login(broker, "unit-1", mine.mqtt_password, accepted=False)
    assert refused.connack.is_failure
