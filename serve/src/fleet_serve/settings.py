"""Settings of ``fleet serve`` alone, read once from ``FLEET_SERVE_*`` and ``FLEET_TOKEN_*``.

The servers every process shares (PostgreSQL, Redis) come from
:mod:`fleet_store.settings`.

| variable | default | meaning |
|---|---|---|
| ``FLEET_SERVE_ADDR`` | ``127.0.0.1:8080`` | where the HTTP and websocket server listens |
| ``FLEET_TOKEN_KEYS`` | (none) | signing keys ``kid=base64secret,…``: the first signs, all verify |
| ``FLEET_TOKEN_ISSUER`` | ``fleet`` | the ``iss`` claim tokens carry and must carry |
| ``FLEET_LIVE_QUEUE_BYTES`` | ``1048576`` | what a websocket client may have queued (JSON bytes) |
| ``FLEET_LIVE_SLOW_S`` | ``5`` | a client behind (queue full or a send not done) this long is closed 3008 |
| ``FLEET_LIVE_PING_S`` | ``20`` | websocket ping interval, and the deadline for its pong |
| ``FLEET_LIVE_AUTH_S`` | ``10`` | how long a new websocket has to send its token |
| ``FLEET_LIVE_DEFLATE`` | ``0`` | ``1``: offer per-message deflate (CPU per client: each compresses) |
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any

import msgspec

from fleet_store.errors import ConfigError
from fleet_store.settings import PREFIX

MIN_KEY_BYTES = 32
"""HS256 keys shorter than the hash output weaken it (RFC 7518 section 3.2)"""


class TokenKey(msgspec.Struct, frozen=True):
    """One HS256 signing key and its id (the JWT ``kid`` header), for rotation."""

    kid: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"TokenKey(kid={self.kid!r})"


class ServeSettings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8080
    token_keys: tuple[TokenKey, ...] = ()
    issuer: str = "fleet"
    live_queue_bytes: int = 1 << 20
    live_slow_s: float = 5.0
    live_ping_s: float = 20.0
    live_auth_s: float = 10.0
    live_deflate: bool = False


def load_serve_settings(environ: Mapping[str, str] | None = None) -> ServeSettings:
    """Read the serve variables once into a typed ServeSettings."""
    env = os.environ if environ is None else environ
    addr = env.get(f"{PREFIX}SERVE_ADDR", "127.0.0.1:8080")
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{PREFIX}SERVE_ADDR={addr!r}: expected host:port, as 127.0.0.1:8080")
    return ServeSettings(
        host=host,
        port=int(port),
        token_keys=parse_token_keys(env.get(f"{PREFIX}TOKEN_KEYS", "")),
        issuer=env.get(f"{PREFIX}TOKEN_ISSUER", "fleet"),
        live_queue_bytes=int(_positive(env, "LIVE_QUEUE_BYTES", 1 << 20)),
        live_slow_s=_positive(env, "LIVE_SLOW_S", 5.0),
        live_ping_s=_positive(env, "LIVE_PING_S", 20.0),
        live_auth_s=_positive(env, "LIVE_AUTH_S", 10.0),
        live_deflate=_flag(env, "LIVE_DEFLATE"),
    )


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(f"{PREFIX}{name}", "0")
    if raw not in ("0", "1"):
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected 0 or 1")
    return raw == "1"


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(f"{PREFIX}{name}")
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a positive number, as {default:g}")
    return value


def parse_token_keys(raw: str) -> tuple[TokenKey, ...]:
    """``kid=base64secret,…``; errors name the key id, never the secret."""
    keys: list[TokenKey] = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        kid, sep, encoded = part.partition("=")
        if not sep or not kid:
            raise ConfigError(f"{PREFIX}TOKEN_KEYS: each key is kid=base64secret (key {len(keys) + 1})")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise ConfigError(f"{PREFIX}TOKEN_KEYS: key {kid!r} is not base64") from exc
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"{PREFIX}TOKEN_KEYS: key {kid!r} has {len(secret)} bytes, needs {MIN_KEY_BYTES}"
            )
        if any(k.kid == kid for k in keys):
            raise ConfigError(f"{PREFIX}TOKEN_KEYS: key id {kid!r} given twice")
        keys.append(TokenKey(kid, secret))
    return tuple(keys)


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """How uvicorn runs ``fleet serve`` (the command and the tests' server alike), host and port aside."""
    return {
        "log_config": None,
        "access_log": False,
        "ws": "websockets",
        "ws_ping_interval": settings.live_ping_s,
        "ws_ping_timeout": settings.live_ping_s,
        "ws_per_message_deflate": settings.live_deflate,
        "timeout_graceful_shutdown": 10,
    }
