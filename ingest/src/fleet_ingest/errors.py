"""The server side's exception hierarchy; every error has a stable ``code``."""

from __future__ import annotations

from typing import ClassVar


class FleetError(Exception):
    """Base of the server's errors; ``code`` is stable and shown to users."""

    code: ClassVar[str] = "fleet_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(FleetError):
    """A setting is missing or malformed; the message says which and how to fix it."""

    code = "config_error"


class StackError(FleetError):
    """A local service could not be installed, started, stopped or reached."""

    code = "stack_error"


class MigrationError(FleetError):
    """A migration failed or an applied migration file was changed afterwards."""

    code = "migration_error"
