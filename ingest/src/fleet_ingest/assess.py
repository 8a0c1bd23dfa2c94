"""The functional core of ingest: a micro-batch of MQTT messages in, accepted frames and rejections out.

No I/O: the caller passes the key lookup, the device registry view, the
track of each bus it knows and the clock. Every message ends up either as
accepted frames or as rejected rows (with the raw bytes), never nowhere.

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
from fleet_schemas import FleetSchemaError, Frame, KeyLookup, encode_frame, open_envelope, parse_topic


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


class Assessment(msgspec.Struct):
    accepted: list[Accepted]
    rejected: list[Rejected]
    tracks: dict[BusKey, BusTrack]
    """each bus's track after this batch, for the buses it touched (for the caller's cache)"""


def claimed_device(topic: str) -> str | None:
    """The device a topic names, even where the topic is not a valid fleet topic."""
    return topic.split("/")[3] if topic.count("/") == 4 else None


def assess(
    messages: Iterable[Incoming],
    keys: KeyLookup,
    devices: Callable[[str], DeviceInfo | None],
    previous: Mapping[BusKey, BusTrack],
    policy: FilterPolicy,
    now_ms: int,
) -> Assessment:
    """Verify and check every frame of every message."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    tracks: dict[BusKey, BusTrack] = {}
    for index, message in enumerate(messages):
        try:
            address = parse_topic(message.topic)
            batch = open_envelope(message.payload, keys, topic_device=address.device)
        except FleetSchemaError as exc:
            rejected.append(
                Rejected(
                    message.topic,
                    exc.code,
                    exc.message,
                    claimed_device(message.topic),
                    None,
                    message.payload,
                    index,
                )
            )
            continue
        device = devices(batch.device)
        device_reason, device_detail = _device_reason(device, address.operator, batch.device)
        for frame in batch.frames:
            reason, detail = device_reason, device_detail
            if reason is None and device is not None and frame.bus != device.bus:
                reason = "bus_mismatch"
                detail = f"device {batch.device!r} is registered for bus {device.bus!r}, not {frame.bus!r}"
            if reason is None:
                bus_key = (address.operator, frame.bus)
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
            accepted.append(Accepted(address.operator, batch.key_id, frame, index))
    return Assessment(accepted=accepted, rejected=rejected, tracks=tracks)


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
