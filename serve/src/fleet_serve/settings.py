"""Settings of ``fleet serve`` alone, read once from ``FLEET_SERVE_*`` and ``FLEET_TOKEN_*``.

The servers every process shares (PostgreSQL, Redis) come from
:mod:`fleet_store.settings`.

| variable | default | meaning |
|---|---|---|
| ``FLEET_SERVE_ADDR`` | ``127.0.0.1:8080`` | where the HTTP and websocket server listens |
| ``FLEET_TOKEN_KEYS`` | (none) | token keys ``kid=[kind:]base64,…``: the first signs, all verify |
| ``FLEET_TOKEN_ISSUER`` | ``fleet`` | the ``iss`` claim tokens carry and must carry |
| ``FLEET_LIVE_QUEUE_BYTES`` | ``1048576`` | what a websocket client may have queued (JSON bytes) |
| ``FLEET_LIVE_SLOW_S`` | ``5`` | a client behind (queue full or a send not done) this long is closed 3008 |
| ``FLEET_LIVE_PING_S`` | ``20`` | websocket ping interval, and the deadline for its pong |
| ``FLEET_LIVE_AUTH_S`` | ``10`` | how long a new websocket has to send its token |
| ``FLEET_LIVE_TICK_MS`` | ``100`` | at most a frame a tick to a box or operator client, a map (0: none) |
| ``FLEET_LIVE_ROUTE_TICK_MS`` | ``500`` | at most a frame a tick to a route client (0: none) |
| ``FLEET_LIVE_DEFLATE`` | ``0`` | ``1``: offer per-message deflate (CPU per client: each compresses) |
| ``FLEET_SERVE_PUBLIC_FEEDS`` | (none) | operators whose GTFS-rt feeds need no token (``a,b``; ``*``: all) |
| ``FLEET_MAP_TILES`` | (none) | the map's basemap: tile URL template, style URL, ``.pmtiles`` file or URL |

A token key's kind says its algorithm: ``hs256`` (the default, a shared
secret of 32 bytes or more), ``ed25519`` (a 32-byte Ed25519 private key seed:
signs and verifies) or ``ed25519-public`` (a 32-byte raw public key: verifies
only, for nodes that must not be able to sign), as in
``FLEET_TOKEN_KEYS=k2027=ed25519:BASE64,k2026=BASE64``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

import msgspec

from fleet_store.errors import ConfigError
from fleet_store.settings import PREFIX

MIN_KEY_BYTES = 32
"""HS256 keys shorter than the hash output weaken it (RFC 7518 section 3.2)"""


_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
KeyKind = Literal["hs256", "ed25519", "ed25519-public"]
KEY_KINDS: tuple[KeyKind, ...] = get_args(KeyKind)
ED25519_KEY_BYTES = 32


class TokenKey(msgspec.Struct, frozen=True):
    """One token key, its id (the JWT ``kid`` header, for rotation) and its kind (its algorithm)."""

    kid: str
    secret: bytes
    kind: KeyKind = "hs256"

    def __repr__(self) -> str:  # never print the secret
        return f"TokenKey(kid={self.kid!r})"


MapTilesKind = Literal["none", "template", "style", "pmtiles"]


class MapTiles(msgspec.Struct, frozen=True):
    """The live map's basemap, from ``FLEET_MAP_TILES``.

    ``template``: raster tiles, a URL with ``{z}``, ``{x}`` and ``{y}``; ``style``: a MapLibre style
    URL; ``pmtiles``: a PMTiles archive, a URL, or a local ``file`` that ``fleet serve`` answers
    with HTTP Range requests at ``/map/tiles.pmtiles``.
    """

    kind: MapTilesKind
    url: str | None = None
    file: str | None = None


def parse_map_tiles(raw: str) -> MapTiles:
    """``FLEET_MAP_TILES`` read; a local archive must exist now (ConfigError), not at the first tile."""
    raw = raw.strip()
    if not raw:
        return MapTiles("none")
    remote = raw.startswith(("http://", "https://"))
    if raw.endswith(".pmtiles"):
        if remote:
            return MapTiles("pmtiles", url=raw)
        path = os.path.abspath(raw.removeprefix("file://"))
        if not os.path.isfile(path):
            raise ConfigError(f"{PREFIX}MAP_TILES={raw!r}: no such PMTiles file")
        return MapTiles("pmtiles", url=MAP_PMTILES_PATH, file=path)
    if not remote:
        raise ConfigError(
            f"{PREFIX}MAP_TILES={raw!r}: expected a tile URL with {{z}}/{{x}}/{{y}}, a style URL"
            " or a .pmtiles file"
        )
    if all(part in raw for part in ("{z}", "{x}", "{y}")):
        return MapTiles("template", url=raw)
    return MapTiles("style", url=raw)


MAP_PMTILES_PATH = "/map/tiles.pmtiles"
"""where ``fleet serve`` answers a local PMTiles archive of ``FLEET_MAP_TILES``"""


class ServeSettings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8080
    token_keys: tuple[TokenKey, ...] = ()
    issuer: str = "fleet"
    live_queue_bytes: int = 1 << 20
    live_slow_s: float = 5.0
    live_ping_s: float = 20.0
    live_auth_s: float = 10.0
    live_tick_ms: int = 100
    """at most one frame per tick to a box or operator client, a map (0: no tick)"""
    live_route_tick_ms: int = 500
    """at most one frame per tick to a route client (0: no tick): no one watches a route at a map's pace"""
    live_deflate: bool = False
    public_feeds: frozenset[str] = frozenset()
    """operators whose GTFS-realtime feeds anyone may fetch (``*``: every operator)"""
    map_tiles: MapTiles = msgspec.field(default_factory=lambda: MapTiles("none"))
    """the live map's basemap (none: the bundled country borders and coasts)"""

    def feeds_public(self, operator: str) -> bool:
        return operator in self.public_feeds or "*" in self.public_feeds


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
        live_tick_ms=_tick_ms(env, "LIVE_TICK_MS", 100),
        live_route_tick_ms=_tick_ms(env, "LIVE_ROUTE_TICK_MS", 500),
        live_deflate=_flag(env, "LIVE_DEFLATE"),
        public_feeds=frozenset(
            filter(None, (op.strip() for op in env.get(f"{PREFIX}SERVE_PUBLIC_FEEDS", "").split(",")))
        ),
        map_tiles=parse_map_tiles(env.get(f"{PREFIX}MAP_TILES", "")),
    )


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(f"{PREFIX}{name}", "0")
    if raw not in ("0", "1"):
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected 0 or 1")
    return raw == "1"


def _tick_ms(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(f"{PREFIX}{name}")
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > 10_000:
        raise ConfigError(
            f"{PREFIX}{name}={raw!r}: expected whole milliseconds from 0 to 10000, as {default}"
        )
    return int(raw)


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
    """``kid=[kind:]base64,…``; errors name the key id, never the secret."""
    keys: list[TokenKey] = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        kid, sep, value = part.partition("=")
        if not sep or not value or not _KID.fullmatch(kid):  # by position: a malformed entry may be a secret
            raise ConfigError(
                f"{PREFIX}TOKEN_KEYS: each key is kid=[kind:]base64, kid of letters, digits, '.', '_', '-'"
                f" (key {len(keys) + 1})"
            )
        kind, colon, encoded = value.rpartition(":")
        kind = kind if colon else "hs256"
        if kind not in KEY_KINDS:
            raise ConfigError(f"{PREFIX}TOKEN_KEYS: key {kid!r} kind {kind!r} is not one of {KEY_KINDS}")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise ConfigError(f"{PREFIX}TOKEN_KEYS: key {kid!r} is not base64") from exc
        if kind == "hs256" and len(secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"{PREFIX}TOKEN_KEYS: key {kid!r} has {len(secret)} bytes, needs {MIN_KEY_BYTES}"
            )
        if kind != "hs256" and len(secret) != ED25519_KEY_BYTES:
            raise ConfigError(
                f"{PREFIX}TOKEN_KEYS: {kind} key {kid!r} has {len(secret)} bytes, not {ED25519_KEY_BYTES}"
            )
        if any(k.kid == kid for k in keys):
            raise ConfigError(f"{PREFIX}TOKEN_KEYS: key id {kid!r} given twice")
        keys.append(TokenKey(kid, secret, kind))
    return tuple(keys)


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """How uvicorn runs ``fleet serve`` (the command and the tests' server alike), host and port aside."""
    return {
        "log_config": None,
        "access_log": False,
        "ws": "websockets-sansio",
        "ws_ping_interval": settings.live_ping_s,
        "ws_ping_timeout": settings.live_ping_s,
        "ws_per_message_deflate": settings.live_deflate,
        "timeout_graceful_shutdown": 10,
    }
