"""What counts as a delivery, and a message that never passes MAX_MESSAGE_BYTES."""

from __future__ import annotations

import os

import pytest

from fleet_agent.mqtt_client import is_delivery
from fleet_agent.publisher import refusal_key, seal_within
from fleet_schemas import MAX_MESSAGE_BYTES, DeviceKey, Frame, encode_frame, open_envelope

DEVICE = "u" * 64


def _bodies(count: int) -> list[bytes]:
    return [
        encode_frame(
            Frame(
                device=DEVICE,
                bus="b" * 64,
                seq=seq,
                time_ms=1_795_000_000_000 + seq,
                lat=36.7,
                lon=3.0,
                accuracy_m=4.0,
                speed_mps=20.0,
                heading_deg=90.0,
                altitude_m=100.0,
                satellites=9,
                hdop=0.9,
                trip_id="t" * 128,
            )
        )
        for seq in range(count)
    ]


@pytest.mark.parametrize(("code", "delivered"), [(0x00, True), (0x10, False), (0x87, False), (0x97, False)])
def test_only_success_is_a_delivery(code: int, delivered: bool) -> None:
    assert is_delivery(code) is delivered
    assert refusal_key(code) == f"0x{code:02x}"


def test_a_message_of_large_frames_is_cut_to_the_longest_prefix_that_fits() -> None:
    key = DeviceKey("k1", DEVICE, os.urandom(32))
    bodies = _bodies(2_000)
    assert sum(map(len, bodies)) > MAX_MESSAGE_BYTES, "the test needs frames that do not fit in one message"
    message, count = seal_within(bodies, key)
    assert len(message) <= MAX_MESSAGE_BYTES
    assert len(seal_within(bodies[: count + 1], key, limit=10**9)[0]) > MAX_MESSAGE_BYTES, "longest prefix"
    batch = open_envelope(message, {key.key_id: key}.get, DEVICE)
    assert [f.seq for f in batch.frames] == list(range(count))


def test_frames_that_fit_go_in_one_message() -> None:
    key = DeviceKey("k1", DEVICE, os.urandom(32))
    message, count = seal_within(_bodies(10), key)
    assert count == 10
    assert len(message) < MAX_MESSAGE_BYTES
