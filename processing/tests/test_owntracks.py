"""OwnTracks payloads to frames: SI units, the app's encryption, and only typed errors for anything else."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_processing.owntracks import (
    KEY_BYTES,
    Other,
    encrypt,
    read_frame,
    read_payload,
    secretbox_key,
    to_frame,
)
from fleet_schemas import FleetSchemaError
from fleet_schemas.owntracks import (
    TrackerAddress,
    owntracks_subscription,
    owntracks_topic,
    parse_owntracks_topic,
)
from fleet_testing.frames import identifiers

KEY = secretbox_key("correct horse battery staple")
TST = 1_795_000_000
# As the Android app publishes a location (booklet, tech/json), extended data on.
ANDROID = {
    "_type": "location",
    "BSSID": "b0:be:76:e0:1a:2c",
    "SSID": "depot",
    "acc": 12,
    "alt": 41,
    "batt": 81,
    "bs": 1,
    "conn": "m",
    "created_at": TST + 3,
    "lat": 36.7525,
    "lon": 3.042,
    "m": 1,
    "t": "u",
    "tid": "42",
    "topic": "owntracks/driver-42/phone-42",
    "tst": TST,
    "vac": 3,
    "vel": 72,
    "cog": 271,
}


def payload(**fields: Any) -> bytes:
    return json.dumps({**ANDROID, **fields}).encode()


def test_a_location_becomes_a_phone_frame_in_si_units() -> None:
    frame = read_frame(payload(), None, "phone-42", "DZ-16-0042")
    assert not isinstance(frame, Other)
    assert (frame.device, frame.bus, frame.source) == ("phone-42", "DZ-16-0042", "phone")
    assert frame.time_ms == TST * 1000
    assert frame.seq == TST * 1000
    assert (frame.lat, frame.lon) == (36.7525, 3.042)
    assert frame.speed_mps == pytest.approx(20.0)
    assert frame.heading_deg == 271.0
    assert frame.accuracy_m == 12.0
    assert frame.altitude_m == 41.0


def test_a_resent_location_keeps_its_sequence() -> None:
    first = read_frame(payload(created_at=TST + 1), None, "p", "b")
    again = read_frame(payload(created_at=TST + 600, batt=60), None, "p", "b")
    assert not isinstance(first, Other)
    assert not isinstance(again, Other)
    assert (first.seq, first.time_ms) == (again.seq, again.time_ms)


def test_negative_unknowns_are_absent_and_north_is_zero() -> None:
    frame = read_frame(payload(vel=-1, acc=-1, cog=360, alt=-12), None, "p", "b")
    assert not isinstance(frame, Other)
    assert (frame.speed_mps, frame.accuracy_m, frame.heading_deg, frame.altitude_m) == (
        None,
        None,
        0.0,
        -12.0,
    )


@pytest.mark.parametrize(
    ("batt", "bs", "kept"),
    [(81, 1, (81.0, False)), (55, 2, (55.0, True)), (100, 3, (100.0, True)), (40, 0, (40.0, None))],
)
def test_the_battery_and_whether_it_charges_come_with_the_fix(
    batt: int, bs: int, kept: tuple[float, bool | None]
) -> None:
    frame = read_frame(payload(batt=batt, bs=bs), None, "p", "b")
    assert not isinstance(frame, Other)
    assert (frame.battery_pct, frame.charging) == kept


def test_a_malformed_battery_costs_the_battery_not_the_position() -> None:
    frame = read_frame(payload(batt=140, bs="plugged"), None, "p", "b")
    assert not isinstance(frame, Other)
    assert (frame.lat, frame.battery_pct, frame.charging) == (36.7525, None, None)
    as_bool = read_frame(payload(bs=True), None, "p", "b")  # JSON true is no battery status
    assert not isinstance(as_bool, Other)
    assert as_bool.charging is None


def test_numbers_sent_as_strings_are_read_as_numbers() -> None:
    frame = read_frame(payload(tst=str(TST), lat="36.75", lon="3.04", acc="8"), None, "p", "b")
    assert not isinstance(frame, Other)
    assert (frame.time_ms, frame.lat, frame.accuracy_m) == (TST * 1000, 36.75, 8.0)


@pytest.mark.parametrize("kind", ["lwt", "transition", "waypoint", "waypoints", "status", "card", "cmd"])
def test_other_types_are_told_apart_not_rejected(kind: str) -> None:
    assert read_payload(json.dumps({"_type": kind, "tst": TST}).encode(), None) == Other(kind)


@pytest.mark.parametrize(
    ("raw", "code", "names"),
    [
        (b"{", "undecodable", ""),
        (b"[1,2]", "invalid_field", ""),
        (b'{"lat": 1}', "invalid_field", "_type"),
        (json.dumps({"_type": "location", "lon": 3.0, "tst": TST}).encode(), "invalid_field", "lat"),
        (payload(lat=91), "out_of_range", "lat"),
        (payload(tst=-5), "out_of_range", "tst"),
        (payload(vel=900), "out_of_range", "speed_mps"),
        (payload(acc=1e9), "out_of_range", "accuracy_m"),
        (payload(tst=10**40), "out_of_range", "tst"),
        (b"{" + b" " * 70_000 + b"}", "too_large", ""),
    ],
)
def test_bad_payloads_get_their_reason_naming_the_field(raw: bytes, code: str, names: str) -> None:
    with pytest.raises(FleetSchemaError) as caught:
        read_frame(raw, KEY, "p", "b")
    assert caught.value.code == code
    assert names in caught.value.message


def test_an_encrypted_location_opens_to_the_same_frame() -> None:
    assert read_frame(encrypt(payload(), KEY), KEY, "p", "b") == read_frame(payload(), None, "p", "b")


def test_an_encrypted_lwt_is_another_type() -> None:
    assert read_payload(encrypt(b'{"_type":"lwt","tst":1}', KEY), KEY) == Other("lwt")


def _code(raw: bytes, key: bytes | None) -> str:
    with pytest.raises(FleetSchemaError) as caught:
        read_payload(raw, key)
    return caught.value.code


def test_wrong_key_altered_box_or_no_key_is_rejected_with_a_reason() -> None:
    sealed = encrypt(payload(), KEY)
    assert _code(sealed, secretbox_key("another secret")) == "bad_ciphertext"
    assert _code(sealed, None) == "encryption_key_missing"
    box = bytearray(base64.b64decode(json.loads(sealed)["data"]))
    box[-1] ^= 1
    altered = json.dumps({"_type": "encrypted", "data": base64.b64encode(bytes(box)).decode()}).encode()
    assert _code(altered, KEY) == "bad_ciphertext"
    assert _code(b'{"_type":"encrypted","data":"not base64!"}', KEY) == "bad_ciphertext"
    assert _code(b'{"_type":"encrypted","data":"AAAA"}', KEY) == "bad_ciphertext"
    assert _code(b'{"_type":"encrypted"}', KEY) == "invalid_field"
    assert _code(encrypt(encrypt(payload(), KEY), KEY), KEY) == "bad_ciphertext"


def test_the_key_is_the_secret_padded_or_cut_to_32_bytes() -> None:
    assert secretbox_key("abc") == b"abc" + b"\x00" * 29
    assert secretbox_key("x" * 40) == b"x" * 32
    assert secretbox_key("é" * 20) == ("é" * 16).encode()
    assert len(secretbox_key("")) == KEY_BYTES


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from([None, KEY]))
def test_arbitrary_bytes_raise_only_typed_errors(raw: bytes, key: bytes | None) -> None:
    with contextlib.suppress(FleetSchemaError):
        read_frame(raw, key, "p", "b")


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_values = (
    _scalars | st.lists(_scalars, max_size=2) | st.dictionaries(st.text(max_size=3), _scalars, max_size=2)
)
_fields = st.sampled_from(
    ["lat", "lon", "tst", "acc", "alt", "vac", "vel", "cog", "batt", "tid", "created_at"]
)


@settings(max_examples=300)
@given(st.dictionaries(_fields, _values, max_size=11), st.booleans())
def test_arbitrary_location_fields_raise_only_typed_errors(fields: dict[str, Any], encrypted: bool) -> None:
    raw = json.dumps({"_type": "location", **fields}).encode()
    try:
        frame = read_frame(encrypt(raw, KEY) if encrypted else raw, KEY, "p", "b")
    except FleetSchemaError:
        return
    assert not isinstance(frame, Other)
    assert frame.seq == frame.time_ms


@given(
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.integers(946_684_800, 4_102_444_800),
    st.floats(0, 540),
    st.floats(0, 359.9),
)
def test_valid_locations_convert_speed_from_kmh(
    lat: float, lon: float, tst: int, vel: float, cog: float
) -> None:
    raw = json.dumps(
        {"_type": "location", "lat": lat, "lon": lon, "tst": tst, "vel": vel, "cog": cog}
    ).encode()
    location = read_payload(raw, None)
    assert not isinstance(location, Other)
    frame = to_frame(location, "p", "b")
    assert frame.speed_mps == pytest.approx(vel / 3.6)
    assert (frame.lat, frame.lon, frame.time_ms) == (lat, lon, tst * 1000)


@given(identifiers, identifiers)
def test_the_location_topic_parses_back_to_its_user_and_device(user: str, device: str) -> None:
    assert parse_owntracks_topic(owntracks_topic(user, device)) == TrackerAddress(user, device)


@pytest.mark.parametrize(
    "topic", ["owntracks/u", "owntracks/u/d/event", "owntracks/u/+", "fleet/v1/o/d/frames", "owntracks/u/-d"]
)
def test_other_topics_are_not_location_topics(topic: str) -> None:
    with pytest.raises(FleetSchemaError) as caught:
        parse_owntracks_topic(topic)
    assert caught.value.code == "bad_topic"


def test_the_shared_subscription_takes_only_location_topics() -> None:
    assert owntracks_subscription("ingest") == "$share/ingest/owntracks/+/+"
