"""OwnTracks apps in the registry and `fleet devices add --kind owntracks`, against the real database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import msgspec
import pytest

from fleet_store import dynsec
from fleet_store.settings import ServiceUrls
from fleet_testing.cli import fleet_devices as _fleet
from fleet_testing.ingest import fleet_env

pytestmark = pytest.mark.stack


@pytest.fixture
def cli_env(stack_urls: ServiceUrls, database_url: str, tmp_path: Path) -> dict[str, str]:
    """`fleet devices` on the test database, writing broker files to a folder of the test's own."""
    return fleet_env(stack_urls, database_url, tmp_path / "broker")


def _setting(out: str, name: str) -> str:
    return out.split(f"{name}:")[1].split()[0]


def test_add_owntracks_shows_the_app_settings_once_and_writes_its_login_and_acl(
    cli_env: dict[str, str], database_url: str
) -> None:
    add = ("add", "ot-1", "--operator", "sogral", "--bus", "DZ-16-0001", "--kind", "owntracks")
    code, out, err = _fleet(cli_env, *add, "--owntracks-user", "driver-1", "--new-encryption-key")
    assert code == 0, err
    assert (_setting(out, "mode"), _setting(out, "client id")) == ("MQTT", "owntracks-ot-1")
    assert (_setting(out, "username"), _setting(out, "device id")) == ("driver-1", "ot-1")
    password, secret = _setting(out, "password"), _setting(out, "encryption key")
    assert len(secret) == 32
    assert "key secret" not in out, "the app signs nothing: no signing key to show"

    broker = Path(cli_env["FLEET_MOSQUITTO_DIR"])
    passwords = (broker / "passwords").read_text()
    assert passwords.splitlines()[-1].startswith("driver-1:$7$101$")
    assert password not in passwords
    rules = msgspec.json.decode((broker / dynsec.CONFIG_FILE).read_bytes(), type=dynsec.Config)
    client = next(c for c in rules.clients if c.username == "driver-1")
    assert client.clientid == "owntracks-ot-1"
    role = next(r for r in rules.roles if r.rolename == client.roles[0].rolename)
    assert {(acl.acltype, acl.topic) for acl in role.acls} == {
        ("publishClientSend", "owntracks/driver-1/ot-1"),
        ("subscribePattern", "owntracks/#"),
        ("publishClientReceive", "owntracks/driver-1/ot-1/cmd"),
    }

    async def row() -> asyncpg.Record:
        conn = await asyncpg.connect(database_url)
        try:
            found = await conn.fetchrow(
                "SELECT kind, owntracks_user, owntracks_sealed_key FROM devices WHERE device = 'ot-1'"
            )
            assert found is not None
            return found
        finally:
            await conn.close()

    stored = asyncio.run(row())
    assert (stored["kind"], stored["owntracks_user"]) == ("owntracks", "driver-1")
    assert secret.encode() not in bytes(stored["owntracks_sealed_key"])
    code, out, _ = _fleet(cli_env, "list")
    assert out.splitlines()[1].split()[:2] == ["ot-1", "owntracks"]
    code, out, _ = _fleet(cli_env, "show", "ot-1")
    assert (
        "owntracks: user driver-1, client id owntracks-ot-1, topic owntracks/driver-1/ot-1,"
        " encryption key set"
    ) in out
    assert secret not in out


def test_an_app_logs_in_as_its_device_id_unless_told_and_a_login_is_one_devices(
    cli_env: dict[str, str],
) -> None:
    code, out, err = _fleet(cli_env, "add", "ot-2", "--operator", "o", "--bus", "B-2", "--kind", "owntracks")
    assert code == 0, err
    assert _setting(out, "username") == "ot-2"
    assert "encryption key" not in out
    code, _, err = _fleet(cli_env, "add", "unit-3", "--operator", "o", "--bus", "B-3")
    assert code == 0, err
    taken = ("add", "ot-4", "--operator", "o", "--bus", "B-4", "--kind", "owntracks", "--owntracks-user")
    code, out, err = _fleet(cli_env, *taken, "unit-3")
    assert (code, out) == (1, "")
    assert err.strip() == (
        "error [device_exists]: broker login 'unit-3' is another device's;"
        " give the app another --owntracks-user"
    )
    code, _, err = _fleet(cli_env, *taken, "bad/user")
    assert code == 1
    assert err.startswith("error [invalid_identifier]: user 'bad/user' must match")


@pytest.mark.parametrize(
    "options",
    [
        ("--encryption-key", "s3cret"),
        ("--owntracks-user", "driver"),
        ("--kind", "owntracks", "--encryption-key", "s3cret", "--new-encryption-key"),
        ("--kind", "owntracks", "--encryption-key", ""),
    ],
)
def test_owntracks_options_are_refused_where_they_mean_nothing(
    cli_env: dict[str, str], options: tuple[str, ...]
) -> None:
    code, out, err = _fleet(cli_env, "add", "u-9", "--operator", "o", "--bus", "B-9", *options)
    assert code == 2, err
    assert out == ""
    assert "--" in err


def test_an_apps_secret_and_password_change_and_other_devices_have_no_secret(cli_env: dict[str, str]) -> None:
    add = (
        "add",
        "ot-5",
        "--operator",
        "o",
        "--bus",
        "B-5",
        "--kind",
        "owntracks",
        "--owntracks-user",
        "drv-5",
    )
    assert _fleet(cli_env, *add)[0] == 0
    code, out, err = _fleet(cli_env, "encryption-key", "ot-5", "--new-encryption-key")
    assert code == 0, err
    assert len(_setting(out, "encryption key")) == 32
    code, out, err = _fleet(cli_env, "encryption-key", "ot-5", "--none")
    assert (code, out) == (0, "")
    assert "no encryption key" in err
    assert _fleet(cli_env, "encryption-key", "ot-5")[0] == 2
    code, out, err = _fleet(cli_env, "rotate-key", "ot-5", "--new-mqtt-password")
    assert code == 0, err
    assert _setting(out, "mqtt username") == "drv-5"
    assert _fleet(cli_env, "add", "unit-6", "--operator", "o", "--bus", "B-6")[0] == 0
    code, _, err = _fleet(cli_env, "encryption-key", "unit-6", "--encryption-key", "s3cret")
    assert (code, err.strip()) == (
        1,
        "error [registry_error]: device 'unit-6' is not an OwnTracks app (--kind owntracks)",
    )


def test_the_encryption_key_command_has_help_with_an_example() -> None:
    code, out, _ = _fleet({}, "encryption-key", "--help")
    assert code == 0
    assert "Example" in out
