"""Whatever a device sends, ingest's core and store end with every message stored or rejected.

Arbitrary bytes, and batches signed with a registered device's real key whose
frames hold arbitrary values (what a buggy or hostile unit can send), go
through ``assess`` and ``store_messages`` against the real PostgreSQL: nothing
raises, and each message ends as stored frames or as rejected rows with its
bytes.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet_ingest.assess import DeviceInfo, Incoming, assess
from fleet_ingest.storage import RAW_KEPT_BYTES
from fleet_processing.filters import FilterPolicy
from fleet_schemas import DeviceKey, Envelope, encode_frame, sign
from fleet_testing.frames import frames, new_key
from fleet_testing.ingest import store_assessed

pytestmark = pytest.mark.stack

KEY = new_key("unit-1")
DEVICE = DeviceInfo("op-a", "BUS-01", active=True)
TOPIC = "fleet/v1/op-a/unit-1/frames"
NOW_MS = int(time.time() * 1000)

values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.lists(st.integers(-(2**63), 2**64 - 1), max_size=3)
)


def keys(key_id: str) -> DeviceKey | None:
    return KEY if key_id == KEY.key_id else None


def devices(device: str) -> DeviceInfo | None:
    return DEVICE if device == KEY.device else None


@st.composite
def hostile_frame(draw: st.DrawFn) -> list[Any]:
    """A frame of the registered bus near now, with up to three fields replaced or appended at random."""
    fields: list[Any] = list(msgspec.msgpack.decode(encode_frame(draw(frames(KEY.device)))))
    fields[1], fields[3] = DEVICE.bus, NOW_MS - draw(st.integers(0, 600_000))
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(fields)))
        value = draw(values)
        if index == len(fields):
            fields.append(value)
        else:
            fields[index] = value
    return fields


@st.composite
def messages(draw: st.DrawFn) -> Incoming:
    if draw(st.booleans()):
        return Incoming(TOPIC, draw(st.binary(max_size=300)))
    payload = msgspec.msgpack.encode([KEY.device, draw(st.lists(hostile_frame(), min_size=1, max_size=4))])
    envelope = Envelope(1, KEY.key_id, payload, sign(KEY.secret, payload))
    return Incoming(TOPIC, msgspec.msgpack.encode(envelope))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(messages(), min_size=1, max_size=12))
def test_every_message_ends_stored_or_rejected(database_url: str, batch: list[Incoming]) -> None:
    outcome = assess(batch, keys, devices, {}, FilterPolicy(), NOW_MS)

    positions, rejected = store_assessed(database_url, batch, outcome)
    for good in outcome.accepted:
        key = (good.frame.device, good.frame.seq)
        assert key in positions or ("seq_conflict", encode_frame(good.frame)) in rejected
    for bad in outcome.rejected:
        assert (bad.reason, bad.raw[:RAW_KEPT_BYTES]) in rejected
    handled = {a.message for a in outcome.accepted} | {r.message for r in outcome.rejected}
    assert handled == set(range(len(batch)))
