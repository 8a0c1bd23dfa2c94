"""The functional core of ingest: a micro-batch of MQTT messages in, accepted frames and rejections out.

No I/O: the caller passes the key lookup, the device registry view, the
last accepted fix of each bus it knows and the clock. Every message ends up
either as accepted frames or as rejected rows (with the raw bytes), never
nowhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import msgspec

from fleet_processing.filters import FilterPolicy, PreviousFix, check_frame
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


class Rejected(msgspec.Struct, frozen=True, array_like=True):
    """A message or frame that failed, kept with its raw bytes for ``rejected_frames``."""

    topic: str
    reason: str
    detail: str
    device: str | None
    seq: int | None
    raw: bytes


BusKey = tuple[str, str]
"""(operator, bus)"""


class Assessment(msgspec.Struct):
    accepted: list[Accepted]
    rejected: list[Rejected]
    latest: dict[BusKey, PreviousFix]
    """each bus's newest accepted fix after this batch (for the caller's cache)"""


def assess(
    messages: Iterable[Incoming],
    keys: KeyLookup,
    devices: Callable[[str], DeviceInfo | None],
    previous: Mapping[BusKey, PreviousFix],
    policy: FilterPolicy,
    now_ms: int,
) -> Assessment:
    """Verify and check every frame of every message."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    latest: dict[BusKey, PreviousFix] = {}
    for message in messages:
        try:
            address = parse_topic(message.topic)
            batch = open_envelope(message.payload, keys, topic_device=address.device)
        except FleetSchemaError as exc:
            claimed = message.topic.split("/")[3] if message.topic.count("/") == 4 else None
            rejected.append(Rejected(message.topic, exc.code, exc.message, claimed, None, message.payload))
            continue
        device_reason, device_detail = _device_reason(devices(batch.device), address.operator, batch.device)
        for frame in batch.frames:
            bus_key = (address.operator, frame.bus)
            before = latest.get(bus_key) or previous.get(bus_key)
            reason, detail = device_reason, device_detail
            if reason is None:
                reason = check_frame(policy, frame, now_ms, before)
                detail = f"failed the {reason} check" if reason else ""
            if reason is not None:
                rejected.append(
                    Rejected(message.topic, reason, detail, frame.device, frame.seq, encode_frame(frame))
                )
                continue
            accepted.append(Accepted(address.operator, batch.key_id, frame))
            if before is None or (frame.time_ms, frame.seq) > (before.time_ms, before.seq):
                latest[bus_key] = PreviousFix(frame.time_ms, frame.seq, frame.lat, frame.lon)
    return Assessment(accepted=accepted, rejected=rejected, latest=latest)


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
