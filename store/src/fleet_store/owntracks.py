"""OwnTracks apps in the registry: their broker login and the secret they encrypt payloads with.

An OwnTracks app is a device of kind ``owntracks`` (sql/015) with its own
broker user (sql/016: the app publishes to ``owntracks/<user>/<device>``, its
user being its login) and, optionally, the secret its payloads are encrypted
with. Ingest needs that secret itself to open them, so it is sealed as device
key secrets are (``fleet_store.secretbox``), bound to ``owntracks:<device>``.
"""

from __future__ import annotations

import secrets

import asyncpg
import msgspec

from fleet_store.devices import Issued, _check_identifiers, _lock_active_device, add_device
from fleet_store.errors import DeviceExistsError, RegistryError
from fleet_store.secretbox import KeyEncryptionKey, Sealed

SECRET_CHARS = 32
"""A generated secret: 32 URL-safe characters are the app's whole 32-byte key."""


class OwnTracksIssued(msgspec.Struct, frozen=True):
    """What the app's settings need, shown once: the broker password and the encryption secret."""

    issued: Issued
    user: str
    encryption_key: str | None

    def __repr__(self) -> str:  # never print the password or the secret
        return f"OwnTracksIssued(device={self.issued.device.device!r}, user={self.user!r})"


class AppLogin(msgspec.Struct, frozen=True):
    """How an OwnTracks app is set up, as ``fleet devices show`` tells it (never the secret)."""

    user: str
    encrypted: bool


async def app_login(conn: asyncpg.Connection, device: str) -> AppLogin | None:
    """An OwnTracks app's login and whether it has a secret; None for other devices."""
    row = await conn.fetchrow(
        "SELECT COALESCE(owntracks_user, device) AS user_name, owntracks_sealed_key IS NOT NULL AS encrypted"
        " FROM devices WHERE device = $1 AND kind = 'owntracks'",
        device,
    )
    return None if row is None else AppLogin(row["user_name"], row["encrypted"])


def key_context(device: str) -> str:
    """What an app's sealed secret is bound to, so it opens on its own row only."""
    return f"owntracks:{device}"


def new_encryption_key() -> str:
    return secrets.token_urlsafe(SECRET_CHARS)[:SECRET_CHARS]


def open_encryption_key(kek: KeyEncryptionKey, device: str, sealed: Sealed) -> str:
    """The app's secret, or KeyEncryptionError."""
    return kek.open(sealed, key_context(device)).decode()


async def add_owntracks(
    conn: asyncpg.Connection,
    kek: KeyEncryptionKey,
    operator: str,
    device: str,
    bus: str,
    user: str | None = None,
    encryption_key: str | None = None,
) -> OwnTracksIssued:
    """Register an OwnTracks app of ``operator`` on ``bus``, logging in as ``user`` (default: the device id).

    A broker login is one account, so ``user`` must be no other device's
    login (DeviceExistsError).
    """
    login = user or device
    _check_identifiers(user=login)
    sealed = None if encryption_key is None else kek.seal(encryption_key.encode(), key_context(device))
    async with conn.transaction():
        issued = await add_device(conn, kek, operator, device, bus, "owntracks")
        try:
            await conn.execute(
                "UPDATE devices SET owntracks_user = $2, owntracks_sealed_key = $3, owntracks_kek_id = $4"
                " WHERE device = $1",
                device,
                user,
                None if sealed is None else sealed.box,
                None if sealed is None else sealed.kek_id,
            )
        except asyncpg.UniqueViolationError as exc:
            raise DeviceExistsError(
                f"broker login {login!r} is another device's; give the app another --owntracks-user"
            ) from exc
    return OwnTracksIssued(issued, login, encryption_key)


async def set_encryption_key(
    conn: asyncpg.Connection, kek: KeyEncryptionKey, device: str, encryption_key: str | None
) -> None:
    """Give an active OwnTracks app a new secret (None: it sends plain JSON); ingest takes it within seconds.

    Messages the app encrypted under the old secret and still holds are refused
    as ``bad_ciphertext`` once the new one is in force: change it on the phone first.
    """
    sealed = None if encryption_key is None else kek.seal(encryption_key.encode(), key_context(device))
    async with conn.transaction():
        if await _lock_active_device(conn, device) != "owntracks":
            raise RegistryError(f"device {device!r} is not an OwnTracks app (--kind owntracks)")
        await conn.execute(
            "UPDATE devices SET owntracks_sealed_key = $2, owntracks_kek_id = $3 WHERE device = $1",
            device,
            None if sealed is None else sealed.box,
            None if sealed is None else sealed.kek_id,
        )
