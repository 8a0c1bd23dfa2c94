"""What a local stack recorded in ``stack.json``, and the server URLs resolved from it or the environment.

``fleet stack up`` (``fleet_devtools.stack``) starts the servers and writes this
record; every server command only reads it, so a production install resolves
its URLs from ``FLEET_*_URL`` without the stack's code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import msgspec

from fleet_store.errors import ConfigError
from fleet_store.settings import ServiceUrls, Settings

SERVICE_USER = "fleet"
MQTT_USER = "fleet-server"
DATABASE = "fleet"
STATE_FILE = "stack.json"


class StackState(msgspec.Struct):
    """What ``stack.json`` records: where the data is and which ports and secrets were chosen."""

    data_dir: str
    mqtt_port: int
    redis_port: int
    postgres_port: int
    mqtt_password: str

    def urls(self) -> ServiceUrls:
        return ServiceUrls(
            mqtt_url=f"mqtt://{MQTT_USER}:{quote(self.mqtt_password, safe='')}@127.0.0.1:{self.mqtt_port}",
            database_url=f"postgresql://{SERVICE_USER}@127.0.0.1:{self.postgres_port}/{DATABASE}",
            redis_url=f"redis://127.0.0.1:{self.redis_port}/0",
        )


def resolve_urls(settings: Settings) -> ServiceUrls:
    """The servers to use: each URL from the environment, else the local stack's."""
    state = None if settings.external else read_state(settings.state_dir)

    def pick(given: str | None, from_stack: Callable[[ServiceUrls], str]) -> str:
        if given:
            return given
        if state is None:
            raise ConfigError(
                "no server URLs: run `fleet stack up`, "
                "or set FLEET_MQTT_URL, FLEET_DATABASE_URL and FLEET_REDIS_URL"
            )
        return from_stack(state.urls())

    return ServiceUrls(
        mqtt_url=pick(settings.mqtt_url, lambda u: u.mqtt_url),
        database_url=pick(settings.database_url, lambda u: u.database_url),
        redis_url=pick(settings.redis_url, lambda u: u.redis_url),
    )


def read_state(state_dir: Path) -> StackState | None:
    """The recorded stack, or None if ``fleet stack up`` never ran here."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return msgspec.json.decode(path.read_bytes(), type=StackState)
