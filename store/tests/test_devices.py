"""The device registry and `fleet devices` against the real database: issue, rotate, revoke, seal."""

from __future__ import annotations

import base64
import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import asyncpg
import msgspec
import pytest
from click.testing import CliRunner

from fleet_agent.keys import read_key_file
from fleet_cli.cli import main
from fleet_store import device_tokens, devices, dynsec
from fleet_store.errors import (
    ConfigError,
    DeviceExistsError,
    DeviceNotFoundError,
    DeviceRevokedError,
    InvalidIdentifierError,
    KeyEncryptionError,
    KeyNotFoundError,
    RegistryError,
)
from fleet_store.secretbox import KEK_FILE, KeyEncryptionKey, Sealed, load_key_encryption_key
from fleet_store.settings import ServiceUrls, load_settings
from fleet_testing.cli import fleet_devices as _fleet
from fleet_testing.database import run_on as _on
from fleet_testing.ingest import fleet_env

T = TypeVar("T")


@pytest.fixture
def kek() -> KeyEncryptionKey:
    return KeyEncryptionKey(os.urandom(32))


# ---------------------------------------------------------------- sealing


def test_a_sealed_secret_opens_only_with_its_kek_and_key_id(kek: KeyEncryptionKey) -> None:
    sealed = kek.seal(b"s" * 32, "unit-1-k1")
    assert kek.open(sealed, "unit-1-k1") == b"s" * 32
    assert b"s" * 32 not in sealed.box
    other = KeyEncryptionKey(os.urandom(32))
    with pytest.raises(
        KeyEncryptionError, match=f"sealed under key-encryption key {kek.kek_id}.*is {other.kek_id}"
    ):
        other.open(sealed, "unit-1-k1")
    with pytest.raises(KeyEncryptionError, match="altered or moved"):
        kek.open(sealed, "unit-2-k1")
    tampered = Sealed(sealed.kek_id, sealed.box[:-1] + bytes([sealed.box[-1] ^ 1]))
    with pytest.raises(KeyEncryptionError, match="altered or moved"):
        kek.open(tampered, "unit-1-k1")
    assert repr(kek) == f"KeyEncryptionKey(kek_id={kek.kek_id!r})"


def test_local_stack_kek_is_generated_once_into_the_state_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings({"FLEET_STATE_DIR": str(tmp_path)})
    with caplog.at_level(logging.WARNING, logger="fleet_store.secretbox"):
        first = load_key_encryption_key(settings)
    assert f"generated a key-encryption key {first.kek_id}" in caplog.text
    assert stat.S_IMODE((tmp_path / KEK_FILE).stat().st_mode) == 0o600
    assert load_key_encryption_key(settings).kek_id == first.kek_id
    (tmp_path / KEK_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_key_encryption_key(settings)


def test_external_servers_without_a_kek_are_refused() -> None:
    external = {
        "FLEET_MQTT_URL": "mqtt://h:1883",
        "FLEET_DATABASE_URL": "postgresql://h/db",
        "FLEET_REDIS_URL": "redis://h",
    }
    with pytest.raises(ConfigError, match="FLEET_KEY_ENCRYPTION_KEY is not set"):
        load_key_encryption_key(load_settings(external))
    with pytest.raises(ConfigError, match="decodes to 16 bytes"):
        load_key_encryption_key(
            load_settings({**external, "FLEET_KEY_ENCRYPTION_KEY": base64.b64encode(b"x" * 16).decode()})
        )
    with pytest.raises(ConfigError, match="not base64"):
        load_key_encryption_key(load_settings({**external, "FLEET_KEY_ENCRYPTION_KEY": "not base64!"}))


# ---------------------------------------------------------------- registry


@pytest.mark.stack
def test_added_device_has_one_active_key_stored_sealed_not_in_clear(
    database_url: str, kek: KeyEncryptionKey
) -> None:
    async def work(conn: asyncpg.Connection) -> tuple[devices.Issued, asyncpg.Record]:
        issued = await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0001")
        row = await conn.fetchrow("SELECT * FROM device_keys WHERE key_id = $1", issued.key.key_id)
        assert row is not None
        return issued, row

    issued, row = _on(database_url, work)
    assert issued.key.key_id == "unit-1-k1"
    assert len(issued.key.secret) == 32
    assert issued.device.active_key == "unit-1-k1"
    assert (issued.device.operator, issued.device.bus, issued.device.status) == (
        "sogral",
        "DZ-16-0001",
        "active",
    )
    assert "secret" not in row
    assert issued.key.secret not in row["sealed_secret"]
    assert row["kek_id"] == kek.kek_id
    assert kek.open(Sealed(row["kek_id"], row["sealed_secret"]), "unit-1-k1") == issued.key.secret
    assert issued.mqtt_password is not None
    assert issued.mqtt_password not in repr(issued)


@pytest.mark.stack
def test_rotate_retires_the_old_key_with_a_grace_period_and_revoke_is_at_once(
    database_url: str, kek: KeyEncryptionKey
) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0001")
        before = datetime.now(UTC)
        rotated = await devices.rotate_key(conn, kek, "unit-1", timedelta(hours=2))
        assert rotated.key.key_id == "unit-1-k2"
        assert rotated.mqtt_password is None
        new, old = rotated.device.keys
        assert (new.key_id, new.status, old.key_id, old.status) == (
            "unit-1-k2",
            "active",
            "unit-1-k1",
            "retired",
        )
        assert old.grace_until is not None
        assert abs(old.grace_until - (before + timedelta(hours=2))) < timedelta(seconds=30)
        assert old.usable_at(datetime.now(UTC))
        assert not old.usable_at(old.grace_until)

        revoked = await devices.revoke_key(conn, "unit-1", "unit-1-k1")
        assert (revoked.status, revoked.revoked_at is not None) == ("revoked", True)
        assert not revoked.usable_at(datetime.now(UTC))
        assert (await devices.revoke_key(conn, "unit-1", "unit-1-k1")).revoked_at == revoked.revoked_at

        third = await devices.rotate_key(conn, kek, "unit-1", new_mqtt_password=True)
        assert third.key.key_id == "unit-1-k3"
        assert third.mqtt_password is not None

        record = await devices.revoke_device(conn, "unit-1")
        assert record.status == "revoked"
        assert {k.status for k in record.keys} == {"revoked"}
        assert await devices.broker_logins(conn) == []
        with pytest.raises(DeviceRevokedError):
            await devices.rotate_key(conn, kek, "unit-1")

    _on(database_url, work)


@pytest.mark.stack
def test_registry_refuses_reused_ids_unknown_devices_and_unsafe_ids(
    database_url: str, kek: KeyEncryptionKey
) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0001")
        await devices.add_device(conn, kek, "tahkout", "unit-2", "DZ-31-0002")
        with pytest.raises(DeviceExistsError):
            await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0009")
        with pytest.raises(InvalidIdentifierError, match="device"):
            await devices.add_device(conn, kek, "sogral", "unit/+", "DZ-16-0001")
        with pytest.raises(InvalidIdentifierError, match="bus"):
            await devices.add_device(conn, kek, "sogral", "unit-3", "bus #3")
        with pytest.raises(DeviceNotFoundError):
            await devices.show_device(conn, "nobody")
        with pytest.raises(DeviceNotFoundError):
            await devices.rotate_key(conn, kek, "nobody")
        with pytest.raises(KeyNotFoundError):
            await devices.revoke_key(conn, "unit-1", "unit-2-k1")
        assert [d.device for d in await devices.list_devices(conn)] == ["unit-1", "unit-2"]
        assert [d.device for d in await devices.list_devices(conn, "tahkout")] == ["unit-2"]
        assert [login.device for login in await devices.broker_logins(conn)] == ["unit-1", "unit-2"]

    _on(database_url, work)


@pytest.mark.stack
def test_a_phone_gets_a_token_kept_as_argon2id_and_no_broker_login(
    database_url: str, kek: KeyEncryptionKey
) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        await devices.add_device(conn, kek, "sogral", "unit-1", "DZ-16-0001")
        issued = await devices.add_device(conn, kek, "sogral", "phone-1", "DZ-16-0002", kind="phone")
        assert (issued.device.kind, issued.mqtt_password, issued.device.active_key) == (
            "phone",
            None,
            "phone-1-k1",
        )
        assert issued.token is not None
        assert issued.token not in repr(issued)
        credential = device_tokens.parse_credential(issued.token)
        assert credential is not None
        assert credential.device == "phone-1"
        holder = await device_tokens.token_holder(conn, "phone-1")
        assert holder is not None
        assert (holder.token_id, holder.operator, holder.bus) == ("phone-1-t1", "sogral", "DZ-16-0002")
        assert holder.token_hash.startswith("$argon2id$")
        assert credential.secret not in holder.token_hash
        assert device_tokens.secret_matches(holder.token_hash, credential.secret)
        assert not device_tokens.secret_matches(holder.token_hash, credential.secret + "x")
        assert [login.device for login in await devices.broker_logins(conn)] == ["unit-1"]
        with pytest.raises(RegistryError, match="no broker login"):
            await devices.rotate_key(conn, kek, "phone-1", new_mqtt_password=True)
        with pytest.raises(RegistryError, match="not a phone"):
            await devices.rotate_token(conn, "unit-1")

        rotated = await devices.rotate_token(conn, "phone-1")
        assert [(t.token_id, t.status) for t in rotated.device.tokens] == [
            ("phone-1-t2", "active"),
            ("phone-1-t1", "revoked"),
        ]
        holder = await device_tokens.token_holder(conn, "phone-1")
        assert holder is not None
        assert holder.token_id == "phone-1-t2"
        await devices.revoke_device(conn, "phone-1")
        assert await device_tokens.token_holder(conn, "phone-1") is None
        assert (await devices.show_device(conn, "unit-1")).kind == "onboard"

    _on(database_url, work)


@pytest.mark.parametrize(
    "text", ["", "phone-1", "phone-1:", ":secret", "unit/+:secret", "a" * 300 + ":s", "phone-1\n:secret"]
)
def test_a_credential_not_of_the_form_device_colon_secret_is_refused(text: str) -> None:
    assert device_tokens.parse_credential(text) is None


# ---------------------------------------------------------------- fleet devices


@pytest.fixture
def cli_env(stack_urls: ServiceUrls, database_url: str, tmp_path: Path) -> dict[str, str]:
    """`fleet devices` on the test database, writing broker files to a folder of the test's own."""
    return fleet_env(stack_urls, database_url, tmp_path / "broker")


def test_every_devices_command_has_help_with_an_example() -> None:
    for command in ([], ["add"], ["list"], ["show"], ["rotate-key"], ["rotate-token"], ["revoke"]):
        result = CliRunner().invoke(main, ["devices", *command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example" in result.output, command


@pytest.mark.stack
def test_fleet_devices_add_writes_the_key_file_and_broker_accounts(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    key_file = tmp_path / "agent" / "key.toml"
    code, out, err = _fleet(
        cli_env, "add", "unit-1", "--operator", "sogral", "--bus", "DZ-16-0001", "--key-file", str(key_file)
    )
    assert code == 0, err
    key = read_key_file(key_file, "unit-1")
    assert key.key_id == "unit-1-k1"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key.secret.hex() not in out
    assert "mqtt username:  unit-1" in out
    password = out.split("mqtt password:")[1].split()[0]
    broker = Path(cli_env["FLEET_MOSQUITTO_DIR"])
    assert (broker / "passwords").read_text().splitlines()[-1].startswith("unit-1:$7$101$")
    assert password not in (broker / "passwords").read_text()
    rules = msgspec.json.decode((broker / dynsec.CONFIG_FILE).read_bytes(), type=dynsec.Config)
    device = next(client for client in rules.clients if client.username == "unit-1")
    assert device.clientid == "agent-unit-1"
    assert dynsec.Acl("publishClientSend", "fleet/v1/sogral/unit-1/frames") in next(
        role.acls for role in rules.roles if role.rolename == device.roles[0].rolename
    )
    assert "no running Mosquitto found" in err


@pytest.mark.stack
def test_fleet_devices_rotate_show_list_and_revoke(cli_env: dict[str, str]) -> None:
    assert _fleet(cli_env, "add", "unit-1", "--operator", "sogral", "--bus", "DZ-16-0001")[0] == 0
    code, out, err = _fleet(cli_env, "rotate-key", "unit-1", "--grace", "2h")
    assert code == 0, err
    assert "key id:         unit-1-k2" in out
    assert len(out.split("key secret:")[1].split()[0]) == 64
    assert "mqtt password" not in out
    assert "unit-1-k1 is retired; it still verifies until" in err

    code, out, _ = _fleet(cli_env, "show", "unit-1")
    assert code == 0
    assert "unit-1-k2  " in out
    assert "signs new frames" in out
    assert "retired  created" in out
    assert "verifies until" in out

    code, out, _ = _fleet(cli_env, "revoke", "unit-1", "--key", "unit-1-k2")
    assert code == 0
    assert "key unit-1-k2 of unit-1 revoked" in out
    code, out, _ = _fleet(cli_env, "list", "--operator", "sogral")
    assert code == 0
    assert out.splitlines()[1].split() == ["unit-1", "onboard", "sogral", "DZ-16-0001", "active", "-"]

    code, out, err = _fleet(cli_env, "revoke", "unit-1")
    assert code == 0, err
    assert "device unit-1 revoked, and its keys (2)" in out
    assert "unit-1:" not in (Path(cli_env["FLEET_MOSQUITTO_DIR"]) / "passwords").read_text()


@pytest.mark.stack
def test_fleet_devices_add_phone_shows_its_token_once_and_writes_no_broker_login(
    cli_env: dict[str, str],
) -> None:
    code, out, err = _fleet(
        cli_env, "add", "phone-1", "--operator", "sogral", "--bus", "DZ-16-0001", "--kind", "phone"
    )
    assert code == 0, err
    assert "mqtt password" not in out
    token = out.split("device token:")[1].split()[0]
    assert token.startswith("phone-1:")
    assert "phone-1:" not in (Path(cli_env["FLEET_MOSQUITTO_DIR"]) / "passwords").read_text()
    code, out, _ = _fleet(cli_env, "list")
    assert out.splitlines()[1].split()[:2] == ["phone-1", "phone"]
    code, out, _ = _fleet(cli_env, "show", "phone-1")
    assert "kind:      phone" in out
    assert "phone-1-t1" in out
    assert token not in out
    code, out, err = _fleet(cli_env, "rotate-token", "phone-1")
    assert code == 0, err
    assert out.split("device token:")[1].split()[0] not in (token, "")


@pytest.mark.stack
def test_fleet_devices_errors_are_one_line_with_a_code(cli_env: dict[str, str]) -> None:
    code, _, err = _fleet(cli_env, "show", "nobody")
    assert (code, err.strip()) == (1, "error [device_not_found]: no device 'nobody'")
    code, _, err = _fleet(cli_env, "rotate-key", "unit-1", "--grace", "soon")
    assert code == 2
    assert "'soon' is not a duration" in err
    code, _, err = _fleet(
        {**cli_env, "FLEET_KEY_ENCRYPTION_KEY": ""}, "add", "u", "--operator", "o", "--bus", "b"
    )
    assert code == 1
    assert err.startswith("error [config_error]: FLEET_KEY_ENCRYPTION_KEY is not set")
