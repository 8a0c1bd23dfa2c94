"""The functional core of ingest: a micro-batch of MQTT messages in, accepted frames and rejections out.

No I/O: the caller passes the key lookup, the device registry view, the
track of each bus it knows and the clock. Every message ends up either as
accepted frames or as rejected rows (with the raw bytes), never nowhere; an
OwnTracks app's message that holds no position (its last will, a geofence
transition) is the one exception, counted as ignored by its ``_type``.

A frame's bus must be the bus its device is registered for, or it is rejected
as ``bus_mismatch``: the key proves which device signed it, and only the
registry says which bus that device rides. Rewriting the bus from the registry
instead would store something the device never signed and hide a misconfigured
unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import msgspec

from fleet_processing.filters import BusTrack, FilterPolicy, judge
from fleet_processing.owntracks import Other, read_frame
from fleet_schemas import FleetSchemaError, Frame, KeyLookup, encode_frame, open_envelope, parse_topic
from fleet_schemas.owntracks import is_owntracks_topic, parse_owntracks_topic


class DeviceInfo(msgspec.Struct, frozen=True):
    """What ingest needs to know of a registered device."""

    operator: str
    bus: str
    active: bool


class Incoming(msgspec.Struct, frozen=True, array_like=True):
    """One message as the consumer received it."""

    topic: str
    payload: bytes


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


class Tracker(msgspec.Struct, frozen=True):
    """What ingest needs to know of a registered OwnTracks app: its broker login and payload key."""

    user: str
    key: bytes | None
    """the app's secretbox key (fleet_processing.owntracks.secretbox_key), None if it sends plain JSON"""

    def __repr__(self) -> str:  # never print the key
        return f"Tracker(user={self.user!r}, encrypted={self.key is not None})"


class Assessment(msgspec.Struct):
    accepted: list[Accepted]
    rejected: list[Rejected]
    tracks: dict[BusKey, BusTrack]
    """each bus's track after this batch, for the buses it touched (for the caller's cache)"""
    ignored: list[str] = msgspec.field(default_factory=list)
    """``_type`` of each OwnTracks message that holds no position (``lwt``, ``transition``, ...)"""


class _Opened(msgspec.Struct, frozen=True):
    """A message's frames, once what sent them is known; checked against the registry next."""

    operator: str
    device: str
    key_id: str
    frames: list[Frame]


def claimed_device(topic: str) -> str | None:
    """The device a topic names, even where the topic is not a valid fleet or OwnTracks topic."""
    if is_owntracks_topic(topic):
        return topic.split("/")[2] if topic.count("/") == 2 else None
    return topic.split("/")[3] if topic.count("/") == 4 else None


def _open_signed(message: Incoming, keys: KeyLookup) -> _Opened:
    address = parse_topic(message.topic)
    batch = open_envelope(message.payload, keys, topic_device=address.device)
    return _Opened(address.operator, batch.device, batch.key_id, batch.frames)


def _open_owntracks(
    message: Incoming,
    trackers: Callable[[str], Tracker | None],
    devices: Callable[[str], DeviceInfo | None],
) -> _Opened | Other | Rejected:
    """An OwnTracks app's message: its one frame, a type to acknowledge, or why it is refused.

    The app signs nothing: the broker's ACL (only its own login may publish on
    its topic) says who sent it, so the topic's user must be the one the device
    is registered with. Its bus and operator are the registry's.
    """
    address = parse_owntracks_topic(message.topic)
    tracker = trackers(address.device)
    device = devices(address.device)
    if tracker is None or device is None or tracker.user != address.user:
        return Rejected(
            message.topic,
            "device_unknown",
            f"no OwnTracks device {address.device!r} of user {address.user!r} is registered",
            address.device,
            None,
            message.payload,
        )
    read = read_frame(message.payload, tracker.key, address.device, device.bus)
    if isinstance(read, Other):
        return read
    return _Opened(device.operator, address.device, f"owntracks:{address.user}", [read])


def assess(
    messages: Iterable[Incoming],
    keys: KeyLookup,
    devices: Callable[[str], DeviceInfo | None],
    previous: Mapping[BusKey, BusTrack],
    policy: FilterPolicy,
    now_ms: int,
    trackers: Callable[[str], Tracker | None] = lambda _device: None,
) -> Assessment:
    """Verify and check every frame of every message (signed batches and OwnTracks apps' JSON)."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    ignored: list[str] = []
    tracks: dict[BusKey, BusTrack] = {}
    for index, message in enumerate(messages):
        try:
            opened = (
                _open_owntracks(message, trackers, devices)
                if is_owntracks_topic(message.topic)
                else _open_signed(message, keys)
            )
        except FleetSchemaError as exc:
            opened = Rejected(
                message.topic, exc.code, exc.message, claimed_device(message.topic), None, message.payload
            )
        if isinstance(opened, Other):
            ignored.append(opened.type)
            continue
        if isinstance(opened, Rejected):
            rejected.append(msgspec.structs.replace(opened, message=index))
            continue
        device = devices(opened.device)
        device_reason, device_detail = _device_reason(device, opened.operator, opened.device)
        for frame in opened.frames:
            reason, detail = device_reason, device_detail
            if reason is None and device is not None and frame.bus != device.bus:
                reason = "bus_mismatch"
                detail = f"device {opened.device!r} is registered for bus {device.bus!r}, not {frame.bus!r}"
            if reason is None:
                bus_key = (opened.operator, frame.bus)
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
            accepted.append(Accepted(opened.operator, opened.key_id, frame, index))
    return Assessment(accepted=accepted, rejected=rejected, tracks=tracks, ignored=ignored)


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
