"""``fleet devices add --kind owntracks``: an OwnTracks app's login, encryption secret and app settings."""

from __future__ import annotations

import functools
from collections.abc import Callable

import asyncpg
import click
import msgspec

from fleet_schemas.owntracks import owntracks_topic
from fleet_store import devices as registry
from fleet_store import dynsec
from fleet_store import owntracks as apps
from fleet_store.broker_accounts import BrokerLogin
from fleet_store.owntracks import AppLogin, OwnTracksIssued
from fleet_store.secretbox import load_key_encryption_key
from fleet_store.settings import Settings


class OwnTracksOptions(msgspec.Struct, frozen=True):
    """What ``fleet devices add`` was told for an OwnTracks app."""

    user: str | None
    encryption_key: str | None
    new_encryption_key: bool

    def secret(self) -> str | None:
        """The secret to register: the one given, a new one, or None (the app sends plain JSON)."""
        if self.encryption_key is not None and self.new_encryption_key:
            raise click.UsageError("give --encryption-key or --new-encryption-key, not both")
        if self.encryption_key is not None:
            if not self.encryption_key:
                raise click.UsageError("--encryption-key is empty; leave it out for plain JSON")
            if len(self.encryption_key.encode()) > apps.SECRET_CHARS:
                click.echo(
                    f"warning: the apps use only the first {apps.SECRET_CHARS} bytes of the encryption key",
                    err=True,
                )
            return self.encryption_key
        return apps.new_encryption_key() if self.new_encryption_key else None

    def refuse_unless_owntracks(self) -> None:
        if self.user is not None or self.encryption_key is not None or self.new_encryption_key:
            raise click.UsageError(
                "--owntracks-user, --encryption-key and --new-encryption-key are for --kind owntracks"
            )


def owntracks_options(command: Callable[..., None]) -> Callable[..., None]:
    """The OwnTracks options of ``fleet devices add``, handed to the command as one ``owntracks``."""

    @functools.wraps(command)
    def with_options(
        *args: object,
        owntracks_user: str | None,
        encryption_key: str | None,
        new_encryption_key: bool,
        **kwargs: object,
    ) -> None:
        command(
            *args, owntracks=OwnTracksOptions(owntracks_user, encryption_key, new_encryption_key), **kwargs
        )

    options = [
        click.option(
            "--owntracks-user",
            default=None,
            metavar="USER",
            help="owntracks: the app's broker login and topic user (owntracks/USER/DEVICE); default DEVICE",
        ),
        click.option(
            "--encryption-key",
            default=None,
            metavar="SECRET",
            help="owntracks: the secret the app encrypts its payloads with (up to 32 bytes; kept sealed)",
        ),
        click.option(
            "--new-encryption-key",
            is_flag=True,
            help="owntracks: generate the secret (shown once) instead of giving it",
        ),
    ]
    decorated: Callable[..., None] = with_options
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


async def add_owntracks_app(
    settings: Settings,
    conn: asyncpg.Connection,
    operator: str,
    device: str,
    bus: str,
    options: OwnTracksOptions,
) -> tuple[OwnTracksIssued, list[BrokerLogin]]:
    """Register the app; what to show once, and the broker logins to write."""
    kek = load_key_encryption_key(settings)
    issued = await apps.add_owntracks(conn, kek, operator, device, bus, options.user, options.secret())
    return issued, await registry.broker_logins(conn)


def show_app_login(device: str, app: AppLogin) -> None:
    """What ``fleet devices show`` adds for an OwnTracks app."""
    click.echo(
        f"owntracks: user {app.user}, client id {dynsec.owntracks_client_id(device)},"
        f" topic {owntracks_topic(app.user, device)}, encryption key {'set' if app.encrypted else 'none'}"
    )


def show_app_settings(issued: OwnTracksIssued) -> None:
    """The app's settings (Preferences → Connection), the password and secret shown once."""
    device = issued.issued.device.device
    click.echo("OwnTracks app settings (Preferences → Connection):")
    click.echo("  mode:            MQTT")
    click.echo("  host, port, TLS: the broker's public address (README: Drivers' phones, OwnTracks)")
    click.echo(f"  client id:       {dynsec.owntracks_client_id(device)}")
    click.echo(f"  username:        {issued.user}")
    click.echo(f"  password:        {issued.issued.mqtt_password}")
    click.echo(f"  device id:       {device}")
    if issued.encryption_key is not None:
        click.echo(f"  encryption key:  {issued.encryption_key}")
    click.echo(
        "shown once: the server keeps only a hash of the password"
        + (" and the encryption key sealed" if issued.encryption_key is not None else ""),
        err=True,
    )


@click.command(name="encryption-key")
@click.argument("device")
@click.option(
    "--encryption-key", default=None, metavar="SECRET", help="the app's new secret (up to 32 bytes)"
)
@click.option("--new-encryption-key", is_flag=True, help="generate the secret (shown once)")
@click.option("--none", "plain", is_flag=True, help="no secret: the app sends plain JSON")
@click.pass_obj
def encryption_key(
    settings: Settings, device: str, encryption_key: str | None, new_encryption_key: bool, plain: bool
) -> None:
    """Change the secret the OwnTracks app DEVICE encrypts its payloads with; ingest takes it within seconds.

    Set the same secret in the app first (Encryption key): what it sends under
    the old one after the change is refused as bad_ciphertext.

    \b
    Example:
      fleet devices encryption-key ot-0009 --new-encryption-key
    """
    options = OwnTracksOptions(None, encryption_key, new_encryption_key)
    secret = options.secret()
    if plain == (secret is not None):
        raise click.UsageError("give one of --encryption-key, --new-encryption-key or --none")

    from fleet_cli.devices_cli import _with_registry  # the devices group imports this module

    async def work(conn: asyncpg.Connection) -> None:
        await apps.set_encryption_key(conn, load_key_encryption_key(settings), device, secret)

    _with_registry(settings, work)
    if secret is None:
        click.echo(f"{device} has no encryption key: set the app's Encryption key empty", err=True)
        return
    click.echo(f"encryption key:  {secret}")
    click.echo("shown once: the server keeps it sealed", err=True)
