"""Typed errors for every way a payload can be bad.

Each error carries a stable ``code``: ingest stores it as the rejection reason
and counts it in a metric label, so codes never change once released.
"""

from __future__ import annotations

from typing import ClassVar


class FleetSchemaError(Exception):
    """Base of every error the wire format raises; ``code`` is stable."""

    code: ClassVar[str] = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class UndecodableError(FleetSchemaError):
    """The bytes are not a msgpack/JSON envelope or batch at all."""

    code = "undecodable"


class InvalidFieldError(FleetSchemaError):
    """Decodable, but a field is missing, unknown or of the wrong type."""

    code = "invalid_field"


class OutOfRangeError(FleetSchemaError):
    """A field is of the right type but outside its documented range."""

    code = "out_of_range"


class WrongVersionError(FleetSchemaError):
    """The envelope names a format version this decoder does not speak."""

    code = "wrong_version"


class UnsignedError(FleetSchemaError):
    """The envelope carries no signature."""

    code = "unsigned"


class BadSignatureError(FleetSchemaError):
    """The signature does not match the payload under the named key."""

    code = "bad_signature"


class UnknownKeyError(FleetSchemaError):
    """The key id is not known to the verifier (or the key is revoked)."""

    code = "unknown_key"


class TooManyFramesError(FleetSchemaError):
    """The batch holds no frame or more than ``MAX_FRAMES_PER_BATCH``."""

    code = "too_many_frames"


class TooLargeError(FleetSchemaError):
    """The raw message exceeds ``MAX_MESSAGE_BYTES``; it is not decoded."""

    code = "too_large"


class DeviceMismatchError(FleetSchemaError):
    """Topic device, envelope device, frame device and key owner disagree."""

    code = "device_mismatch"


class BadTopicError(FleetSchemaError):
    """The MQTT topic is not one of the fleet topic scheme."""

    code = "bad_topic"


class BadIdentifierError(FleetSchemaError):
    """An operator or device id cannot be used in a topic."""

    code = "bad_identifier"


class BadCiphertextError(FleetSchemaError):
    """An OwnTracks encrypted payload that does not open: not base64, too short, altered or another key."""

    code = "bad_ciphertext"


class EncryptionKeyMissingError(FleetSchemaError):
    """An OwnTracks encrypted payload from a device registered without an encryption key."""

    code = "encryption_key_missing"


ALL_ERRORS: tuple[type[FleetSchemaError], ...] = (
    UndecodableError,
    InvalidFieldError,
    OutOfRangeError,
    WrongVersionError,
    UnsignedError,
    BadSignatureError,
    UnknownKeyError,
    TooManyFramesError,
    TooLargeError,
    DeviceMismatchError,
    BadTopicError,
    BadIdentifierError,
    BadCiphertextError,
    EncryptionKeyMissingError,
)
"""Every concrete error; their codes are the complete set of rejection reasons."""
