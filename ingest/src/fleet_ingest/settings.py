"""Settings of the server processes, read once from ``FLEET_*`` environment variables.

| variable | default | meaning |
|---|---|---|
| ``FLEET_MQTT_URL`` | the local stack's | ``mqtt://user:password@host:port`` (``mqtts://`` for TLS) |
| ``FLEET_DATABASE_URL`` | the local stack's | ``postgresql://user@host:port/db`` with TimescaleDB |
| ``FLEET_REDIS_URL`` | the local stack's | ``redis://host:port/db`` |
| ``FLEET_STATE_DIR`` | ``./.fleet`` | where ``fleet stack`` keeps its servers' data, logs and URLs |

A URL that is not set comes from the local stack (``fleet stack up`` writes them
to ``$FLEET_STATE_DIR/stack.json``); set all three to use existing servers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

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

    @property
    def external(self) -> bool:
        """True when every server URL was given: the local stack is not used."""
        return None not in (self.mqtt_url, self.database_url, self.redis_url)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``FLEET_*`` variables once into a typed Settings."""
    env = os.environ if environ is None else environ
    return Settings(
        state_dir=Path(env.get(f"{PREFIX}STATE_DIR", ".fleet")).absolute(),
        mqtt_url=env.get(f"{PREFIX}MQTT_URL") or None,
        database_url=env.get(f"{PREFIX}DATABASE_URL") or None,
        redis_url=env.get(f"{PREFIX}REDIS_URL") or None,
    )
