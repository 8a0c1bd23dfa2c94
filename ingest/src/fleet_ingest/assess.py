"""The functional core of ingest: a micro-batch of MQTT messages in, accepted frames and rejections out.

No I/O: the caller passes the key lookup, the device registry view, the
track of each bus it knows and the clock. Every message ends up either as
accepted frames or as rejected rows (with the raw bytes), never nowhere.

A frame's bus must be the bus its device is registered for, or it is rejected
as ``bus_mismatch``: the key proves which device signed it, and only the
registry says which bus that device rides. Rewriting the bus from the registry
instead would store something the device never signed and hide a misconfigured
unit.

Not every input is a signed envelope on a device's topic: a driver's phone
posts over HTTP with a device token, an OwnTracks app publishes its own JSON
under its broker login. Their front (``fleet_ingest.http_front``, the OwnTracks
consumer) authenticates the device, decodes the input into frames and hands
them in as :class:`Authenticated` on the message; from there they meet the same
device, bus and track checks, with the same reason codes. A front that could
not decode the input passes the reason instead of frames, so the raw bytes are
kept in ``rejected_frames`` like any bad message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import msgspec

from fleet_processing.filters import BusTrack, FilterPolicy, judge
from fleet_schemas import (
    FleetSchemaError,
    Frame,
    KeyLookup,
    VerifiedBatch,
    encode_frame,
    open_envelope,
    parse_topic,
)


class DeviceInfo(msgspec.Struct, frozen=True):
    """What ingest needs to know of a registered device."""

    operator: str
    bus: str
    active: bool


class Authenticated(msgspec.Struct, frozen=True, array_like=True):
    """What a front made of an input whose device it authenticated otherwise than by a signature."""

    device: str
    key_id: str
    """the credential that authenticated it (a device token's id), stored as ``positions.key_id``"""
    frames: list[Frame]
    reason: str | None = None
    """a ``FleetSchemaError`` code when the input could not be decoded (then no frames)"""
    detail: str = ""


class Incoming(msgspec.Struct, frozen=True, array_like=True):
    """One message as the consumer received it (or one request, as an HTTP front did)."""

    topic: str
    payload: bytes
    authenticated: Authenticated | None = None
    """set by fronts that authenticate and decode themselves; None for signed envelopes"""


class Accepted(msgspec.Struct, frozen=True, array_like=True):
    """A frame that passed every check, with what the row needs beyond the frame."""

    operator: str
    key_id: str
    frame: Frame
    message: int = 0
    """index of the message it came in, within its micro-batch"""


class Rejected(msgspec.Struct, frozen=True, array_like=True):
    """A message or frame that failed, kept with its raw bytes for ``rejected_frames``."""

    topic: str
    reason: str
    detail: str
    device: str | None
    seq: int | None
    raw: bytes
    message: int = 0
    """index of the message it came in, within its micro-batch"""


BusKey = tuple[str, str]
"""(operator, bus)"""


class Assessment(msgspec.Struct):
    accepted: list[Accepted]
    rejected: list[Rejected]
    tracks: dict[BusKey, BusTrack]
    """each bus's track after this batch, for the buses it touched (for the caller's cache)"""


def claimed_device(topic: str) -> str | None:
    """The device a topic names, even where the topic is not a valid fleet topic."""
    return topic.split("/")[3] if topic.count("/") == 4 else None


def claimed_by(message: Incoming) -> str | None:
    """The device a message comes from, as far as it can be told without verifying it."""
    if message.authenticated is not None:
        return message.authenticated.device
    return claimed_device(message.topic)


def assess(
    messages: Iterable[Incoming],
    keys: KeyLookup,
    devices: Callable[[str], DeviceInfo | None],
    previous: Mapping[BusKey, BusTrack],
    policy: FilterPolicy,
    now_ms: int,
    first_index: int = 0,
) -> Assessment:
    """Verify and check every frame of every message; the first is message ``first_index`` of its batch."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    tracks: dict[BusKey, BusTrack] = {}
    for index, message in enumerate(messages, first_index):
        auth = message.authenticated
        if auth is not None and auth.reason is not None:  # the front could not decode it
            rejected.append(
                Rejected(message.topic, auth.reason, auth.detail, auth.device, None, message.payload, index)
            )
            continue
        try:
            batch, operator = _opened(message, keys, devices)
        except FleetSchemaError as exc:
            rejected.append(
                Rejected(
                    message.topic, exc.code, exc.message, claimed_by(message), None, message.payload, index
                )
            )
            continue
        device = devices(batch.device)
        device_reason, device_detail = _device_reason(device, operator, batch.device)
        for frame in batch.frames:
            reason, detail = device_reason, device_detail
            if reason is None and frame.device != batch.device:
                reason = "device_mismatch"
                detail = f"frame device {frame.device!r} != authenticated device {batch.device!r}"
            if reason is None and device is not None and frame.bus != device.bus:
                reason = "bus_mismatch"
                detail = f"device {batch.device!r} is registered for bus {device.bus!r}, not {frame.bus!r}"
            if reason is None:
                bus_key = (operator, frame.bus)
                track, reason = judge(policy, tracks.get(bus_key) or previous.get(bus_key), frame, now_ms)
                if track is not None:
                    tracks[bus_key] = track
                detail = f"failed the {reason} check" if reason else ""
            if reason is not None:
                rejected.append(
                    Rejected(
                        message.topic, reason, detail, frame.device, frame.seq, encode_frame(frame), index
                    )
                )
                continue
            accepted.append(Accepted(operator, batch.key_id, frame, index))
    return Assessment(accepted=accepted, rejected=rejected, tracks=tracks)


def _opened(
    message: Incoming, keys: KeyLookup, devices: Callable[[str], DeviceInfo | None]
) -> tuple[VerifiedBatch, str]:
    """The message's verified frames and the operator they are stored under, or a FleetSchemaError.

    A signed envelope names its operator in its topic; an authenticated input is
    its registered device's (an unknown device is rejected by the device check).
    """
    auth = message.authenticated
    if auth is None:
        address = parse_topic(message.topic)
        return open_envelope(message.payload, keys, topic_device=address.device), address.operator
    device = devices(auth.device)
    operator = device.operator if device is not None else ""
    return VerifiedBatch(key_id=auth.key_id, device=auth.device, frames=auth.frames), operator


def _device_reason(device: DeviceInfo | None, topic_operator: str, name: str) -> tuple[str | None, str]:
    if device is None:
        return "device_unknown", f"device {name!r} is not registered"
    if not device.active:
        return "device_disabled", f"device {name!r} is disabled"
    if device.operator != topic_operator:
        return (
            "operator_mismatch",
            f"device {name!r} belongs to operator {device.operator!r}, not {topic_operator!r}",
        )
    return None, ""
