"""Broker addresses as URLs, shared by the agent's config and the server's settings.

``mqtt://user:password@host:1883`` for TCP, ``mqtts://…:8883`` for TLS.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import msgspec

from fleet_schemas.errors import FleetSchemaError


class BadBrokerUrlError(FleetSchemaError):
    """The broker URL is not ``mqtt://`` or ``mqtts://`` with a host."""

    code = "bad_broker_url"


class BrokerUrl(msgspec.Struct, frozen=True):
    """Where an MQTT broker listens and how to log in."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise BadBrokerUrlError(
                "broker URL must look like mqtt://user:password@host:1883 (mqtts:// for TLS)"
            )
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise BadBrokerUrlError(f"broker URL has a bad port: {exc}") from exc
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __repr__(self) -> str:  # never print the password
        return f"BrokerUrl(host={self.host!r}, port={self.port}, tls={self.tls}, username={self.username!r})"
