"""Settings every server process shares, read once from ``FLEET_*`` environment variables.

Each service adds its own (``fleet_ingest.settings`` for ``FLEET_INGEST_*``).

| variable | default | meaning |
|---|---|---|
| ``FLEET_MQTT_URL`` | the local stack's | ``mqtt://user:password@host:port`` (``mqtts://`` for TLS) |
| ``FLEET_DATABASE_URL`` | the local stack's | ``postgresql://user@host:port/db`` with TimescaleDB |
| ``FLEET_REDIS_URL`` | the local stack's | ``redis://host:port/db`` |
| ``FLEET_STATE_DIR`` | ``./.fleet`` | where ``fleet stack`` keeps its servers' data, logs and URLs |
| ``FLEET_KEY_ENCRYPTION_KEY`` | local stack: generated | base64 of 32 bytes that seal key secrets |
| ``FLEET_MOSQUITTO_DIR`` | the local stack's | folder of ``passwords``, ``dynamic-security.json`` |
| ``FLEET_LOG_LEVEL`` | ``INFO`` | level of the JSON-lines logs on stderr |
| ``FLEET_LIVE_TTL_S`` | ``900`` | a bus that stops reporting leaves the live map after this |
| ``FLEET_RETENTION_POSITIONS_DAYS`` | ``90`` | detailed positions kept |
| ``FLEET_RETENTION_ROLLUPS_DAYS`` | ``365`` | 1-minute rollups kept |
| ``FLEET_RETENTION_REJECTED_DAYS`` | ``90`` | rejected frames kept |
| ``FLEET_RETENTION_EVENTS_DAYS`` | ``365`` | detected events kept |
| ``FLEET_COMPRESS_AFTER_DAYS`` | ``7`` | positions compressed after (Timescale license only) |

A URL that is not set comes from the local stack (``fleet stack up`` writes them
to ``$FLEET_STATE_DIR/stack.json``); set all three to use existing servers.
With existing servers ``FLEET_KEY_ENCRYPTION_KEY`` is required; with the local
stack it is generated once into ``$FLEET_STATE_DIR/key-encryption-key``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from fleet_store.errors import ConfigError
from fleet_store.maintain import Retention

PREFIX = "FLEET_"


class ServiceUrls(msgspec.Struct, frozen=True):
    """Where the three servers are."""

    mqtt_url: str
    database_url: str
    redis_url: str


class Settings(msgspec.Struct, frozen=True):
    """Everything a server process reads from its environment."""

    state_dir: Path
    mqtt_url: str | None
    database_url: str | None
    redis_url: str | None
    key_encryption_key: str | None = None
    mosquitto_dir: Path | None = None
    log_level: str = "INFO"
    live_ttl_s: int = 900
    retention: Retention = msgspec.field(default_factory=Retention)

    @property
    def external(self) -> bool:
        """True when every server URL was given: the local stack is not used."""
        return None not in (self.mqtt_url, self.database_url, self.redis_url)


def env_number(env: Mapping[str, str], name: str, default: float) -> float:
    """``FLEET_<name>`` as a non-negative number, ``default`` when unset, ConfigError when malformed."""
    raw = env.get(f"{PREFIX}{name}")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{PREFIX}{name}={raw!r} must not be negative")
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``FLEET_*`` variables once into a typed Settings."""
    env = os.environ if environ is None else environ
    mosquitto_dir = env.get(f"{PREFIX}MOSQUITTO_DIR")

    return Settings(
        state_dir=Path(env.get(f"{PREFIX}STATE_DIR", ".fleet")).absolute(),
        mqtt_url=env.get(f"{PREFIX}MQTT_URL") or None,
        database_url=env.get(f"{PREFIX}DATABASE_URL") or None,
        redis_url=env.get(f"{PREFIX}REDIS_URL") or None,
        key_encryption_key=env.get(f"{PREFIX}KEY_ENCRYPTION_KEY") or None,
        mosquitto_dir=Path(mosquitto_dir).absolute() if mosquitto_dir else None,
        log_level=env.get(f"{PREFIX}LOG_LEVEL", "INFO"),
        live_ttl_s=int(env_number(env, "LIVE_TTL_S", 900)),
        retention=Retention(
            positions_days=int(env_number(env, "RETENTION_POSITIONS_DAYS", 90)),
            rollups_days=int(env_number(env, "RETENTION_ROLLUPS_DAYS", 365)),
            rejected_days=int(env_number(env, "RETENTION_REJECTED_DAYS", 90)),
            events_days=int(env_number(env, "RETENTION_EVENTS_DAYS", 365)),
            compress_after_days=int(env_number(env, "COMPRESS_AFTER_DAYS", 7)),
        ),
    )
