"""OwnTracks messages through ingest's core and store: each ends stored, rejected with a reason, or ignored.

What an app (or anything publishing on its topic) can send: arbitrary bytes,
arbitrary location fields, plain or encrypted under the right or a wrong key,
and the app's other message types. ``sort_out``, ``assess`` and
``store_messages`` run against the real PostgreSQL; nothing raises, and no
message is left out.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet_ingest.assess import DeviceInfo, assess
from fleet_ingest.owntracks import Tracker, sort_out
from fleet_ingest.storage import RAW_KEPT_BYTES
from fleet_processing.filters import FilterPolicy
from fleet_processing.owntracks import encrypt, secretbox_key
from fleet_schemas import DeviceKey
from fleet_testing.ingest import store_assessed

pytestmark = pytest.mark.stack

NOW_S = int(time.time())
KEY = secretbox_key("the app's secret")
APPS = {
    "ot-plain": (DeviceInfo("op-a", "BUS-01", active=True), Tracker("driver-1", None)),
    "ot-sealed": (DeviceInfo("op-a", "BUS-02", active=True), Tracker("driver-2", KEY)),
    "ot-revoked": (DeviceInfo("op-a", "BUS-03", active=False), Tracker("ot-revoked", None)),
}
TOPICS = [
    "owntracks/driver-1/ot-plain",
    "owntracks/driver-2/ot-sealed",
    "owntracks/ot-revoked/ot-revoked",
    "owntracks/driver-2/ot-plain",  # another app's user
    "owntracks/nobody/ot-ghost",
]


def no_keys(_key_id: str) -> DeviceKey | None:
    return None


def devices(device: str) -> DeviceInfo | None:
    return APPS[device][0] if device in APPS else None


def trackers(device: str) -> Tracker | None:
    return APPS[device][1] if device in APPS else None


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
near_now = st.builds(lambda back: NOW_S - back, st.integers(0, 3_000))
good = st.fixed_dictionaries({"lat": st.floats(36.0, 37.0), "lon": st.floats(2.5, 3.5), "tst": near_now})
changes = st.dictionaries(
    st.sampled_from(["lat", "lon", "tst", "acc", "alt", "vel", "cog", "batt", "tid"]), scalars, max_size=3
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:
        return json.dumps(
            {"_type": draw(st.sampled_from(["lwt", "transition", "status", "waypoint"]))}
        ).encode()
    values: dict[str, Any] = {**draw(good), **draw(changes)}
    plain = json.dumps({"_type": "location", **values}).encode()
    if choice == 2:
        return plain
    return encrypt(plain, draw(st.sampled_from([KEY, secretbox_key("wrong")])))


messages = st.tuples(st.sampled_from(TOPICS), payloads())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(messages, min_size=1, max_size=10))
def test_every_owntracks_message_ends_stored_rejected_or_ignored(
    database_url: str, received: list[tuple[str, bytes]]
) -> None:
    batch, ignored = sort_out(received, trackers, devices)
    assert len(batch) + len(ignored) == len(received)
    if not batch:
        return
    outcome = assess(batch, no_keys, devices, {}, FilterPolicy(), NOW_S * 1000)

    positions, rejected = store_assessed(database_url, batch, outcome)
    for good in outcome.accepted:
        assert good.frame.device in ("ot-plain", "ot-sealed")
        assert (good.frame.device, good.frame.seq) in positions
        assert good.frame.source == "phone"
    for bad in outcome.rejected:
        assert (bad.reason, bad.raw[:RAW_KEPT_BYTES]) in rejected
    handled = {a.message for a in outcome.accepted} | {r.message for r in outcome.rejected}
    assert handled == set(range(len(batch)))


def test_an_app_of_another_user_or_a_revoked_app_is_refused_and_other_types_ignored() -> None:
    location = json.dumps({"_type": "location", "lat": 36.7, "lon": 3.0, "tst": NOW_S - 5}).encode()
    batch, ignored = sort_out(
        [
            ("owntracks/driver-2/ot-plain", location),
            ("owntracks/ot-revoked/ot-revoked", location),
            ("owntracks/driver-1/ot-plain", b'{"_type":"lwt","tst":1}'),
            ("owntracks/driver-2/ot-sealed", encrypt(b'{"_type":"transition","event":"enter"}', KEY)),
            ("owntracks/driver-1/ot-plain", location),
        ],
        trackers,
        devices,
    )
    outcome = assess(batch, no_keys, devices, {}, FilterPolicy(), NOW_S * 1000)
    assert [(r.reason, r.device, r.message) for r in outcome.rejected] == [
        ("device_unknown", "ot-plain", 0),
        ("device_disabled", "ot-revoked", 1),
    ]
    assert ignored == ["lwt", "transition"]
    assert [(a.operator, a.key_id, a.frame.bus, a.message) for a in outcome.accepted] == [
        ("op-a", "owntracks:driver-1", "BUS-01", 2)
    ]
