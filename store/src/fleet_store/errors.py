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


class MigrationError(FleetError):
    """A migration failed or an applied migration file was changed afterwards."""

    code = "migration_error"


class KeyEncryptionError(FleetError):
    """A sealed key secret cannot be opened: another key-encryption key sealed it, or it was altered."""

    code = "key_encryption_error"


class RegistryError(FleetError):
    """The device registry cannot do what was asked; subclasses say why."""

    code = "registry_error"


class InvalidIdentifierError(RegistryError):
    """An operator, device or bus id cannot stand in an MQTT topic."""

    code = "invalid_identifier"


class DeviceExistsError(RegistryError):
    """A device id is taken (revoked devices keep theirs: ids are never reused)."""

    code = "device_exists"


class DeviceNotFoundError(RegistryError):
    """No device has this id."""

    code = "device_not_found"


class KeyNotFoundError(RegistryError):
    """The device has no key with this id."""

    code = "key_not_found"


class DeviceRevokedError(RegistryError):
    """A revoked device gets no new keys or passwords; add a new device instead."""

    code = "device_revoked"


class BrokerAccountsError(FleetError):
    """The broker's password file or ACL cannot be written, or the broker cannot be told to reload."""

    code = "broker_accounts_error"


class GtfsError(FleetError):
    """A GTFS feed cannot be imported, found or dropped; subclasses say why."""

    code = "gtfs_error"


class FeedSourceError(GtfsError):
    """The feed's zip or folder cannot be read at all (missing, not a zip, unreadable)."""

    code = "gtfs_source_unreadable"


class FeedUnusableError(GtfsError):
    """The feed was read but nothing in it can be used (a required file missing, no usable trip)."""

    code = "gtfs_feed_unusable"


class FeedNotFoundError(GtfsError):
    """No feed version has this id (for this operator)."""

    code = "gtfs_feed_not_found"


class FeedActiveError(GtfsError):
    """The active version of an operator's feed is not dropped; import or activate another first."""

    code = "gtfs_feed_active"
