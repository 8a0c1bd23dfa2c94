"""Device tokens: how a driver's phone proves which device it is over HTTP.

A phone app (Traccar Client, OsmAnd) has one free-text field that reaches the
server with every request: the device identifier, sent as ``id=``. So the
credential is one string, ``DEVICE:SECRET``, typed (or pasted) into that field,
or sent as ``Authorization: Bearer DEVICE:SECRET`` by apps that can. The
device id in front lets the server find the one hash to check without
scanning; ``:`` never occurs in a device id.

The secret is shown once and kept only as an argon2id hash (argon2-cffi,
with OWASP's minimum parameters: 19 MiB, 2 passes, 1 lane). The secret is 192
random bits, not a password a person chose: the hash is there so a leaked
table opens nothing, and no parameters could make guessing 2**192 secrets
feasible, so the heavier RFC 9106 profile (64 MiB, 4 lanes) would only cost
each server more CPU per new token. Checking one still costs milliseconds, so
the HTTP ingest verifies a token once and then answers from a bounded cache
(``fleet_ingest.tokencache``) that PostgreSQL's ``NOTIFY fleet_device_tokens``
empties of revoked tokens.
"""

from __future__ import annotations

import secrets
from datetime import datetime

import asyncpg
import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fleet_schemas import BadIdentifierError
from fleet_schemas.topics import check_identifier

SEPARATOR = ":"
SECRET_BYTES = 24
CHANNEL = "fleet_device_tokens"
MAX_CREDENTIAL_CHARS = 200

_hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)


class TokenInfo(msgspec.Struct, frozen=True):
    """A token as the registry shows it: never its secret or hash."""

    token_id: str
    status: str
    created_at: datetime
    revoked_at: datetime | None


class Credential(msgspec.Struct, frozen=True):
    """What a request presented: the device it claims and the secret."""

    device: str
    secret: str

    def __repr__(self) -> str:  # never print the secret
        return f"Credential(device={self.device!r})"


class TokenHolder(msgspec.Struct, frozen=True):
    """The device an active token belongs to, with the hash to check a secret against."""

    token_id: str
    device: str
    operator: str
    bus: str
    token_hash: str

    def __repr__(self) -> str:
        return f"TokenHolder(token_id={self.token_id!r}, device={self.device!r})"


def parse_credential(text: str) -> Credential | None:
    """``DEVICE:SECRET`` split, or None when it is not of that shape."""
    if len(text) > MAX_CREDENTIAL_CHARS:
        return None
    device, separator, secret = text.rpartition(SEPARATOR)
    if not separator or not secret:
        return None
    try:
        check_identifier(device, "device")
    except BadIdentifierError:
        return None
    return Credential(device=device, secret=secret)


def secret_matches(token_hash: str, secret: str) -> bool:
    """Whether ``secret`` is the one ``token_hash`` was made from (argon2id; slow on purpose)."""
    try:
        return _hasher.verify(token_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


async def issue_token(conn: asyncpg.Connection, device: str) -> str:
    """Revoke ``device``'s active token and issue a new one; returns the credential, to be shown once.

    Run it in the caller's transaction, with the device row locked.
    """
    await revoke_tokens(conn, device)
    issued: int = await conn.fetchval("SELECT count(*) FROM device_tokens WHERE device = $1", device)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    await conn.execute(
        "INSERT INTO device_tokens (token_id, device, token_hash) VALUES ($1, $2, $3)",
        f"{device}-t{issued + 1}",
        device,
        _hasher.hash(secret),
    )
    return f"{device}{SEPARATOR}{secret}"


async def revoke_tokens(conn: asyncpg.Connection, device: str) -> None:
    """Refuse every token of ``device`` from now on."""
    await conn.execute(
        "UPDATE device_tokens SET status = 'revoked', revoked_at = now()"
        " WHERE device = $1 AND status = 'active'",
        device,
    )


async def token_holder(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, device: str
) -> TokenHolder | None:
    """The active token of an active ``device``, or None (unknown, revoked, or no token)."""
    row = await conn.fetchrow(
        "SELECT t.token_id, d.device, d.operator, d.bus, t.token_hash"
        " FROM device_tokens t JOIN devices d USING (device)"
        " WHERE t.device = $1 AND t.status = 'active' AND d.status = 'active'",
        device,
    )
    if row is None:
        return None
    return TokenHolder(
        token_id=row["token_id"],
        device=row["device"],
        operator=row["operator"],
        bus=row["bus"],
        token_hash=row["token_hash"],
    )


async def tokens_of(conn: asyncpg.Connection, devices: list[str]) -> dict[str, list[TokenInfo]]:
    """Every token of each of ``devices``, newest first."""
    found: dict[str, list[TokenInfo]] = {device: [] for device in devices}
    for row in await conn.fetch(
        "SELECT token_id, device, status, created_at, revoked_at FROM device_tokens"
        " WHERE device = ANY($1::text[]) ORDER BY created_at DESC, token_id DESC",
        devices,
    ):
        found[row["device"]].append(
            TokenInfo(
                token_id=row["token_id"],
                status=row["status"],
                created_at=row["created_at"],
                revoked_at=row["revoked_at"],
            )
        )
    return found
