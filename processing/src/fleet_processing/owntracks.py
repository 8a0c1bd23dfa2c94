"""OwnTracks payloads to fleet frames: decryption, decoding and SI units, with nothing but typed errors.

An OwnTracks app sends no sequence number, so a frame's sequence is its fix
time in milliseconds (``tst`` * 1000): the app's resend of a location it
had queued, or the broker's redelivery, is the same (device, sequence) and is
stored once. A phone takes at most one fix a second, and ``tst`` has no finer
grain, so two different fixes cannot share it.

Units are converted here, once: ``vel`` km/h to m/s; ``acc`` is already the
horizontal accuracy in metres. CoreLocation (iOS) marks an unknown speed,
course or accuracy with a negative value; those become absent rather than
failing the range checks, as does ``cog`` 360 (north, as 0).

Encryption is libsodium's ``crypto_secretbox`` (XSalsa20-Poly1305), via
PyNaCl. The key is the secret's UTF-8 bytes truncated or padded with zero
bytes to 32: the booklet ("an up to 32 octet long passphrase which the apps
pad with binary zeroes", owntracks.org/booklet/features/encrypt) and the
Recorder (``recorder.c``, ``decrypt``: ``memset(key, 0, 32)`` then the stored
secret copied over it, at most ``crypto_secretbox_KEYBYTES``). ``data`` is
base64 of the 24-byte nonce followed by the box (``crypto_secretbox_open_easy``
on ``ciphertext + NONCEBYTES``).
"""

from __future__ import annotations

import base64
import binascii

import msgspec
import nacl.exceptions
import nacl.secret

from fleet_schemas import Frame
from fleet_schemas.envelope import check_frame
from fleet_schemas.errors import BadCiphertextError, EncryptionKeyMissingError
from fleet_schemas.owntracks import (
    ENCRYPTED,
    LOCATION,
    Encrypted,
    Location,
    decode_encrypted,
    decode_location,
    decode_message,
)

KEY_BYTES = nacl.secret.SecretBox.KEY_SIZE
_NONCE_BYTES = nacl.secret.SecretBox.NONCE_SIZE
_MAC_BYTES = nacl.secret.SecretBox.MACBYTES
_KMH = 1 / 3.6


class Other(msgspec.Struct, frozen=True):
    """A payload that is not a location (``lwt``, ``transition``, ``status``, ...): to be acknowledged."""

    type: str


def secretbox_key(secret: str) -> bytes:
    """The app's 32-byte key for a secret: its UTF-8 bytes, truncated or padded with zero bytes."""
    return secret.encode()[:KEY_BYTES].ljust(KEY_BYTES, b"\x00")


def encrypt(plaintext: bytes, key: bytes) -> bytes:
    """The payload an app with this key sends for ``plaintext`` (for tests and replays)."""
    box = bytes(nacl.secret.SecretBox(key).encrypt(plaintext))
    return msgspec.json.encode({"_type": ENCRYPTED, "data": base64.b64encode(box).decode()})


def _decrypt(envelope: Encrypted, key: bytes | None) -> bytes:
    if key is None:
        raise EncryptionKeyMissingError(
            "the app encrypts its payloads but the device has no encryption key:"
            " register it with `fleet devices add --kind owntracks ... --encryption-key`,"
            " or clear the app's encryption key"
        )
    try:
        box = base64.b64decode(envelope.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadCiphertextError(f"data is not base64: {exc}") from exc
    if len(box) < _NONCE_BYTES + _MAC_BYTES:
        raise BadCiphertextError(f"data holds {len(box)} bytes, less than a nonce and a MAC")
    try:
        return nacl.secret.SecretBox(key).decrypt(box)
    except nacl.exceptions.CryptoError as exc:
        raise BadCiphertextError(
            "data does not open under the device's encryption key: another key, or altered"
        ) from exc


def read_payload(raw: bytes, key: bytes | None) -> Location | Other:
    """Decrypt (if encrypted) and decode one OwnTracks payload, or raise a :class:`FleetSchemaError`.

    ``key`` is the device's :func:`secretbox_key`, None when it has none.
    """
    head = decode_message(raw)
    if head.type == ENCRYPTED:
        raw = _decrypt(decode_encrypted(raw), key)
        head = decode_message(raw)
        if head.type == ENCRYPTED:
            raise BadCiphertextError("an encrypted payload holds another encrypted payload")
    if head.type != LOCATION:
        return Other(head.type)
    return decode_location(raw)


_PLUGGED = {1: False, 2: True, 3: True}
"""OwnTracks' battery status: unplugged, charging, full on the charger (0, unknown, says nothing)"""


def _known(value: float | None) -> float | None:
    """None for CoreLocation's negative "unknown"."""
    return None if value is None or value < 0 else value


def to_frame(location: Location, device: str, bus: str) -> Frame:
    """The frame of a location from ``device`` on ``bus``, range-checked as any frame, or a typed error."""
    cog = _known(location.cog)
    speed = _known(location.vel)
    frame = Frame(
        device=device,
        bus=bus,
        seq=location.tst * 1000,
        time_ms=location.tst * 1000,
        lat=location.lat,
        lon=location.lon,
        accuracy_m=_known(location.acc),
        speed_mps=None if speed is None else speed * _KMH,
        heading_deg=None if cog is None else cog % 360.0,
        altitude_m=location.alt,
        source="phone",
        battery_pct=location.batt if location.batt is not None and 0 <= location.batt <= 100 else None,
        charging=_PLUGGED.get(location.bs) if type(location.bs) is int else None,  # not a JSON true
    )
    return check_frame(frame)


def read_frame(raw: bytes, key: bytes | None, device: str, bus: str) -> Frame | Other:
    """:func:`read_payload` then :func:`to_frame`: a frame, an :class:`Other` to acknowledge, or an error."""
    payload = read_payload(raw, key)
    return payload if isinstance(payload, Other) else to_frame(payload, device, bus)
