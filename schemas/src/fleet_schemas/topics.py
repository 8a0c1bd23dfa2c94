"""The MQTT topic scheme, in one place.

``fleet/v1/{operator}/{device}/frames`` carries signed batches (QoS 1) and
``fleet/v1/{operator}/{device}/status`` the device's retained status.

The device named in the topic is only a routing hint that the broker's ACL
enforces per login. The server trusts a batch only when three agree: the
device in the topic, the device inside the signed payload, and the device that
owns the signing key (see :func:`fleet_schemas.envelope.open_envelope`).
"""

from __future__ import annotations

import re

import msgspec

from fleet_schemas.errors import BadIdentifierError, BadTopicError

ROOT = "fleet/v1"
FRAMES = "frames"
STATUS = "status"

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"
"""Operator, device and bus ids: 1-64 characters, never MQTT wildcards or '/'.

Anchored at the end with backslash-Z: in Python a dollar sign also matches before a final newline."""

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


class TopicAddress(msgspec.Struct, frozen=True):
    """Who a topic belongs to."""

    operator: str
    device: str
    kind: str


def check_identifier(value: str, what: str) -> str:
    """Return ``value`` if it can stand in a topic level, else raise."""
    if not _IDENTIFIER.match(value):
        raise BadIdentifierError(f"{what} {value!r} must match {IDENTIFIER_PATTERN}")
    return value


def frames_topic(operator: str, device: str) -> str:
    """Topic a device publishes its signed batches to."""
    return f"{ROOT}/{check_identifier(operator, 'operator')}/{check_identifier(device, 'device')}/{FRAMES}"


def status_topic(operator: str, device: str) -> str:
    """Retained topic with a device's online/offline status and backlog."""
    return f"{ROOT}/{check_identifier(operator, 'operator')}/{check_identifier(device, 'device')}/{STATUS}"


def shared(topic_filter: str, share_group: str | None) -> str:
    """``topic_filter`` split across the consumers of ``share_group``; as it is without one."""
    if share_group is None:
        return topic_filter
    return f"$share/{check_identifier(share_group, 'share group')}/{topic_filter}"


def frames_subscription(share_group: str | None = None) -> str:
    """Filter for every device's frames; a share group splits them across consumers."""
    return shared(f"{ROOT}/+/+/{FRAMES}", share_group)


def parse_topic(topic: str) -> TopicAddress:
    """Split a fleet topic into operator, device and kind, or raise BadTopicError."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != ROOT or parts[4] not in (FRAMES, STATUS):
        raise BadTopicError(f"topic {topic!r} is not {ROOT}/<operator>/<device>/{FRAMES}|{STATUS}")
    operator, device = parts[2], parts[3]
    if not (_IDENTIFIER.match(operator) and _IDENTIFIER.match(device)):
        raise BadTopicError(f"topic {topic!r} has an invalid operator or device id")
    return TopicAddress(operator=operator, device=device, kind=parts[4])
