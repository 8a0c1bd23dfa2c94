"""OwnTracks apps through a real Mosquitto (dynamic security) to a real ``fleet ingest`` and PostgreSQL.

The phone's messages are what the Android app publishes (booklet, tech/json):
retained QoS 1 JSON on ``owntracks/<user>/<device>``, plain or encrypted,
over MQTT 3.1.1 with the login and client id ``fleet devices add --kind
owntracks`` gave it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fleet_devtools.owntracks_app import location
from fleet_processing.owntracks import encrypt, secretbox_key
from fleet_schemas import frames_topic
from fleet_schemas.owntracks import owntracks_topic
from fleet_store import broker_accounts, devices, dynsec
from fleet_store.owntracks import OwnTracksIssued, add_owntracks
from fleet_store.secretbox import KeyEncryptionKey
from fleet_store.settings import ServiceUrls
from fleet_testing.broker import PrivateBroker
from fleet_testing.ingest import IngestProcesses
from fleet_testing.mqtt import publish_all

pytestmark = pytest.mark.stack

NOT_AUTHORIZED = 0x87
SECRET = "sahara-night-bus-to-tamanrasset"


class Phone:
    """The app's MQTT connection: MQTT 3.1.1, its login and client id; PUBACK reason codes kept."""

    def __init__(
        self, port: int, user: str, password: str, client_id: str, protocol: MQTTProtocolVersion
    ) -> None:
        self._acked: dict[int, int] = {}
        self._granted: dict[int, int] = {}
        self.received: list[tuple[str, bytes]] = []
        self.connected: int | None = None
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        self.client.username_pw_set(user, password)
        self.client.on_connect = lambda _c, _u, _f, code, _p: setattr(self, "connected", code.value)
        self.client.on_publish = lambda _c, _u, mid, code, _p: self._acked.__setitem__(mid, code.value)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self._granted.__setitem__(
            mid, codes[0].value
        )
        self.client.on_message = lambda _c, _u, message: self.received.append(
            (message.topic, bytes(message.payload))
        )
        self.client.connect("127.0.0.1", port, keepalive=10)
        self._until(lambda: self.connected)

    def _until(self, answer: Any) -> Any:
        deadline = time.monotonic() + 10
        while (found := answer()) is None:
            assert time.monotonic() < deadline, "the broker did not answer"
            self.client.loop(timeout=0.05)
        return found

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS 1 and retained, as the app publishes; the PUBACK's reason code."""
        mid = self.client.publish(topic, payload, qos=1, retain=True).mid
        return int(self._until(lambda: self._acked.get(mid)))

    def subscribe(self, topic_filter: str) -> int:
        """The SUBACK's reason code for one QoS 1 subscription."""
        mid = self.client.subscribe(topic_filter, qos=1)[1]
        assert mid is not None
        return int(self._until(lambda: self._granted.get(mid)))

    def pump(self, seconds: float) -> None:
        """Run the network loop for ``seconds``: what arrives meanwhile is in ``received``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.client.loop(timeout=0.05)

    def close(self) -> None:
        self.client.disconnect()


class Apps:
    """Two OwnTracks apps registered and given to the private broker."""

    def __init__(
        self, broker: PrivateBroker, database_url: str, operator: str, kek: KeyEncryptionKey
    ) -> None:
        self.broker = broker
        self.operator = operator

        async def register() -> tuple[OwnTracksIssued, OwnTracksIssued, list[broker_accounts.BrokerLogin]]:
            conn = await asyncpg.connect(database_url)
            try:
                sealed = await add_owntracks(
                    conn, kek, operator, f"{operator}-ot-a", "DZ-16-0101", f"{operator}-driver-a", SECRET
                )
                plain = await add_owntracks(conn, kek, operator, f"{operator}-ot-b", "DZ-16-0102")
                return sealed, plain, await devices.broker_logins(conn)
            finally:
                await conn.close()

        self.sealed, self.plain, logins = asyncio.run(register())
        broker_accounts.sync(broker.directory, logins, lambda: broker.url)

    def topic(self, app: OwnTracksIssued) -> str:
        return owntracks_topic(app.user, app.issued.device.device)

    def login(
        self, app: OwnTracksIssued, client_id: str | None = None, protocol: MQTTProtocolVersion = mqtt.MQTTv5
    ) -> Phone:
        """The app's login with its own client id (retried: the broker takes new accounts a moment
        after its reload), or once with another client id."""
        password = app.issued.mqtt_password
        assert password is not None
        if client_id is not None:
            return Phone(self.broker.port, app.user, password, client_id, protocol)
        deadline = time.monotonic() + 10
        while True:
            phone = Phone(
                self.broker.port,
                app.user,
                password,
                dynsec.owntracks_client_id(app.issued.device.device),
                protocol,
            )
            if phone.connected == 0 or time.monotonic() > deadline:
                return phone
            phone.close()
            time.sleep(0.05)


@pytest.fixture
def ingest_on(broker: PrivateBroker, database_url: str, redis_url: str) -> Iterator[IngestProcesses]:
    """``fleet ingest`` processes of the test's own on the private broker."""
    processes = IngestProcesses(ServiceUrls(broker.url, database_url, redis_url), database_url, redis_url)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture
def apps(broker: PrivateBroker, ingest_on: IngestProcesses, operator_id: str) -> Apps:
    return Apps(broker, ingest_on.database_url, operator_id, ingest_on.kek)


async def _rows(database_url: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    conn = await asyncpg.connect(database_url)
    try:
        return (
            await conn.fetch(
                "SELECT device, bus, operator, seq, time, lat, lon, speed_mps, heading_deg, accuracy_m,"
                " altitude_m, source, key_id, battery_pct, charging FROM positions ORDER BY device, seq"
            ),
            await conn.fetch("SELECT topic, reason, device FROM rejected_frames ORDER BY reason, topic"),
        )
    finally:
        await conn.close()


def test_plain_and_encrypted_locations_are_stored_once_in_si_units_and_bad_ones_rejected(
    apps: Apps, ingest_on: IngestProcesses, broker: PrivateBroker
) -> None:
    tst = int(time.time()) - 120
    sealed_topic, plain_topic = apps.topic(apps.sealed), apps.topic(apps.plain)
    key = secretbox_key(SECRET)
    asyncio.run(ingest_on.open_sessions("1"))
    a = apps.login(apps.sealed, protocol=mqtt.MQTTv311)
    b = apps.login(apps.plain, protocol=mqtt.MQTTv311)
    try:
        assert (a.connected, b.connected) == (0, 0)
        for phone, topic, payload in [
            (b, plain_topic, location(tst)),
            (b, plain_topic, location(tst)),  # the app's resend from its queue
            (b, plain_topic, location(tst, created_at=tst + 90, batt=70)),  # a new message, the same fix
            (a, sealed_topic, encrypt(location(tst + 10), key)),
            (a, sealed_topic, encrypt(location(tst + 20, vel=-1, cog=-1), key)),
            (a, sealed_topic, encrypt(location(tst + 30), secretbox_key("a wrong secret"))),
            (a, sealed_topic, b'{"_type":"encrypted","data":"bm90IGEgc2VjcmV0Ym94"}'),
            (b, plain_topic, encrypt(location(tst + 40), key)),  # b has no secret configured
            (b, plain_topic, b'{"_type":"location","lat":36.7,'),
            (b, plain_topic, json.dumps({"_type": "lwt", "tst": tst}).encode()),
            (a, sealed_topic, encrypt(json.dumps({"_type": "status", "android": {}}).encode(), key)),
        ]:
            assert phone.publish(topic, payload) == 0
    finally:
        a.close()
        b.close()
    # A login the registry no longer knows (or a topic under another user) is no device of ingest's.
    publish_all(
        broker.url,
        [
            (owntracks_topic("nobody", f"{apps.operator}-ghost"), location(tst)),
            (owntracks_topic("someone-else", apps.plain.issued.device.device), location(tst + 50)),
        ],
    )
    ingest_on.start("1")
    ingest_on.wait("1")

    positions, rejected = asyncio.run(_rows(ingest_on.database_url))
    device_a, device_b = apps.sealed.issued.device.device, apps.plain.issued.device.device
    assert [(r["device"], r["seq"]) for r in positions] == [
        (device_a, (tst + 10) * 1000),
        (device_a, (tst + 20) * 1000),
        (device_b, tst * 1000),
    ]
    first = positions[0]
    assert first["bus"] == "DZ-16-0101"
    assert first["operator"] == apps.operator
    assert first["time"].timestamp() == tst + 10
    assert first["speed_mps"] == pytest.approx(30 / 3.6)
    assert (first["heading_deg"], first["accuracy_m"], first["altitude_m"]) == (270.0, 9.0, 52.0)
    assert (first["source"], first["key_id"]) == ("phone", f"owntracks:{apps.sealed.user}")
    assert (first["battery_pct"], first["charging"]) == (77.0, False)  # batt 77, bs 1: unplugged
    assert (positions[1]["speed_mps"], positions[1]["heading_deg"]) == (None, None)
    assert positions[2]["lat"] == 36.7525
    assert [(r["reason"], r["device"]) for r in rejected] == [
        ("bad_ciphertext", device_a),
        ("bad_ciphertext", device_a),
        ("device_unknown", f"{apps.operator}-ghost"),
        ("device_unknown", device_b),
        ("encryption_key_missing", device_b),
        ("undecodable", device_b),
    ]


def test_an_apps_login_publishes_only_its_own_location_topic(apps: Apps) -> None:
    own = apps.topic(apps.plain)
    forbidden = [
        apps.topic(apps.sealed),  # another app's topic
        owntracks_topic(apps.plain.user, apps.sealed.issued.device.device),
        f"{own}/event",
        frames_topic(apps.operator, apps.plain.issued.device.device),
        "fleet/v1/anything",
        "$CONTROL/dynamic-security/v1",
    ]
    phone = apps.login(apps.plain)
    try:
        assert phone.connected == 0
        assert phone.publish(own, location(int(time.time()))) < 0x80  # 0x10: nobody subscribes here
    finally:
        phone.close()
    # Mosquitto 2.0 answers a refused publish with PUBACK 0x87 and drops the connection: a login each.
    for topic in forbidden:
        phone = apps.login(apps.plain)
        try:
            assert phone.publish(topic, location(int(time.time()))) == NOT_AUTHORIZED, topic
        finally:
            phone.close()
    for client_id in ("ingest-host", dynsec.agent_client_id(apps.plain.issued.device.device), "otherapp"):
        refused = apps.login(apps.plain, client_id)
        refused.close()
        assert refused.connected != 0, client_id


def test_an_app_may_subscribe_as_it_does_but_hears_only_its_own_commands(
    apps: Apps, broker: PrivateBroker
) -> None:
    phone = apps.login(apps.plain, protocol=mqtt.MQTTv311)
    other = apps.login(apps.sealed)
    try:
        own_commands = f"{apps.topic(apps.plain)}/cmd"
        for granted in ("owntracks/+/+", "owntracks/+/+/event", "owntracks/+/+/info", own_commands):
            assert phone.subscribe(granted) < 0x80, granted
        assert other.publish(apps.topic(apps.sealed), location(int(time.time()))) < 0x80
        publish_all(broker.url, [(own_commands, b'{"_type":"cmd","action":"reportLocation"}')])
        phone.pump(1.0)
        assert phone.received == [(own_commands, b'{"_type":"cmd","action":"reportLocation"}')]
    finally:
        phone.close()
        other.close()
    for refused in (f"$share/{uuid.uuid4().hex[:8]}/owntracks/+/+", "fleet/v1/#", "#", "$SYS/#"):
        phone = apps.login(apps.plain)
        try:
            assert phone.subscribe(refused) == NOT_AUTHORIZED, refused
        finally:
            phone.close()
