"""Signed batches travel through a real Mosquitto and are verified on arrival."""

from __future__ import annotations

import msgspec
import pytest

from fleet_schemas import (
    BadSignatureError,
    DeviceKey,
    DeviceMismatchError,
    Envelope,
    FleetSchemaError,
    UndecodableError,
    UnsignedError,
    encode_batch,
    frames_subscription,
    frames_topic,
    open_envelope,
    parse_topic,
    seal,
)
from fleet_store.settings import ServiceUrls
from fleet_testing.frames import frame, new_key
from fleet_testing.mqtt import publish_all, subscribed

pytestmark = pytest.mark.stack


def test_signed_batch_arrives_verified_and_bad_ones_get_typed_errors(
    stack_urls: ServiceUrls, operator_id: str
) -> None:
    keys = {k.key_id: k for k in (new_key("bus-a"), new_key("bus-b"))}
    key_a, key_b = keys["bus-a-k1"], keys["bus-b-k1"]
    good = [frame("bus-a", seq) for seq in range(1, 11)]
    sealed = seal(good, key_a)
    original = msgspec.msgpack.decode(sealed, type=Envelope)
    tampered = msgspec.msgpack.encode(
        Envelope(
            original.version,
            original.key_id,
            encode_batch([frame("bus-a", 1, lat=36.0)], "bus-a"),
            original.signature,
        )
    )
    unsigned = msgspec.msgpack.encode(Envelope(1, key_a.key_id, original.payload, b""))
    sent = [
        ("good", frames_topic(operator_id, "bus-a"), sealed),
        ("tampered", frames_topic(operator_id, "bus-a"), tampered),
        ("unsigned", frames_topic(operator_id, "bus-a"), unsigned),
        ("wrong-device", frames_topic(operator_id, "bus-b"), seal([frame("bus-a", 11)], key_a)),
        ("garbage", frames_topic(operator_id, "bus-a"), b"\x00\xffnot a frame"),
        ("json", frames_topic(operator_id, "bus-b"), seal([frame("bus-b", 1)], key_b, "json")),
    ]

    def lookup(key_id: str) -> DeviceKey | None:
        return keys.get(key_id)

    with subscribed(stack_urls.mqtt_url, frames_subscription().replace("+/+", f"{operator_id}/+")) as inbox:
        publish_all(stack_urls.mqtt_url, [(topic, payload) for _, topic, payload in sent])
        outcomes: list[object] = []
        for _ in sent:
            message = inbox.get(timeout=10)
            try:
                outcomes.append(open_envelope(message.payload, lookup, parse_topic(message.topic).device))
            except FleetSchemaError as exc:
                outcomes.append(exc)

    good_batch, tampered_err, unsigned_err, device_err, garbage_err, json_batch = outcomes
    assert getattr(good_batch, "frames", None) == good
    assert isinstance(tampered_err, BadSignatureError)
    assert isinstance(unsigned_err, UnsignedError)
    assert isinstance(device_err, DeviceMismatchError)
    assert isinstance(garbage_err, UndecodableError)
    assert getattr(json_batch, "frames", None) == [frame("bus-b", 1)]
