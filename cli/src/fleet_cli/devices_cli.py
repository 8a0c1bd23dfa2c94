"""``fleet devices``: register devices, issue, rotate and revoke their keys and broker logins."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import asyncpg
import click

from fleet_cli.owntracks_cli import (
    OwnTracksOptions,
    add_owntracks_app,
    encryption_key,
    owntracks_options,
    show_app_login,
    show_app_settings,
)
from fleet_cli.params import Duration
from fleet_schemas.keyfile import write_key_file
from fleet_store import broker_accounts, dynsec, stackfile
from fleet_store import devices as registry
from fleet_store.broker_accounts import BrokerLogin
from fleet_store.device_tokens import TokenInfo
from fleet_store.devices import DEVICE_KINDS, DeviceKind, DeviceRecord, Issued, IssuedToken, KeyInfo
from fleet_store.errors import RegistryError
from fleet_store.owntracks import AppLogin, app_login
from fleet_store.secretbox import load_key_encryption_key
from fleet_store.settings import Settings

T = TypeVar("T")


def _note(line: str) -> None:
    click.echo(line, err=True)


def _with_registry(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work`` on a connection to the registry's database."""

    async def run() -> T:
        try:
            conn = await asyncpg.connect(stackfile.resolve_urls(settings).database_url)
        except (OSError, asyncpg.PostgresError) as exc:
            raise RegistryError(f"cannot connect to the database: {exc}") from exc
        try:
            return await work(conn)
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
            raise RegistryError(f"the database schema is behind ({exc}): run `fleet db migrate`") from exc
        finally:
            await conn.close()

    return asyncio.run(run())


def update_broker(settings: Settings, logins: list[BrokerLogin]) -> None:
    """Rewrite the broker's password and access files from the registry; make a running broker take them.

    The password file is re-read on SIGHUP; the access rules are applied
    through the dynamic-security API, as the service account of FLEET_MQTT_URL.
    """
    directory = broker_accounts.broker_dir(settings)
    if directory is None:
        _note(
            "broker: accounts not written; set FLEET_MOSQUITTO_DIR to the broker's folder"
            f" (the one holding its passwords and {dynsec.CONFIG_FILE} files)"
        )
        return
    pid, changes = broker_accounts.sync(directory, logins, lambda: stackfile.resolve_urls(settings).mqtt_url)
    written = (
        f"broker: {directory}/passwords and {dynsec.CONFIG_FILE} rewritten ({len(logins)} active devices)"
    )
    if pid is None:
        _note(
            f"{written}; no running Mosquitto found from {directory}/mosquitto.pid: make the broker"
            " take them: it reads them when it starts; a running one needs `kill -HUP <its pid>`,"
            " then `fleet devices sync`"
        )
        return
    _note(f"{written}; Mosquitto (pid {pid}) reloaded, {changes} access-rule changes applied")


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _show_issued(issued: Issued, key_file: Path | None, username: str | None = None) -> None:
    """Print what the device needs, once: its key (or where it was written) and its broker password.

    ``username`` is its broker login where that is not its device id (an OwnTracks app's own).
    """
    key = issued.key
    click.echo(f"key id:         {key.key_id}")
    written = False
    if key_file is not None:
        try:
            write_key_file(key_file, key)
            written = True
        except OSError as exc:
            _note(
                f"error: the key file {key_file} cannot be written ({exc.strerror}); the key is shown instead"
            )
    if written:
        click.echo(f"key file:       {key_file} (0600; the secret is not shown)")
    else:
        click.echo(f"key secret:     {key.secret.hex()}")
    if issued.mqtt_password is not None:
        click.echo(f"mqtt username:  {username or issued.device.device}")
        click.echo(f"mqtt password:  {issued.mqtt_password}")
    if issued.token is not None:
        _show_token(issued.token)
    _note("shown once: the server keeps the key sealed and only hashes of the broker password and token")


def _show_token(token: str) -> None:
    click.echo(f"device token:   {token}")
    _note(
        "the phone sends the token as its device identifier (Traccar Client: Device identifier;"
        " OsmAnd: id= in the tracking URL) or as Authorization: Bearer; see README, Drivers' phones"
    )


def _key_line(key: KeyInfo, now: datetime) -> str:
    if key.status == "retired" and key.grace_until is not None:
        verb = "verifies until" if key.usable_at(now) else "grace ended"
        detail = f"{verb} {_when(key.grace_until)}"
    elif key.revoked_at is not None:
        detail = f"revoked {_when(key.revoked_at)}"
    else:
        detail = "signs new frames"
    return f"  {key.key_id:<24} {key.status:<8} created {_when(key.created_at)}  {detail}"


def _token_line(token: TokenInfo) -> str:
    detail = (
        f"revoked {_when(token.revoked_at)}" if token.revoked_at is not None else "authenticates the phone"
    )
    return f"  {token.token_id:<24} {token.status:<8} created {_when(token.created_at)}  {detail}"


def _show_record(record: DeviceRecord) -> None:
    click.echo(f"device:    {record.device}")
    click.echo(f"kind:      {record.kind}")
    click.echo(f"operator:  {record.operator}")
    click.echo(f"bus:       {record.bus}")
    revoked = f" (revoked {_when(record.revoked_at)})" if record.revoked_at else ""
    click.echo(f"status:    {record.status}{revoked}")
    click.echo(f"created:   {_when(record.created_at)}")
    click.echo("keys:")
    now = datetime.now(UTC)
    for key in record.keys:
        click.echo(_key_line(key, now))
    if record.tokens:
        click.echo("tokens:")
        for token in record.tokens:
            click.echo(_token_line(token))


_KEY_FILE = click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the key as the agent's key file (0600) instead of showing its secret",
)


@click.group(name="devices")
def devices() -> None:
    """Devices, their signing keys and their broker logins.

    A device belongs to one operator and one bus. Its key secret and broker
    password are shown once; the server keeps the secret sealed under
    FLEET_KEY_ENCRYPTION_KEY and only a Mosquitto hash of the password.

    \b
    Example:
      fleet devices add unit-0042 --operator sogral --bus DZ-16-0042 --key-file key.toml
    """


devices.add_command(encryption_key)


@devices.command()
@click.argument("device")
@click.option("--operator", required=True, help="operator id the device publishes under")
@click.option("--bus", required=True, help="bus the device is mounted in")
@click.option(
    "--kind",
    type=click.Choice(DEVICE_KINDS),
    default="onboard",
    show_default=True,
    help="onboard: fleet-agent unit over MQTT; phone: Traccar Client, OsmAnd or a fleet app over HTTP"
    " (gets a device token, no broker login); owntracks: the OwnTracks app over MQTT",
)
@_KEY_FILE
@owntracks_options
@click.pass_obj
def add(
    settings: Settings,
    device: str,
    operator: str,
    bus: str,
    kind: DeviceKind,
    key_file: Path | None,
    owntracks: OwnTracksOptions,
) -> None:
    """Register DEVICE, issue its key and broker password or phone token (shown once), update the broker.

    An onboard unit logs in to the broker with its device id and this password
    and may publish only under fleet/v1/OPERATOR/DEVICE/. A phone gets a
    device token (DEVICE:SECRET) for the HTTP ingest instead of a broker login.
    An OwnTracks app logs in as --owntracks-user (default DEVICE) with client
    id owntracks-DEVICE and may publish only owntracks/USER/DEVICE; add prints
    the app's settings (README: Drivers' phones, OwnTracks).

    \b
    Examples:
      fleet devices add unit-0042 --operator sogral --bus DZ-16-0042 --key-file /etc/fleet-agent/key.toml
      fleet devices add phone-0007 --operator sogral --bus DZ-16-0007 --kind phone
      fleet devices add ot-0009 --operator sogral --bus DZ-16-0009 --kind owntracks --new-encryption-key
    """
    if kind == "owntracks":
        issued_app, logins = _with_registry(
            settings, lambda conn: add_owntracks_app(settings, conn, operator, device, bus, owntracks)
        )
        _note(f"owntracks device {device} added for operator {operator}, bus {bus}")
        show_app_settings(issued_app)
        update_broker(settings, logins)
        return
    owntracks.refuse_unless_owntracks()

    async def work(conn: asyncpg.Connection) -> tuple[Issued, list[BrokerLogin]]:
        kek = load_key_encryption_key(settings)
        issued = await registry.add_device(conn, kek, operator, device, bus, kind)
        return issued, await registry.broker_logins(conn)

    issued, logins = _with_registry(settings, work)
    _note(f"{kind} device {device} added for operator {operator}, bus {bus}")
    _show_issued(issued, key_file)
    update_broker(settings, logins)


@devices.command(name="list")
@click.option("--operator", default=None, help="only this operator's devices")
@click.pass_obj
def list_(settings: Settings, operator: str | None) -> None:
    """List devices with their status and active key.

    \b
    Example:
      fleet devices list --operator sogral
    """

    async def work(conn: asyncpg.Connection) -> list[DeviceRecord]:
        return await registry.list_devices(conn, operator)

    records = _with_registry(settings, work)
    click.echo(f"{'DEVICE':<24} {'KIND':<10} {'OPERATOR':<16} {'BUS':<16} {'STATUS':<8} ACTIVE KEY")
    for record in records:
        click.echo(
            f"{record.device:<24} {record.kind:<10} {record.operator:<16} {record.bus:<16} {record.status:<8}"
            f" {record.active_key or '-'}"
        )
    _note(f"{len(records)} devices")


@devices.command()
@click.argument("device")
@click.pass_obj
def show(settings: Settings, device: str) -> None:
    """Show DEVICE and every key it has had (never a secret).

    \b
    Example:
      fleet devices show unit-0042
    """

    async def work(conn: asyncpg.Connection) -> tuple[DeviceRecord, AppLogin | None]:
        return await registry.show_device(conn, device), await app_login(conn, device)

    record, app = _with_registry(settings, work)
    _show_record(record)
    if app is not None:
        show_app_login(device, app)


@devices.command(name="rotate-key")
@click.argument("device")
@click.option(
    "--grace",
    type=Duration(),
    default=registry.DEFAULT_GRACE,
    show_default=f"{registry.DEFAULT_GRACE.total_seconds() / 3600:g}h",
    help="how long the old key still verifies (frames signed before the device got the new key)",
)
@click.option(
    "--new-mqtt-password",
    is_flag=True,
    help="also replace the broker password (at once, no grace)",
)
@_KEY_FILE
@click.pass_obj
def rotate_key(
    settings: Settings, device: str, grace: timedelta, new_mqtt_password: bool, key_file: Path | None
) -> None:
    """Issue a new key for DEVICE (shown once); the old one verifies for the grace period.

    Install the new key on the device (replace its key file): the agent signs
    with it from its next batch, without a restart.

    \b
    Example:
      fleet devices rotate-key unit-0042 --grace 2h --key-file key.toml
    """

    async def work(conn: asyncpg.Connection) -> tuple[Issued, list[BrokerLogin]]:
        kek = load_key_encryption_key(settings)
        issued = await registry.rotate_key(conn, kek, device, grace, new_mqtt_password)
        return issued, await registry.broker_logins(conn)

    issued, logins = _with_registry(settings, work)
    now = datetime.now(UTC)
    for key in issued.device.keys:
        if key.status == "retired" and key.grace_until is not None and key.usable_at(now):
            _note(f"key {key.key_id} is retired; it still verifies until {_when(key.grace_until)}")
    login = next((login.username for login in logins if login.device == device), None)
    _show_issued(issued, key_file, login)
    if new_mqtt_password:
        update_broker(settings, logins)


@devices.command(name="rotate-token")
@click.argument("device")
@click.pass_obj
def rotate_token(settings: Settings, device: str) -> None:
    """Issue a new token for the phone DEVICE (shown once); the old one is refused at once.

    \b
    Example:
      fleet devices rotate-token phone-0007
    """

    async def work(conn: asyncpg.Connection) -> IssuedToken:
        return await registry.rotate_token(conn, device)

    issued = _with_registry(settings, work)
    _show_token(issued.token)
    _note("shown once: the server keeps only an argon2id hash of the token")


@devices.command()
@click.argument("device")
@click.option("--key", "key_id", default=None, help="revoke only this key of DEVICE")
@click.pass_obj
def revoke(settings: Settings, device: str, key_id: str | None) -> None:
    """Revoke DEVICE (every key, token and its broker login) or one of its keys, at once.

    Ingest refuses the revoked keys within seconds. A revoked device id is
    never reused.

    \b
    Example:
      fleet devices revoke unit-0042 --key unit-0042-k1
    """
    if key_id is not None:

        async def revoke_one(conn: asyncpg.Connection) -> DeviceRecord:
            await registry.revoke_key(conn, device, key_id)
            return await registry.show_device(conn, device)

        after = _with_registry(settings, revoke_one)
        click.echo(f"key {key_id} of {device} revoked")
        if after.status == "active" and after.active_key is None:
            _note(f"{device} has no active key now; `fleet devices rotate-key {device}` issues one")
        return

    async def revoke_all(conn: asyncpg.Connection) -> tuple[DeviceRecord, list[BrokerLogin]]:
        record = await registry.revoke_device(conn, device)
        return record, await registry.broker_logins(conn)

    record, logins = _with_registry(settings, revoke_all)
    click.echo(f"device {record.device} revoked, and its keys ({len(record.keys)})")
    update_broker(settings, logins)


@devices.command()
@click.pass_obj
def sync(settings: Settings) -> None:
    """Rewrite the broker's accounts and access rules from the registry and make the broker take them.

    Every other command does this; run it after restoring the broker's
    folder, or when a command reported the broker unreachable.

    \b
    Example:
      FLEET_MOSQUITTO_DIR=/etc/mosquitto/fleet fleet devices sync
    """
    update_broker(settings, _with_registry(settings, registry.broker_logins))
