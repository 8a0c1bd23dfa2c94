"""The signed envelope: round trips, tamper detection and typed errors for bad input."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_schemas import (
    FORMAT_VERSION,
    MAX_FRAMES_PER_BATCH,
    MAX_MESSAGE_BYTES,
    BadSignatureError,
    DeviceKey,
    DeviceMismatchError,
    Envelope,
    FleetSchemaError,
    Frame,
    InvalidFieldError,
    OutOfRangeError,
    TooLargeError,
    TooManyFramesError,
    UndecodableError,
    UnknownKeyError,
    UnsignedError,
    WrongVersionError,
    encode_batch,
    encode_frame,
    open_envelope,
    seal,
    seal_encoded,
    sign,
)
from fleet_testing.frames import frame, frames, new_key

DEVICE = "dz-bus-01"
KEY = new_key(DEVICE)


def lookup(key_id: str) -> DeviceKey | None:
    return KEY if key_id == KEY.key_id else None


@given(st.lists(frames(DEVICE), min_size=1, max_size=20), st.sampled_from(["msgpack", "json"]))
def test_sealed_batch_opens_to_the_same_frames(batch: list[Frame], encoding: str) -> None:
    raw = seal(batch, KEY, encoding)  # type: ignore[arg-type]
    opened = open_envelope(raw, lookup, topic_device=DEVICE)
    assert opened.frames == batch
    assert opened.device == DEVICE
    assert opened.key_id == KEY.key_id


@settings(max_examples=300)
@given(st.lists(frames(DEVICE), min_size=1, max_size=5), st.data())
def test_any_single_bit_flip_is_rejected(batch: list[Frame], data: st.DataObject) -> None:
    raw = bytearray(seal(batch, KEY))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FleetSchemaError):
        open_envelope(bytes(raw), lookup, topic_device=DEVICE)


@settings(max_examples=500)
@given(st.binary(max_size=2_000))
def test_random_bytes_raise_only_typed_errors(raw: bytes) -> None:
    with pytest.raises(FleetSchemaError):
        open_envelope(raw, lookup)


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    )
)
def test_random_msgpack_values_raise_only_typed_errors(value: object) -> None:
    for raw in (msgspec.msgpack.encode(value), msgspec.json.encode(value)):
        with pytest.raises(FleetSchemaError):
            open_envelope(raw, lookup)


def _envelope(
    payload: bytes, *, key: DeviceKey = KEY, version: int = FORMAT_VERSION, signature: bytes | None = None
) -> bytes:
    sig = sign(key.secret, payload) if signature is None else signature
    return msgspec.msgpack.encode(Envelope(version, key.key_id, payload, sig))


@pytest.mark.parametrize(
    "raw",
    [
        b"\x91" * 100_000 + b"\xc0",
        b"[" * 100_000,
        b"\x94\x01" + b"\x91" * 100_000 + b"\xc0",
        b"\x94\x02" + b"\x91" * 100_000 + b"\xc0",
        b"[1," + b"[" * 100_000,
    ],
    ids=["msgpack", "json", "msgpack-after-version", "msgpack-future-version", "json-after-version"],
)
def test_depth_bomb_is_undecodable_not_a_recursion_error(raw: bytes) -> None:
    with pytest.raises(UndecodableError):
        open_envelope(raw, lookup)


def test_depth_bomb_inside_a_signed_payload_is_a_typed_error() -> None:
    fields = list(msgspec.msgpack.decode(msgspec.msgpack.encode(frame())))
    prefix = msgspec.msgpack.encode([DEVICE, [[*fields, None]]])
    bomb = prefix[:-1] + b"\x91" * 100_000 + b"\xc0"  # the appended trailing field, nested 100,000 deep
    with pytest.raises(FleetSchemaError):
        open_envelope(_envelope(bomb), lookup)


@pytest.mark.parametrize("trip_id", ["T\x00", "T\n", "\x1b[31m", "T\x7f"])
def test_control_characters_in_text_fields_are_invalid(trip_id: str) -> None:
    fields = list(msgspec.msgpack.decode(msgspec.msgpack.encode(frame())))
    fields += [None] * (17 - len(fields))
    fields[16] = trip_id
    with pytest.raises(InvalidFieldError, match=r"\$\[1\]\[0\]\[16\]"):
        open_envelope(_envelope(msgspec.msgpack.encode([DEVICE, [fields]])), lookup)


@pytest.mark.parametrize("bus", ["BUS-A\n", "BUS-A\r", "\nBUS-A"])
def test_identifier_with_a_newline_is_invalid(bus: str) -> None:
    bad = msgspec.msgpack.encode([DEVICE, [[DEVICE, bus, 1, 1_795_000_000_000, 36.0, 3.0]]])
    with pytest.raises(InvalidFieldError, match=r"\$\[1\]\[0\]\[1\]"):
        open_envelope(_envelope(bad), lookup)


def test_tampered_payload_is_a_bad_signature() -> None:
    envelope = msgspec.msgpack.decode(seal([frame()], KEY), type=Envelope)
    forged = encode_batch([frame(lat=35.0)], DEVICE)
    raw = msgspec.msgpack.encode(Envelope(envelope.version, envelope.key_id, forged, envelope.signature))
    with pytest.raises(BadSignatureError, match="does not match"):
        open_envelope(raw, lookup)


def test_signature_from_another_key_is_a_bad_signature() -> None:
    other = DeviceKey(KEY.key_id, DEVICE, b"x" * 32)
    with pytest.raises(BadSignatureError):
        open_envelope(seal([frame()], other), lookup)


def test_unsigned_envelope_is_rejected_as_unsigned() -> None:
    with pytest.raises(UnsignedError):
        open_envelope(_envelope(encode_batch([frame()], DEVICE), signature=b""), lookup)


def test_unknown_key_is_rejected() -> None:
    stranger = new_key(DEVICE, key_id="not-issued")
    with pytest.raises(UnknownKeyError, match="not-issued"):
        open_envelope(seal([frame()], stranger), lookup)


def test_topic_of_another_device_is_a_device_mismatch() -> None:
    with pytest.raises(DeviceMismatchError, match="topic device 'dz-bus-02'"):
        open_envelope(seal([frame()], KEY), lookup, topic_device="dz-bus-02")


def test_payload_device_must_own_the_key() -> None:
    payload = encode_batch([frame(device="dz-bus-02")], "dz-bus-02")
    with pytest.raises(DeviceMismatchError, match="does not own key"):
        open_envelope(_envelope(payload), lookup)


def test_every_frame_must_belong_to_the_batch_device() -> None:
    payload = encode_batch([frame(), frame(device="dz-bus-02", seq=2)], DEVICE)
    with pytest.raises(DeviceMismatchError, match="frame 1"):
        open_envelope(_envelope(payload), lookup)


def test_garbage_is_undecodable() -> None:
    with pytest.raises(UndecodableError):
        open_envelope(b"\xc1\xc1 not msgpack", lookup)


def test_out_of_range_field_names_the_field() -> None:
    bad = msgspec.msgpack.encode([DEVICE, [[DEVICE, "BUS-01", 1, 1_795_000_000_000, 91.0, 3.0]]])
    with pytest.raises(OutOfRangeError, match=r"<= 90.0 - at `\$\[1\]\[0\]\[4\]`"):
        open_envelope(_envelope(bad), lookup)


def test_rollover_date_is_out_of_range() -> None:
    bad = msgspec.msgpack.encode([DEVICE, [[DEVICE, "BUS-01", 1, 315_964_800_000, 36.0, 3.0]]])
    with pytest.raises(OutOfRangeError, match=r"\$\[1\]\[0\]\[3\]"):
        open_envelope(_envelope(bad), lookup)


def test_wrong_type_is_an_invalid_field() -> None:
    bad = msgspec.msgpack.encode([DEVICE, [[DEVICE, "BUS-01", "one", 1_795_000_000_000, 36.0, 3.0]]])
    with pytest.raises(InvalidFieldError, match="Expected `int`, got `str`"):
        open_envelope(_envelope(bad), lookup)


def test_future_format_version_is_wrong_version() -> None:
    with pytest.raises(WrongVersionError, match="format version 2"):
        open_envelope(_envelope(encode_batch([frame()], DEVICE), version=2), lookup)


def test_future_envelope_shape_is_still_reported_as_wrong_version() -> None:
    raw = msgspec.msgpack.encode([7, {"a": "new layout"}])
    with pytest.raises(WrongVersionError, match="format version 7"):
        open_envelope(raw, lookup)


def test_empty_batch_is_too_many_frames_error() -> None:
    with pytest.raises(TooManyFramesError, match="0 frames"):
        open_envelope(_envelope(encode_batch([], DEVICE)), lookup)


def test_batch_over_the_frame_limit_is_rejected() -> None:
    many = [
        Frame(device=DEVICE, bus="B", seq=i, time_ms=1_795_000_000_000, lat=0.0, lon=0.0)
        for i in range(MAX_FRAMES_PER_BATCH + 1)
    ]
    with pytest.raises(TooManyFramesError):
        open_envelope(seal(many, KEY), lookup)


def test_message_over_the_size_limit_is_rejected_before_decoding() -> None:
    with pytest.raises(TooLargeError):
        open_envelope(b"\x94" + b"\x00" * MAX_MESSAGE_BYTES, lookup)


def test_frame_from_an_older_agent_without_trailing_fields_decodes_with_defaults() -> None:
    old = msgspec.msgpack.encode([DEVICE, [[DEVICE, "BUS-01", 5, 1_795_000_000_000, 36.7, 3.05]]])
    opened = open_envelope(_envelope(old), lookup)
    assert opened.frames[0].speed_mps is None
    assert opened.frames[0].source == "gps"


def test_frame_from_a_newer_agent_with_appended_fields_decodes() -> None:
    fields = list(msgspec.msgpack.decode(msgspec.msgpack.encode(frame())))
    newer = msgspec.msgpack.encode([DEVICE, [[*fields, "a field added later", 42]]])
    assert open_envelope(_envelope(newer), lookup).frames == [frame()]


def test_key_repr_never_shows_the_secret() -> None:
    assert KEY.secret.hex() not in repr(KEY)
    assert str(KEY.secret) not in repr(KEY)


def test_short_key_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        DeviceKey("k", DEVICE, b"short")


def test_a_one_frame_msgpack_message_is_compact() -> None:
    assert len(seal([frame()], KEY)) < 200


@given(st.lists(frames(DEVICE), min_size=1, max_size=20))
def test_sealing_pre_encoded_frames_equals_sealing_frames(batch: list[Frame]) -> None:
    assert seal_encoded([encode_frame(f) for f in batch], KEY) == seal(batch, KEY)


def test_every_error_has_its_own_stable_code() -> None:
    from fleet_schemas import ALL_ERRORS

    codes = [error.code for error in ALL_ERRORS]
    assert len(codes) == len(set(codes))
    assert all(code.isidentifier() and code == code.lower() for code in codes)
