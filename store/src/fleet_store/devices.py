"""The device registry: devices bound to an operator and a bus, their signing keys and broker logins.

A device has at most one active key. Rotating retires the active key with a
grace period (it still verifies until ``grace_until``, so frames signed
before the device got its new key are not lost) and issues a new one.
Revoking a key or a whole device takes effect at once: ingest caches see the
change within seconds (``fleet_ingest.keycache``) and a revoked device's
broker login disappears with the next rewrite of the broker's files.

Secrets are returned once, in :class:`Issued`, and stored only sealed
(``fleet_store.secretbox``); broker passwords only as Mosquitto hashes.
Device ids are never reused, so a revoked device keeps its row.

A device is of one kind (sql/015): an ``onboard`` unit (fleet-agent, signed
frames over MQTT), a driver's ``phone`` (HTTP ingest, authenticated by a
device token, ``fleet_store.device_tokens``; no broker login) or an
``owntracks`` app (MQTT with its own login). Every kind gets a signing key: a
phone app written against fleet may sign what it posts.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Literal

import asyncpg
import msgspec

from fleet_schemas import BadIdentifierError, DeviceKey
from fleet_schemas.topics import check_identifier
from fleet_store import device_tokens
from fleet_store.broker_accounts import BrokerLogin, mosquitto_hash
from fleet_store.device_tokens import TokenInfo
from fleet_store.errors import (
    DeviceExistsError,
    DeviceNotFoundError,
    DeviceRevokedError,
    InvalidIdentifierError,
    KeyNotFoundError,
    RegistryError,
)
from fleet_store.secretbox import KeyEncryptionKey

DEFAULT_GRACE = timedelta(hours=24)
SECRET_BYTES = 32

KeyStatus = Literal["active", "retired", "revoked"]
DeviceState = Literal["active", "revoked"]
DeviceKind = Literal["onboard", "phone", "owntracks"]
DEVICE_KINDS: tuple[DeviceKind, ...] = ("onboard", "phone", "owntracks")


class KeyInfo(msgspec.Struct, frozen=True):
    """A key as the registry shows it: never its secret."""

    key_id: str
    status: KeyStatus
    created_at: datetime
    grace_until: datetime | None
    revoked_at: datetime | None

    def usable_at(self, moment: datetime) -> bool:
        """Whether a signature under this key verifies at ``moment``."""
        if self.status == "active":
            return True
        return self.status == "retired" and self.grace_until is not None and moment < self.grace_until


class DeviceRecord(msgspec.Struct, frozen=True):
    """A device with all its keys and tokens, newest first."""

    device: str
    operator: str
    bus: str
    kind: DeviceKind
    status: DeviceState
    created_at: datetime
    revoked_at: datetime | None
    keys: list[KeyInfo]
    tokens: list[TokenInfo]

    @property
    def active_key(self) -> str | None:
        return next((k.key_id for k in self.keys if k.status == "active"), None)


class Issued(msgspec.Struct, frozen=True):
    """What is shown once when a key is issued: the key, the broker password when one was set,
    and a phone's token (``DEVICE:SECRET``) when one was issued."""

    device: DeviceRecord
    key: DeviceKey
    mqtt_password: str | None
    token: str | None = None

    def __repr__(self) -> str:  # never print the password
        return f"Issued(device={self.device.device!r}, key={self.key!r})"


class IssuedToken(msgspec.Struct, frozen=True):
    """A phone's new token (``DEVICE:SECRET``), shown once."""

    device: DeviceRecord
    token: str

    def __repr__(self) -> str:  # never print the token
        return f"IssuedToken(device={self.device.device!r})"


def _check_identifiers(**ids: str) -> None:
    try:
        for what, value in ids.items():
            check_identifier(value, what)
    except BadIdentifierError as exc:
        raise InvalidIdentifierError(exc.message) from exc


def _key_info(row: asyncpg.Record) -> KeyInfo:
    return KeyInfo(
        key_id=row["key_id"],
        status=row["status"],
        created_at=row["created_at"],
        grace_until=row["grace_until"],
        revoked_at=row["revoked_at"],
    )


async def _records(
    conn: asyncpg.Connection, device: str | None = None, operator: str | None = None
) -> list[DeviceRecord]:
    """Devices (one, or one operator's, or all), each with its keys."""
    devices = await conn.fetch(
        "SELECT device, operator, bus, kind, status, created_at, revoked_at FROM devices"
        " WHERE ($1::text IS NULL OR device = $1) AND ($2::text IS NULL OR operator = $2)"
        " ORDER BY device",
        device,
        operator,
    )
    keys: dict[str, list[KeyInfo]] = defaultdict(list)
    for row in await conn.fetch(
        "SELECT key_id, device, status, created_at, grace_until, revoked_at FROM device_keys"
        " WHERE device = ANY($1::text[]) ORDER BY created_at DESC, key_id DESC",
        [row["device"] for row in devices],
    ):
        keys[row["device"]].append(_key_info(row))
    tokens = await device_tokens.tokens_of(conn, [row["device"] for row in devices])
    return [
        DeviceRecord(
            device=row["device"],
            operator=row["operator"],
            bus=row["bus"],
            kind=row["kind"],
            status=row["status"],
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
            keys=keys[row["device"]],
            tokens=tokens[row["device"]],
        )
        for row in devices
    ]


async def show_device(conn: asyncpg.Connection, device: str) -> DeviceRecord:
    """One device and its keys, or DeviceNotFoundError."""
    found = await _records(conn, device=device)
    if not found:
        raise DeviceNotFoundError(f"no device {device!r}")
    return found[0]


async def list_devices(conn: asyncpg.Connection, operator: str | None = None) -> list[DeviceRecord]:
    """Every device (of one operator if given), by id."""
    return await _records(conn, operator=operator)


async def _issue_key(
    conn: asyncpg.Connection, kek: KeyEncryptionKey, device: str, secret: bytes | None = None
) -> DeviceKey:
    """Insert a new active key for ``device`` (in the caller's transaction, device row locked)."""
    issued: int = await conn.fetchval("SELECT count(*) FROM device_keys WHERE device = $1", device)
    key = DeviceKey(
        key_id=f"{device}-k{issued + 1}", device=device, secret=secret or secrets.token_bytes(SECRET_BYTES)
    )
    sealed = kek.seal(key.secret, key.key_id)
    await conn.execute(
        "INSERT INTO device_keys (key_id, device, sealed_secret, kek_id) VALUES ($1, $2, $3, $4)",
        key.key_id,
        device,
        sealed.box,
        sealed.kek_id,
    )
    return key


def _new_mqtt_password() -> tuple[str, str]:
    """A random broker password (URL-safe, so it fits in ``mqtt://device:password@host``) and its hash."""
    password = secrets.token_urlsafe(24)
    return password, mosquitto_hash(password)


async def add_device(
    conn: asyncpg.Connection,
    kek: KeyEncryptionKey,
    operator: str,
    device: str,
    bus: str,
    kind: DeviceKind = "onboard",
    *,
    secret: bytes | None = None,
) -> Issued:
    """Register a device of ``operator`` on ``bus`` with its first key.

    An onboard unit or an OwnTracks app also gets a broker password; a phone
    gets a device token instead (it has no broker login). ``secret`` is for
    fixed test identities only (the fuzz corpus is signed with published
    secrets so it replays); a real device's secret is always drawn here.
    """
    _check_identifiers(operator=operator, device=device, bus=bus)
    if kind not in DEVICE_KINDS:
        raise RegistryError(f"device kind {kind!r} is not one of {', '.join(DEVICE_KINDS)}")
    password, password_hash = (None, None) if kind == "phone" else _new_mqtt_password()
    token: str | None = None
    async with conn.transaction():
        try:
            await conn.execute(
                "INSERT INTO devices (device, operator, bus, kind, mqtt_password_hash)"
                " VALUES ($1, $2, $3, $4, $5)",
                device,
                operator,
                bus,
                kind,
                password_hash,
            )
        except asyncpg.UniqueViolationError as exc:
            raise DeviceExistsError(f"device {device!r} exists already; device ids are never reused") from exc
        key = await _issue_key(conn, kek, device, secret)
        if kind == "phone":
            token = await device_tokens.issue_token(conn, device)
    return Issued(device=await show_device(conn, device), key=key, mqtt_password=password, token=token)


async def _lock_active_device(conn: asyncpg.Connection, device: str) -> DeviceKind:
    """Lock an active device's row; its kind."""
    row = await conn.fetchrow("SELECT status, kind FROM devices WHERE device = $1 FOR UPDATE", device)
    if row is None:
        raise DeviceNotFoundError(f"no device {device!r}")
    if row["status"] == "revoked":
        raise DeviceRevokedError(f"device {device!r} is revoked; add a new device instead")
    kind: DeviceKind = row["kind"]
    return kind


async def rotate_key(
    conn: asyncpg.Connection,
    kek: KeyEncryptionKey,
    device: str,
    grace: timedelta = DEFAULT_GRACE,
    new_mqtt_password: bool = False,
) -> Issued:
    """Retire the active key (usable for ``grace`` more) and issue a new one.

    With ``new_mqtt_password`` the device also gets a new broker password; it
    replaces the old one at once (no grace: the broker checks it only at login).
    """
    password: str | None = None
    async with conn.transaction():
        if await _lock_active_device(conn, device) == "phone" and new_mqtt_password:
            raise RegistryError(f"device {device!r} is a phone: it has no broker login")
        await conn.execute(
            "UPDATE device_keys SET status = 'retired', grace_until = now() + $2"
            " WHERE device = $1 AND status = 'active'",
            device,
            grace,
        )
        key = await _issue_key(conn, kek, device)
        if new_mqtt_password:
            password, password_hash = _new_mqtt_password()
            await conn.execute(
                "UPDATE devices SET mqtt_password_hash = $2 WHERE device = $1", device, password_hash
            )
    return Issued(device=await show_device(conn, device), key=key, mqtt_password=password)


async def revoke_key(conn: asyncpg.Connection, device: str, key_id: str) -> KeyInfo:
    """Refuse ``key_id`` from now on (it must be ``device``'s); revoking it again changes nothing."""
    await conn.execute(
        "UPDATE device_keys SET status = 'revoked', revoked_at = now()"
        " WHERE key_id = $1 AND device = $2 AND status <> 'revoked'",
        key_id,
        device,
    )
    row = await conn.fetchrow(
        "SELECT key_id, device, status, created_at, grace_until, revoked_at FROM device_keys"
        " WHERE key_id = $1 AND device = $2",
        key_id,
        device,
    )
    if row is None:
        raise KeyNotFoundError(f"device {device!r} has no key {key_id!r}")
    return _key_info(row)


async def revoke_device(conn: asyncpg.Connection, device: str) -> DeviceRecord:
    """Revoke a device and every key of it at once; its broker login goes with the next rewrite."""
    async with conn.transaction():
        revoked = await conn.fetchval(
            "UPDATE devices SET status = 'revoked', revoked_at = now()"
            " WHERE device = $1 AND status = 'active' RETURNING device",
            device,
        )
        if revoked is not None:
            await conn.execute(
                "UPDATE device_keys SET status = 'revoked', revoked_at = now()"
                " WHERE device = $1 AND status <> 'revoked'",
                device,
            )
            await device_tokens.revoke_tokens(conn, device)
    return await show_device(conn, device)


async def rotate_token(conn: asyncpg.Connection, device: str) -> IssuedToken:
    """Revoke a phone's token at once and issue a new one (shown once); its key stays."""
    async with conn.transaction():
        if await _lock_active_device(conn, device) != "phone":
            raise RegistryError(
                f"device {device!r} is not a phone: it authenticates with its key, not a token"
            )
        token = await device_tokens.issue_token(conn, device)
    return IssuedToken(device=await show_device(conn, device), token=token)


async def broker_logins(conn: asyncpg.Connection) -> list[BrokerLogin]:
    """The broker accounts of every active device that has one (phones have none), by id:
    what the broker's files are built from."""
    rows = await conn.fetch(
        "SELECT device, operator, mqtt_password_hash, CASE WHEN kind = 'owntracks'"
        " THEN COALESCE(owntracks_user, device) END AS owntracks_user FROM devices"
        " WHERE status = 'active' AND mqtt_password_hash IS NOT NULL ORDER BY device"
    )
    return [
        BrokerLogin(r["device"], r["operator"], r["mqtt_password_hash"], r["owntracks_user"]) for r in rows
    ]
