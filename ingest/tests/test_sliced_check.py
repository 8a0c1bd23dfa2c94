"""Ingest checks a batch a slice at a time, so the commit beside it can go on; the verdicts must not change.

Against real PostgreSQL and Redis: the batch is taken in by a real ``Ingest``
and its verdicts compared with one ``assess`` over the whole batch.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from fleet_ingest.assess import Incoming, assess
from fleet_ingest.keycache import KeyCache
from fleet_ingest.service import CHECK_SLICE, Ingest, IngestOptions, Taken, open_pool, open_redis
from fleet_processing.filters import FilterPolicy
from fleet_schemas import Frame, frames_topic, seal
from fleet_store.devices import add_device
from fleet_store.live import LiveState
from fleet_store.secretbox import KeyEncryptionKey

pytestmark = pytest.mark.stack

MESSAGES = 2 * CHECK_SLICE + 100
OUTLIERS = (100, CHECK_SLICE, 2 * CHECK_SLICE + 50)
"""single fixes 50 km off the line, one of them a slice's first: teleports"""
MOVED = range(2 * CHECK_SLICE - 2, 2 * CHECK_SLICE + 1)
"""three fixes that agree with each other 50 km off, across the second slice's end: the bus moved"""


def _lon(n: int) -> float:
    east = (n >= MOVED.start) != (n in OUTLIERS)  # an outlier is off whichever side the bus is on
    return 3.06 + (0.56 if east else 0.0) + n * 1e-4  # 0.56 degrees: about 50 km at 36.75 N


def test_a_batch_checked_in_slices_gets_the_verdicts_of_one_check(
    database_url: str, redis_url: str, operator_id: str
) -> None:
    kek = KeyEncryptionKey(bytes(32))
    now_ms = int(time.time() * 1000)
    bus = f"{operator_id}-bus"

    async def scenario() -> tuple[Taken, list[tuple[int, int]], list[tuple[int, str]]]:
        conn = await asyncpg.connect(database_url)
        pool = await open_pool(database_url)
        redis_client = open_redis(redis_url)
        try:
            key = (await add_device(conn, kek, operator_id, f"{operator_id}-unit", bus)).key
            topic = frames_topic(operator_id, key.device)
            start_ms = now_ms - 3_600_000
            incoming = [
                Incoming(
                    topic,
                    seal(
                        [
                            Frame(
                                device=key.device,
                                bus=bus,
                                seq=n + 1,
                                time_ms=start_ms + n * 1_000,
                                lat=36.75,
                                lon=_lon(n),
                                accuracy_m=5.0,
                            )
                        ],
                        key,
                    ),
                )
                for n in range(MESSAGES)
            ]
            async with KeyCache(database_url, kek) as registry:
                ingest = Ingest(
                    "mqtt://unused", pool, LiveState(redis_client), registry, IngestOptions("sliced")
                )
                taken = await ingest.take_in(incoming)
                whole = assess(incoming, registry.key, registry.device, {}, FilterPolicy(), now_ms)
            return (
                taken,
                [(a.message, a.frame.seq) for a in whole.accepted],
                [(r.message, r.reason) for r in whole.rejected],
            )
        finally:
            await conn.close()
            await pool.close()
            await redis_client.aclose()

    taken, accepted, rejected = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert {message for message, _ in rejected} >= set(OUTLIERS), "the outliers are teleports"
    assert any(message in MOVED for message, _ in rejected), "the move is confirmed only by its third fix"
    assert [(a.message, a.frame.seq) for a in taken.outcome.accepted] == accepted
    assert [(r.message, r.reason) for r in taken.outcome.rejected] == rejected
    assert len(taken.stored.new) == len(accepted)
