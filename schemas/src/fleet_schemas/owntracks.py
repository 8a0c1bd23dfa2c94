"""The OwnTracks app's MQTT contract: its topics and the JSON it publishes.

The app publishes to ``owntracks/{user}/{device}`` (its ``pubTopicBase``
default, ``owntracks/%u/%d``, with the broker login as ``%u``): a JSON object
whose ``_type`` says what it is. Only ``location`` is a position; the others
(``lwt``, ``transition``, ``waypoint``, ``status``, ``card``, ...) are the
app's own business. With a secret configured, the app sends
``{"_type": "encrypted", "data": base64(nonce || secretbox)}`` instead, the
plaintext being one of the others. Field meanings and units are the
booklet's (owntracks.org/booklet/tech/json): ``tst`` epoch seconds, ``vel``
km/h, ``acc``/``vac``/``alt`` m, ``cog`` degrees, ``batt`` percent, ``bs`` the battery's status.

Turning these into fleet frames (SI units, decryption) is
``fleet_processing.owntracks``'s job; this module only says what the bytes
are, decoding them into these types or raising a typed error. Numbers sent
as strings (Greenwich, older apps) are read as numbers, as the OwnTracks
Recorder does (``recorder.c``, ``handle_message``: it normalises ``tst``,
``lat``, ``lon`` and ``acc`` from strings).
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from fleet_schemas.envelope import _DECODE_ERRORS, _classify
from fleet_schemas.errors import BadTopicError, TooLargeError
from fleet_schemas.frames import LATEST_FIX_MS, Latitude, Longitude
from fleet_schemas.topics import IDENTIFIER_PATTERN, check_identifier, shared

ROOT = "owntracks"
MAX_PAYLOAD_BYTES = 64 * 1024
"""An app's location is a few hundred bytes; ``card`` with a face image the largest, a few KB."""
LOCATION = "location"
ENCRYPTED = "encrypted"
KNOWN_TYPES = frozenset(
    {
        "beacon",
        "card",
        "cmd",
        "configuration",
        "dump",
        "encrypted",
        "location",
        "lwt",
        "request",
        "status",
        "steps",
        "transition",
        "waypoint",
        "waypoints",
    }
)
"""``_type`` values the apps send (booklet's table, plus the Recorder's ``dump``): metric labels."""

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


class TrackerAddress(msgspec.Struct, frozen=True):
    """Who an OwnTracks topic belongs to: the app's user (its broker login) and device id."""

    user: str
    device: str


def owntracks_topic(user: str, device: str) -> str:
    """The topic an OwnTracks app publishes its locations to."""
    return f"{ROOT}/{check_identifier(user, 'OwnTracks user')}/{check_identifier(device, 'device')}"


def owntracks_command_topic(user: str, device: str) -> str:
    """The topic the app listens to for remote commands (``reportLocation``, ...)."""
    return f"{owntracks_topic(user, device)}/cmd"


def owntracks_subscription(share_group: str | None = None) -> str:
    """Filter for every OwnTracks app's location topic; a share group splits them across consumers."""
    return shared(f"{ROOT}/+/+", share_group)


def is_owntracks_topic(topic: str) -> bool:
    return topic.startswith(f"{ROOT}/")


def parse_owntracks_topic(topic: str) -> TrackerAddress:
    """Split ``owntracks/{user}/{device}``, or raise BadTopicError."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != ROOT:
        raise BadTopicError(f"topic {topic!r} is not {ROOT}/<user>/<device>")
    if not (_IDENTIFIER.match(parts[1]) and _IDENTIFIER.match(parts[2])):
        raise BadTopicError(f"topic {topic!r} has an invalid user or device id")
    return TrackerAddress(user=parts[1], device=parts[2])


class Message(msgspec.Struct, frozen=True):
    """Any OwnTracks payload, read only as far as its type."""

    type: str = msgspec.field(name="_type")


class Encrypted(msgspec.Struct, frozen=True):
    """``_type: encrypted``: base64 of the 24-byte nonce followed by the secretbox."""

    data: str


class Location(msgspec.Struct, frozen=True):
    """``_type: location``, in the app's units; absent fields are None.

    Unknown fields (``t``, ``conn``, ``m``, ``BSSID``, ``inregions``, ...) are
    ignored, as new app versions add them.
    """

    lat: Latitude
    lon: Longitude
    tst: Annotated[int, msgspec.Meta(ge=0, le=LATEST_FIX_MS // 1000)]
    """fix time, epoch seconds"""
    acc: float | None = None
    """horizontal accuracy, m"""
    alt: float | None = None
    """altitude, m"""
    vac: float | None = None
    """vertical accuracy, m"""
    vel: float | None = None
    """speed, km/h"""
    cog: float | None = None
    """course over ground, degrees"""
    batt: float | None = None
    """battery level, percent"""
    bs: object = None
    """battery status: 0 unknown, 1 unplugged, 2 charging, 3 full (plugged in); anything else unknown,
    as a malformed battery must not cost the position"""
    tid: str | None = None
    """tracker id, two characters shown on the app's map"""
    created_at: float | None = None
    """when the app made this message, epoch seconds (a resent message keeps it)"""


_MESSAGE = msgspec.json.Decoder(Message)
_ENCRYPTED = msgspec.json.Decoder(Encrypted)
_LOCATION = msgspec.json.Decoder(Location, strict=False)


def decode_message(raw: bytes) -> Message:
    """Any payload's type, or a typed error (``too_large`` past MAX_PAYLOAD_BYTES)."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise TooLargeError(f"{len(raw)} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        return _MESSAGE.decode(raw)
    except _DECODE_ERRORS as exc:
        raise _classify(exc, "payload") from exc


def decode_encrypted(raw: bytes) -> Encrypted:
    """A payload of ``_type: encrypted``, or a typed error."""
    try:
        return _ENCRYPTED.decode(raw)
    except _DECODE_ERRORS as exc:
        raise _classify(exc, "encrypted") from exc


def decode_location(raw: bytes) -> Location:
    """A payload of ``_type: location``, or a typed error naming the field."""
    try:
        return _LOCATION.decode(raw)
    except _DECODE_ERRORS as exc:
        raise _classify(exc, "location") from exc
