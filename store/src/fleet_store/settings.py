"""Settings of the server processes, read once from ``FLEET_*`` environment variables.

| variable | default | meaning |
|---|---|---|
| ``FLEET_MQTT_URL`` | the local stack's | ``mqtt://user:password@host:port`` (``mqtts://`` for TLS) |
| ``FLEET_DATABASE_URL`` | the local stack's | ``postgresql://user@host:port/db`` with TimescaleDB |
| ``FLEET_REDIS_URL`` | the local stack's | ``redis://host:port/db`` |
| ``FLEET_STATE_DIR`` | ``./.fleet`` | where ``fleet stack`` keeps its servers' data, logs and URLs |
| ``FLEET_KEY_ENCRYPTION_KEY`` | local stack: generated | base64 of 32 bytes that seal key secrets |
| ``FLEET_MOSQUITTO_DIR`` | the local stack's | folder of ``passwords``, ``dynamic-security.json`` |
| ``FLEET_LOG_LEVEL`` | ``INFO`` | level of the JSON-lines logs on stderr |
| ``FLEET_METRICS_ADDR`` | ``127.0.0.1:9464`` | where ``/metrics`` is served (empty: nowhere) |
| ``FLEET_INGEST_GROUP`` | ``ingest`` | MQTT 5 shared-subscription group of the ingest processes |
| ``FLEET_INGEST_CLIENT_ID`` | ``ingest-<host>`` | MQTT client id (persistent session); one per process |
| ``FLEET_INGEST_BATCH_MAX`` | ``2000`` | messages per micro-batch at most |
| ``FLEET_INGEST_SESSION_EXPIRY_S`` | ``604800`` | the broker queues an absent instance's share this long |
| ``FLEET_INGEST_FLUSH_MS`` | ``5`` | how long a batch waits to fill once its first message arrived |
| ``FLEET_INGEST_HORIZON_DAYS`` | ``30`` | frames older than this are rejected (``too_old``) |
| ``FLEET_INGEST_FUTURE_TOLERANCE_S`` | ``120`` | frames further in the future are rejected (``future``) |
| ``FLEET_INGEST_MAX_ACCURACY_M`` | ``500`` | frames less accurate are rejected (``inaccurate``) |
| ``FLEET_INGEST_MAX_SPEED_MPS`` | ``55`` | jumps implying more are rejected (``teleport``) |
| ``FLEET_LIVE_TTL_S`` | ``900`` | a bus that stops reporting leaves the live map after this |
| ``FLEET_RETENTION_POSITIONS_DAYS`` | ``90`` | detailed positions kept |
| ``FLEET_RETENTION_ROLLUPS_DAYS`` | ``365`` | 1-minute rollups kept |
| ``FLEET_RETENTION_REJECTED_DAYS`` | ``90`` | rejected frames kept |
| ``FLEET_COMPRESS_AFTER_DAYS`` | ``7`` | positions compressed after (Timescale license only) |

A URL that is not set comes from the local stack (``fleet stack up`` writes them
to ``$FLEET_STATE_DIR/stack.json``); set all three to use existing servers.
With existing servers ``FLEET_KEY_ENCRYPTION_KEY`` is required; with the local
stack it is generated once into ``$FLEET_STATE_DIR/key-encryption-key``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import msgspec

from fleet_ingest.errors import ConfigError
from fleet_ingest.maintain import Retention
from fleet_processing.filters import FilterPolicy

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
    metrics_addr: str = "127.0.0.1:9464"
    ingest_group: str = "ingest"
    ingest_client_id: str = "ingest"
    ingest_batch_max: int = 2_000
    ingest_flush_ms: float = 5.0
    ingest_session_expiry_s: int = 604_800
    live_ttl_s: int = 900
    filters: FilterPolicy = msgspec.field(default_factory=FilterPolicy)
    retention: Retention = msgspec.field(default_factory=Retention)

    @property
    def external(self) -> bool:
        """True when every server URL was given: the local stack is not used."""
        return None not in (self.mqtt_url, self.database_url, self.redis_url)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``FLEET_*`` variables once into a typed Settings."""
    env = os.environ if environ is None else environ
    mosquitto_dir = env.get(f"{PREFIX}MOSQUITTO_DIR")

    def number(name: str, default: float) -> float:
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

    return Settings(
        state_dir=Path(env.get(f"{PREFIX}STATE_DIR", ".fleet")).absolute(),
        mqtt_url=env.get(f"{PREFIX}MQTT_URL") or None,
        database_url=env.get(f"{PREFIX}DATABASE_URL") or None,
        redis_url=env.get(f"{PREFIX}REDIS_URL") or None,
        key_encryption_key=env.get(f"{PREFIX}KEY_ENCRYPTION_KEY") or None,
        mosquitto_dir=Path(mosquitto_dir).absolute() if mosquitto_dir else None,
        log_level=env.get(f"{PREFIX}LOG_LEVEL", "INFO"),
        metrics_addr=env.get(f"{PREFIX}METRICS_ADDR", "127.0.0.1:9464"),
        ingest_group=env.get(f"{PREFIX}INGEST_GROUP", "ingest"),
        ingest_client_id=env.get(f"{PREFIX}INGEST_CLIENT_ID") or f"ingest-{socket.gethostname()}",
        ingest_batch_max=int(number("INGEST_BATCH_MAX", 2_000)) or 1,
        ingest_flush_ms=number("INGEST_FLUSH_MS", 5.0),
        ingest_session_expiry_s=int(number("INGEST_SESSION_EXPIRY_S", 604_800)),
        live_ttl_s=int(number("LIVE_TTL_S", 900)),
        filters=FilterPolicy(
            future_tolerance_s=number("INGEST_FUTURE_TOLERANCE_S", 120.0),
            horizon_s=number("INGEST_HORIZON_DAYS", 30.0) * 86_400,
            max_accuracy_m=number("INGEST_MAX_ACCURACY_M", 500.0),
            max_speed_mps=number("INGEST_MAX_SPEED_MPS", 55.0),
        ),
        retention=Retention(
            positions_days=int(number("RETENTION_POSITIONS_DAYS", 90)),
            rollups_days=int(number("RETENTION_ROLLUPS_DAYS", 365)),
            rejected_days=int(number("RETENTION_REJECTED_DAYS", 90)),
            compress_after_days=int(number("COMPRESS_AFTER_DAYS", 7)),
        ),
    )
