"""What a registered device can send to hurt ingest, through the real broker to a real ``fleet ingest``.

Each message below once crashed, stalled or fooled ingest (a depth bomb, a
NUL in a signed text field, an id with a trailing newline, frames for another
bus, a reused sequence number, a walk of 900 m steps, a crash between commit
and ack). Now each ends as a typed rejection, stored once, and the good frames
around them are stored and move the live map.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import msgspec
import pytest

from fleet_schemas import DeviceKey, Envelope, Frame, encode_frame, frames_topic, seal, sign
from fleet_testing.ingest import IngestProcesses, register_devices, stored
from fleet_testing.mqtt import publish_all

pytestmark = pytest.mark.stack

METRES_PER_DEGREE = 111_320.0


def _frame(key: DeviceKey, bus: str, seq: int, start_ms: int, north_m: float = 0.0, **fields: Any) -> Frame:
    values: dict[str, Any] = {
        "device": key.device,
        "bus": bus,
        "seq": seq,
        "time_ms": start_ms + seq * 1_000,
        "lat": 36.7347 + (15.0 * seq + north_m) / METRES_PER_DEGREE,
        "lon": 3.0866,
        "accuracy_m": 5.0,
    }
    values.update(fields)
    return Frame(**values)


def _signed_raw(key: DeviceKey, frames: list[list[Any]]) -> bytes:
    """A batch of frames given as raw field arrays, signed with the device's real key."""
    payload = msgspec.msgpack.encode([key.device, frames])
    return msgspec.msgpack.encode(Envelope(1, key.key_id, payload, sign(key.secret, payload)))


def test_hostile_messages_from_a_registered_device_are_rejected_and_ingest_goes_on(
    ingest: IngestProcesses, operator_id: str
) -> None:
    buses, (mallory, bob) = asyncio.run(register_devices(ingest.database_url, ingest.kek, operator_id, 2))
    own_bus, bobs_bus = buses[mallory.device], buses[bob.device]
    topic = frames_topic(operator_id, mallory.device)
    start = int(time.time() * 1000) - 60_000

    def fields(frame: Frame, **changes: Any) -> list[Any]:
        values: list[Any] = list(
            msgspec.msgpack.decode(encode_frame(msgspec.structs.replace(frame, **changes)))
        )
        return values

    good = [_frame(mallory, own_bus, seq, start) for seq in range(1, 7)]
    bobs = [_frame(bob, bobs_bus, seq, start) for seq in (1, 2)]
    walk = [_frame(mallory, own_bus, seq, start, north_m=900.0 * (seq - 6)) for seq in (7, 8, 9)]
    with_nul = fields(good[0], seq=20)
    with_nul += [None] * (17 - len(with_nul))
    with_nul[16] = "T\x00"
    messages = [
        *((topic, seal([f], mallory)) for f in good[:3]),
        *((frames_topic(operator_id, bob.device), seal([f], bob)) for f in bobs),
        (topic, b"\x91" * 100_000 + b"\xc0"),  # msgpack depth bomb
        (topic, b"[" * 100_000),  # JSON depth bomb
        (topic, _signed_raw(mallory, [with_nul])),  # a NUL PostgreSQL cannot store
        (topic, _signed_raw(mallory, [fields(good[0], seq=21, bus=f"{own_bus}\n")])),
        (topic, seal([_frame(mallory, bobs_bus, 22, start, north_m=5_000.0)], mallory)),  # moves Bob's bus?
        *((topic, seal([f], mallory)) for f in good[3:]),
        (topic, seal([msgspec.structs.replace(good[1], time_ms=good[1].time_ms - 3_600_000)], mallory)),
        *((topic, seal([f], mallory)) for f in walk),
    ]
    asyncio.run(ingest.open_sessions("1"))
    publish_all(ingest.urls.mqtt_url, messages)
    ingest.start("1")
    ingest.wait("1")  # exits 0: no message stopped it

    result = stored(ingest.database_url, ingest.redis_url, operator_id, buses)
    assert sorted(result.positions) == sorted(
        [(mallory.device, s) for s in range(1, 7)] + [(bob.device, s) for s in (1, 2)]
    )
    assert result.rejected == Counter(
        {"undecodable": 2, "invalid_field": 2, "bus_mismatch": 1, "seq_conflict": 1, "teleport": 3}
    )
    assert result.live == {own_bus: (mallory.device, 6), bobs_bus: (bob.device, 2)}


def test_rejections_are_stored_once_when_ingest_is_killed_between_commit_and_ack(
    ingest: IngestProcesses, operator_id: str
) -> None:
    buses, (key,) = asyncio.run(register_devices(ingest.database_url, ingest.kek, operator_id, 1))
    topic = frames_topic(operator_id, key.device)
    garbage = [(topic, b"\xc1" + n.to_bytes(4, "big") * 8) for n in range(30_000)]
    asyncio.run(ingest.open_sessions("1"))
    publish_all(ingest.urls.mqtt_url, garbage)
    killed_after = 0
    for _ in range(3):  # kill it three times mid-stream; some batches are committed and not yet acked
        process = ingest.start("1", burst_s=None)
        deadline = time.monotonic() + 60
        while (
            count := sum(stored(ingest.database_url, ingest.redis_url, operator_id, buses).rejected.values())
        ) <= killed_after + 1_000:
            assert time.monotonic() < deadline, "ingest stored nothing"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        ingest.running.pop("1")
        killed_after = count
    ingest.start("1")
    ingest.wait("1")
    result = stored(ingest.database_url, ingest.redis_url, operator_id, buses)
    assert result.rejected == Counter({"undecodable": len(garbage)})
    assert result.rejected_raw == {raw for _, raw in garbage}


def _rejections(ingest: IngestProcesses, operator: str, buses: dict[str, str]) -> int:
    return sum(stored(ingest.database_url, ingest.redis_url, operator, buses).rejected.values())
