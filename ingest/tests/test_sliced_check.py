"""Ingest checks a batch a slice at a time, so the commit beside it can go on; the verdicts must not change.

Against real PostgreSQL and Redis: the batch is taken in by a real ``Ingest``
and its verdicts compared with one ``assess`` over the whole batch.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import msgspec
import pytest

from fleet_ingest.assess import Incoming, assess
from fleet_ingest.keycache import KeyCache
from fleet_ingest.service import Ingest, IngestOptions, Taken, check_slices, open_pool, open_redis
from fleet_processing.filters import FilterPolicy
from fleet_schemas import DeviceKey, Frame, frames_topic, seal
from fleet_store.devices import add_device
from fleet_store.live import LiveState
from fleet_store.secretbox import KeyEncryptionKey

pytestmark = pytest.mark.stack

MESSAGES = 1_200
"""one-frame messages: more than three slices"""


class Course(msgspec.Struct, frozen=True):
    """Where the test puts its bad fixes, from the slices ingest will cut."""

    outliers: tuple[int, ...]
    """single fixes 50 km off the line, one of them a slice's first: teleports"""
    moved: range
    """three fixes that agree with each other 50 km off, across a slice's end: the bus moved"""

    def lon(self, n: int) -> float:
        east = (n >= self.moved.start) != (n in self.outliers)  # an outlier is off whichever side
        return 3.06 + (0.56 if east else 0.0) + n * 1e-4  # 0.56 degrees: about 50 km at 36.75 N


def test_slices_hold_at_most_their_bytes_and_always_a_message() -> None:
    incoming = [Incoming("t", bytes(size)) for size in (10, 10, 10, 25, 5, 1, 40)]
    assert check_slices(incoming, max_bytes=30) == [(0, 3), (3, 5), (5, 6), (6, 7)]
    assert check_slices(incoming, max_bytes=1) == [(n, n + 1) for n in range(7)]
    assert check_slices([], max_bytes=30) == []


def test_a_batch_checked_in_slices_gets_the_verdicts_of_one_check(
    database_url: str, redis_url: str, operator_id: str
) -> None:
    kek = KeyEncryptionKey(bytes(32))
    now_ms = int(time.time() * 1000)
    bus = f"{operator_id}-bus"

    def messages(key: DeviceKey, course: Course) -> list[Incoming]:
        start_ms = now_ms - 3_600_000
        frames = [
            Frame(
                device=key.device,
                bus=bus,
                seq=n + 1,
                time_ms=start_ms + n * 1_000,
                lat=36.75,
                lon=course.lon(n),
                accuracy_m=5.0,
            )
            for n in range(MESSAGES)
        ]
        return [Incoming(frames_topic(operator_id, key.device), seal([f], key)) for f in frames]

    async def scenario() -> tuple[Course, Taken, list[tuple[int, int]], list[tuple[int, str]]]:
        conn = await asyncpg.connect(database_url)
        pool = await open_pool(database_url)
        redis_client = open_redis(redis_url)
        try:
            key = (await add_device(conn, kek, operator_id, f"{operator_id}-unit", bus)).key
            # A float is always 8 bytes in msgpack: where the fixes are does not move the slices.
            starts = [start for start, _ in check_slices(messages(key, Course((), range(0))))]
            assert len(starts) >= 3
            course = Course((50, starts[1], starts[2] + 50), range(starts[2] - 2, starts[2] + 1))
            incoming = messages(key, course)
            assert [start for start, _ in check_slices(incoming)] == starts
            async with KeyCache(database_url, kek) as registry:
                ingest = Ingest(
                    "mqtt://unused", pool, LiveState(redis_client), registry, IngestOptions("sliced")
                )
                taken = await ingest.take_in(incoming)
                whole = assess(incoming, registry.key, registry.device, {}, FilterPolicy(), now_ms)
            return (
                course,
                taken,
                [(a.message, a.frame.seq) for a in whole.accepted],
                [(r.message, r.reason) for r in whole.rejected],
            )
        finally:
            await conn.close()
            await pool.close()
            await redis_client.aclose()

    course, taken, accepted, rejected = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert {message for message, _ in rejected} >= set(course.outliers), "the outliers are teleports"
    assert any(message in course.moved for message, _ in rejected), "a move is confirmed by its third fix"
    assert [(a.message, a.frame.seq) for a in taken.outcome.accepted] == accepted
    assert [(r.message, r.reason) for r in taken.outcome.rejected] == rejected
    assert len(taken.stored.new) == len(accepted)
