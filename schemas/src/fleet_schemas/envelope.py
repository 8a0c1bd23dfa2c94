"""The signed envelope: how a batch travels and how a server trusts it.

Wire layout (msgpack array, or JSON array for debugging)::

    [version, key_id, payload, signature]

``payload`` is the exact bytes of an encoded :class:`~fleet_schemas.frames.Batch`
(in the same encoding as the envelope) and ``signature`` is
HMAC-SHA256(key secret, payload). The MAC covers those bytes as sent, so the
verifier never re-encodes anything; the key id lets keys rotate.

:func:`open_envelope` checks, in order: size, envelope shape, version,
signature presence, key, signature (constant time), payload, frame count, and
that the topic device, the payload device, every frame's device and the key's
owner are one device. It raises only :class:`FleetSchemaError` subclasses.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

from fleet_schemas.errors import (
    BadSignatureError,
    DeviceMismatchError,
    FleetSchemaError,
    InvalidFieldError,
    OutOfRangeError,
    TooLargeError,
    TooManyFramesError,
    UndecodableError,
    UnknownKeyError,
    UnsignedError,
    WrongVersionError,
)
from fleet_schemas.frames import Batch, Frame

FORMAT_VERSION = 1
MAX_FRAMES_PER_BATCH = 2_000
MAX_MESSAGE_BYTES = 512 * 1024
"""Largest signed envelope (an MQTT payload) a server decodes; larger is ``too_large``."""
MAX_PACKET_BYTES = MAX_MESSAGE_BYTES + 1024
"""Largest MQTT packet the broker accepts and ingest advertises: a largest envelope plus room for
the fixed header, the longest frames topic, the packet id and properties. The broker refuses a
bigger PUBLISH at publish time (``max_packet_size``), so nothing is acknowledged and then dropped."""
SIGNATURE_BYTES = 32
KEY_SECRET_MIN_BYTES = 16

Encoding = Literal["msgpack", "json"]


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    """A batch as it travels: version, key id, payload bytes, signature."""

    version: int
    key_id: str
    payload: bytes
    signature: bytes


class DeviceKey(msgspec.Struct, frozen=True):
    """A signing key: its id, the device that owns it and its secret."""

    key_id: str
    device: str
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < KEY_SECRET_MIN_BYTES:
            raise ValueError(f"key secret must be at least {KEY_SECRET_MIN_BYTES} bytes")

    def __repr__(self) -> str:  # never print the secret
        return f"DeviceKey(key_id={self.key_id!r}, device={self.device!r})"


class VerifiedBatch(msgspec.Struct, frozen=True):
    """A batch whose signature, key and device were all checked."""

    key_id: str
    device: str
    frames: list[Frame]


KeyLookup = Callable[[str], DeviceKey | None]
"""Returns the usable key for a key id, or None if unknown or revoked."""

_ENCODERS: dict[Encoding, msgspec.msgpack.Encoder | msgspec.json.Encoder] = {
    "msgpack": msgspec.msgpack.Encoder(),
    "json": msgspec.json.Encoder(),
}
_ENVELOPE_DECODERS: dict[Encoding, msgspec.msgpack.Decoder[Envelope] | msgspec.json.Decoder[Envelope]] = {
    "msgpack": msgspec.msgpack.Decoder(Envelope),
    "json": msgspec.json.Decoder(Envelope),
}
_BATCH_DECODERS: dict[Encoding, msgspec.msgpack.Decoder[Batch] | msgspec.json.Decoder[Batch]] = {
    "msgpack": msgspec.msgpack.Decoder(Batch),
    "json": msgspec.json.Decoder(Batch),
}


class _Head(msgspec.Struct, array_like=True, frozen=True):
    """Just the version of an envelope-shaped array: enough to tell a future format from garbage."""

    version: int


_HEAD_DECODERS: dict[Encoding, msgspec.msgpack.Decoder[_Head] | msgspec.json.Decoder[_Head]] = {
    "msgpack": msgspec.msgpack.Decoder(_Head),
    "json": msgspec.json.Decoder(_Head),
}
# msgspec raises UnicodeDecodeError, not a MsgspecError, for invalid UTF-8 in a msgpack str, and
# RecursionError when skipping a deeply nested value (a depth bomb such as b"\x91" * 100_000):
# untrusted bytes are only ever decoded into types, and these three are the ways that can fail.
_DECODE_ERRORS = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)
_RANGE_MESSAGE = re.compile(r"^Expected `[^`]+` (?:>=|<=|>|<) |of length (?:>=|<=)")


def sign(secret: bytes, payload: bytes) -> bytes:
    """HMAC-SHA256 of the exact payload bytes."""
    return hmac.digest(secret, payload, hashlib.sha256)


def encode_batch(frames: Sequence[Frame], device: str, encoding: Encoding = "msgpack") -> bytes:
    """Encode frames as a batch payload (unsigned)."""
    return _ENCODERS[encoding].encode(Batch(device=device, frames=list(frames)))


def seal(frames: Sequence[Frame], key: DeviceKey, encoding: Encoding = "msgpack") -> bytes:
    """Encode and sign frames of ``key.device`` into one envelope."""
    return _seal_payload(encode_batch(frames, key.device, encoding), key, encoding)


class _EncodedBatch(msgspec.Struct, array_like=True, frozen=True):
    """Encodes exactly as :class:`Batch`, from frames that are already msgpack bytes."""

    device: str
    frames: list[msgspec.Raw]


def encode_frame(frame: Frame) -> bytes:
    """One frame as msgpack bytes, as it is stored in an outbox and embedded in a batch."""
    return _ENCODERS["msgpack"].encode(frame)


def seal_encoded(encoded_frames: Sequence[bytes], key: DeviceKey) -> bytes:
    """Sign frames already encoded by :func:`encode_frame` without decoding them again."""
    payload = _ENCODERS["msgpack"].encode(_EncodedBatch(key.device, [msgspec.Raw(f) for f in encoded_frames]))
    return _seal_payload(payload, key, "msgpack")


def _seal_payload(payload: bytes, key: DeviceKey, encoding: Encoding) -> bytes:
    envelope = Envelope(FORMAT_VERSION, key.key_id, payload, sign(key.secret, payload))
    return _ENCODERS[encoding].encode(envelope)


def detect_encoding(raw: bytes | bytearray) -> Encoding:
    """JSON envelopes start with '[' (after optional whitespace); msgpack ones never do."""
    return "json" if raw.lstrip()[:1] == b"[" else "msgpack"


def _reason(exc: Exception) -> str:
    return "nested too deeply to decode" if isinstance(exc, RecursionError) else str(exc)


def _classify(exc: Exception, what: str) -> FleetSchemaError:
    """Turn a msgspec error into ours, keeping its text (it names the field path)."""
    text = _reason(exc)
    if isinstance(exc, msgspec.ValidationError):
        if _RANGE_MESSAGE.search(text):
            return OutOfRangeError(f"{what}: {text}")
        return InvalidFieldError(f"{what}: {text}")
    return UndecodableError(f"{what}: {text}")


def _decode_envelope(raw: bytes | bytearray, encoding: Encoding) -> Envelope:
    try:
        envelope = _ENVELOPE_DECODERS[encoding].decode(raw)
    except _DECODE_ERRORS as exc:
        raise _explain_bad_envelope(raw, encoding, exc) from exc
    if envelope.version != FORMAT_VERSION:
        raise WrongVersionError(f"format version {envelope.version}, expected {FORMAT_VERSION}")
    return envelope


def _explain_bad_envelope(raw: bytes | bytearray, encoding: Encoding, exc: Exception) -> FleetSchemaError:
    """An array led by another version is a future format; anything else keeps msgspec's reason.

    The second look decodes into a type too, never into plain Python values: an untyped decode
    of untrusted bytes recurses as deep as the input nests.
    """
    try:
        head = _HEAD_DECODERS[encoding].decode(raw)
    except _DECODE_ERRORS:
        return UndecodableError(f"envelope: {_reason(exc)}")
    if head.version != FORMAT_VERSION:
        return WrongVersionError(f"format version {head.version}, expected {FORMAT_VERSION}")
    return _classify(exc, "envelope")


def open_envelope(raw: bytes | bytearray, keys: KeyLookup, topic_device: str | None = None) -> VerifiedBatch:
    """Verify and decode one message, or raise a typed :class:`FleetSchemaError`.

    ``topic_device`` is the device named by the MQTT topic the message came on;
    pass None only where there is no topic (files, tests).
    """
    if len(raw) > MAX_MESSAGE_BYTES:
        raise TooLargeError(f"{len(raw)} bytes, limit {MAX_MESSAGE_BYTES}")
    encoding = detect_encoding(raw)
    envelope = _decode_envelope(raw, encoding)
    if not envelope.signature:
        raise UnsignedError("the envelope carries no signature")
    key = keys(envelope.key_id)
    if key is None:
        raise UnknownKeyError(f"key id {envelope.key_id!r} is unknown or revoked")
    if not hmac.compare_digest(sign(key.secret, envelope.payload), envelope.signature):
        raise BadSignatureError(f"signature does not match the payload under key {envelope.key_id!r}")
    try:
        batch = _BATCH_DECODERS[encoding].decode(envelope.payload)
    except _DECODE_ERRORS as exc:
        raise _classify(exc, "payload") from exc
    if not 1 <= len(batch.frames) <= MAX_FRAMES_PER_BATCH:
        raise TooManyFramesError(f"{len(batch.frames)} frames, allowed 1..{MAX_FRAMES_PER_BATCH}")
    _check_one_device(batch, key, topic_device)
    return VerifiedBatch(key_id=key.key_id, device=batch.device, frames=batch.frames)


def decode_batch(raw: bytes | bytearray, encoding: Encoding = "json") -> Batch:
    """An unsigned batch (a front that authenticated its device otherwise), or a typed FleetSchemaError."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise TooLargeError(f"{len(raw)} bytes, limit {MAX_MESSAGE_BYTES}")
    try:
        batch = _BATCH_DECODERS[encoding].decode(raw)
    except _DECODE_ERRORS as exc:
        raise _classify(exc, "batch") from exc
    if not 1 <= len(batch.frames) <= MAX_FRAMES_PER_BATCH:
        raise TooManyFramesError(f"{len(batch.frames)} frames, allowed 1..{MAX_FRAMES_PER_BATCH}")
    return batch


_FRAME_DECODER = msgspec.msgpack.Decoder(Frame)
_FIELD_INDEX = re.compile(r"\$\[(\d+)\]")


def check_frame(frame: Frame) -> Frame:
    """A frame built in code (by a front's decoder), range-checked as a decoded one, or a typed error.

    A Struct's constructor checks no constraint: decoding its own encoding
    applies them all. The error names the field (``$.speed_mps``), not its
    index in the array-like frame.
    """
    try:
        return _FRAME_DECODER.decode(encode_frame(frame))
    except _DECODE_ERRORS as exc:
        error = _classify(exc, "frame")
        fields = Frame.__struct_fields__
        raise type(error)(_FIELD_INDEX.sub(lambda m: f"$.{fields[int(m.group(1))]}", error.message)) from exc


def _check_one_device(batch: Batch, key: DeviceKey, topic_device: str | None) -> None:
    if batch.device != key.device:
        raise DeviceMismatchError(f"payload device {batch.device!r} does not own key {key.key_id!r}")
    if topic_device is not None and topic_device != batch.device:
        raise DeviceMismatchError(f"topic device {topic_device!r} != payload device {batch.device!r}")
    for index, frame in enumerate(batch.frames):
        if frame.device != batch.device:
            raise DeviceMismatchError(
                f"frame {index} device {frame.device!r} != batch device {batch.device!r}"
            )
