"""OwnTracks apps' messages, as ingest's checks take them: authenticated by the broker login they came under.

An app signs nothing. The broker's ACL lets only its own login publish on
``owntracks/<user>/<device>`` (``fleet_store.dynsec``), so the topic says who
sent a message once the registry confirms that this user is the device's
login. The message is then decoded (and decrypted with the device's secret)
into its frame (``fleet_processing.owntracks``) and handed to ``assess`` as
:class:`~fleet_ingest.assess.Authenticated`, where it meets the same device,
bus and track checks as a signed batch. A message the registry does not
confirm, or that does not decode, is handed in with its reason instead, so its
bytes are kept in ``rejected_frames``. The app's messages that hold no
position (its last will, a geofence transition, its status) are not frames:
they are acknowledged and counted by ``_type``, not stored.

No I/O: the caller passes the registry's view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import msgspec

from fleet_ingest.assess import Authenticated, DeviceInfo, Incoming
from fleet_processing.owntracks import Other, read_frame
from fleet_schemas import FleetSchemaError
from fleet_schemas.owntracks import is_owntracks_topic, parse_owntracks_topic


class Tracker(msgspec.Struct, frozen=True):
    """What ingest needs to know of a registered OwnTracks app: its broker login and payload key."""

    user: str
    key: bytes | None
    """the app's secretbox key (fleet_processing.owntracks.secretbox_key), None if it sends plain JSON"""

    def __repr__(self) -> str:  # never print the key
        return f"Tracker(user={self.user!r}, encrypted={self.key is not None})"


def _refused(device: str, code: str, detail: str) -> Authenticated:
    return Authenticated(device=device, key_id="", frames=[], reason=code, detail=detail)


def authenticate(
    topic: str,
    payload: bytes,
    trackers: Callable[[str], Tracker | None],
    devices: Callable[[str], DeviceInfo | None],
) -> Authenticated | Other:
    """One message on an OwnTracks topic: its frame, the reason it is refused, or a type to acknowledge."""
    try:
        address = parse_owntracks_topic(topic)
    except FleetSchemaError as exc:
        return _refused(topic.rsplit("/", 1)[-1], exc.code, exc.message)
    tracker = trackers(address.device)
    device = devices(address.device)
    if tracker is None or device is None or tracker.user != address.user:
        return _refused(
            address.device,
            "device_unknown",
            f"no OwnTracks device {address.device!r} of user {address.user!r} is registered",
        )
    try:
        read = read_frame(payload, tracker.key, address.device, device.bus)
    except FleetSchemaError as exc:
        return _refused(address.device, exc.code, exc.message)
    if isinstance(read, Other):
        return read
    return Authenticated(device=address.device, key_id=f"owntracks:{address.user}", frames=[read])


def sort_out(
    messages: Iterable[tuple[str, bytes]],
    trackers: Callable[[str], Tracker | None],
    devices: Callable[[str], DeviceInfo | None],
) -> tuple[list[Incoming], list[str]]:
    """Broker messages as ``assess`` takes them, and the ``_type`` of each OwnTracks message set aside."""
    incoming: list[Incoming] = []
    ignored: list[str] = []
    for topic, payload in messages:
        if not is_owntracks_topic(topic):
            incoming.append(Incoming(topic, payload))
            continue
        read = authenticate(topic, payload, trackers, devices)
        if isinstance(read, Other):
            ignored.append(read.type)
        else:
            incoming.append(Incoming(topic, payload, read))
    return incoming, ignored
