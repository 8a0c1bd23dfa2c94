"""``fleet events reprocess``'s engine against the real database: stored frames give the live events again.

The live side here is ingest's own step on the frames in arrival order: both
buses interleaved, in micro-batches of random sizes, some frames redelivered
in a later batch, each bus's progress and detector state carried between
batches as Redis holds them, frames stored through ``fleet_ingest.storage``
and events through ``fleet_store.events``, and the offline sweep at the end.
Replay then reads the frames back from PostgreSQL in pages that split the
buses' drives anywhere.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_ingest.assess import Accepted, BusKey
from fleet_ingest.reprocess import Replay, ReprocessReport, compare, frames_before, reprocess
from fleet_ingest.service import open_pool
from fleet_ingest.storage import store_batch
from fleet_ingest.trips import OperatorModel, SavedBus, follow
from fleet_processing.detect import DetectContext, load_state, went_offline
from fleet_processing.eta import SegmentHistory
from fleet_processing.fence_geojson import fences_from_geojson
from fleet_processing.geofences import FenceIndex
from fleet_processing.progress import FixPoint
from fleet_schemas.events import Event
from fleet_schemas.frames import Frame
from fleet_store.events import delete_events, read_events, write_events
from fleet_testing.frames import frame
from fleet_testing.trips import (
    ORIGIN_MS,
    TWO_DEPARTURES,
    coaches_on_the_straight_line,
    frames_of,
    line,
    network,
    straight_line_fences,
)

pytestmark = pytest.mark.stack

OPERATOR = "op-r"
H = 3_600
FROM_MS = ORIGIN_MS + 7 * H * 1000 + 50 * 60_000
TO_MS = ORIGIN_MS + 10 * H * 1000
T = TypeVar("T")


def _setting() -> tuple[dict[str, OperatorModel], DetectContext, list[Accepted]]:
    """The straight line with two departures and two fences on it; two coaches, one going silent."""
    feed, net = network([line("straight", departures_s=TWO_DEPARTURES)])
    one, two = coaches_on_the_straight_line(feed)
    frames = _frames("unit-1", "BUS-1", one) + _frames("unit-2", "BUS-2", two)
    frames.sort(key=lambda a: a.frame.time_ms)
    context = DetectContext(
        OPERATOR, fences=FenceIndex(fences_from_geojson(OPERATOR, straight_line_fences()))
    )
    return {OPERATOR: OperatorModel(net, SegmentHistory(OPERATOR))}, context, frames


def _frames(device: str, bus: str, fixes: list[FixPoint]) -> list[Accepted]:
    return [Accepted(OPERATOR, f"{device}-k1", frame) for frame in frames_of(device, bus, fixes)]


async def _live(
    pool: asyncpg.Pool, models: dict[str, OperatorModel], context: DetectContext, frames: list[Accepted]
) -> int:
    """What ingest did with the frames as they arrived; returns how many events it stored."""
    rng = random.Random(11)
    saved: dict[BusKey, SavedBus] = {}
    stored = 0
    k, previous = 0, list[Accepted]()
    while k < len(frames):
        size = rng.randint(1, 15)
        batch = frames[k : k + size]
        k += size
        redelivered = [a for a in previous if rng.random() < 0.2]
        batch = redelivered + batch
        await store_batch(pool, uuid.uuid4(), batch, [])
        now_ms = max(a.frame.time_ms for a in batch) + 1_500
        followed = follow(models, {OPERATOR: context}, batch, saved, now_ms)
        saved = followed.carried(saved)
        async with pool.acquire() as conn:
            stored += len(await write_events(conn, followed.events))
        previous = batch
    swept = []
    for (_, bus), held in saved.items():
        found = went_offline(bus, load_state(held.state), context)
        if found is not None:
            swept.append(found[1])
    async with pool.acquire() as conn:
        return stored + len(await write_events(conn, swept))


def _on_pool(database_url: str, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def run() -> T:
        pool = await open_pool(database_url)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def _replay(
    pool: asyncpg.Pool, models: Any, context: DetectContext, **options: Any
) -> Awaitable[ReprocessReport]:
    return reprocess(pool, OPERATOR, FROM_MS, TO_MS, models=models, context=context, page_rows=17, **options)


async def _stored(pool: asyncpg.Pool) -> list[Event]:
    async with pool.acquire() as conn:
        return await read_events(conn, OPERATOR, since_ms=FROM_MS, until_ms=TO_MS, limit=None)


def _numbers(report: ReprocessReport) -> tuple[int, int, int, int, int, int, int]:
    return (
        report.recomputed,
        report.already_stored,
        len(report.missing),
        len(report.stored_not_recomputed),
        len(report.changed),
        report.added,
        report.deleted,
    )


def test_reprocess_yields_the_events_ingest_stored_and_nothing_new_on_a_second_run(database_url: str) -> None:
    models, context, frames = _setting()

    async def work(pool: asyncpg.Pool) -> tuple[int, list[Event], ReprocessReport, ReprocessReport]:
        live = await _live(pool, models, context, frames)
        first = await _replay(pool, models, context)
        second = await _replay(pool, models, context)
        return live, await _stored(pool), first, second

    live, stored, first, second = _on_pool(database_url, work)
    kinds = {e.kind for e in stored}
    assert {"geofence_entered", "geofence_exited", "overspeed", "bus_offline", "bus_online"} <= kinds, kinds
    assert {"trip_assigned", "stop_arrived", "stop_departed"} <= kinds, kinds
    assert len(stored) == live
    assert first.fixes == len(frames), "every frame stored once, redeliveries included"
    assert _numbers(first) == (live, live, 0, 0, 0, 0, 0)
    assert _numbers(second) == _numbers(first)
    assert {e.kind for e in stored if e.bus == "BUS-2"} >= {"bus_offline"}, "the sweep's, at the range's end"


def test_events_missing_from_the_store_are_added_back_and_only_those(database_url: str) -> None:
    models, context, frames = _setting()

    async def work(pool: asyncpg.Pool) -> tuple[list[Event], ReprocessReport, ReprocessReport, list[Event]]:
        await _live(pool, models, context, frames)
        before = await _stored(pool)
        lost = before[::5]
        async with pool.acquire() as conn:
            await delete_events(conn, lost)
        dry = await _replay(pool, models, context, dry_run=True)
        fixed = await _replay(pool, models, context)
        return before, dry, fixed, await _stored(pool)

    before, dry, fixed, after = _on_pool(database_url, work)
    lost = {e.key for e in before[::5]}
    assert {e.key for e in dry.missing} == lost
    assert dry.added == 0
    assert {e.key for e in fixed.missing} == lost
    assert fixed.added == len(lost)
    assert after == before


def test_replace_deletes_what_replay_does_not_find_and_rewrites_what_it_finds_otherwise(
    database_url: str,
) -> None:
    models, context, frames = _setting()

    async def work(pool: asyncpg.Pool) -> tuple[list[Event], ReprocessReport, ReprocessReport, list[Event]]:
        await _live(pool, models, context, frames)
        before = await _stored(pool)
        altered = msgspec.structs.replace(before[0], details={"forged": True})
        bogus = msgspec.structs.replace(before[1], kind="geofence_dwell", subject="nowhere")
        async with pool.acquire() as conn:
            await delete_events(conn, [before[0]])
            await write_events(conn, [altered, bogus])
        kept = await _replay(pool, models, context)
        replaced = await _replay(pool, models, context, replace=True)
        return before, kept, replaced, await _stored(pool)

    before, kept, replaced, after = _on_pool(database_url, work)
    n = len(before)
    assert _numbers(kept) == (n, n - 1, 0, 1, 1, 0, 0), "without --replace nothing stored is touched"
    assert _numbers(replaced) == (n, n - 1, 0, 1, 1, 1, 2)
    assert after == before


def test_a_range_starting_mid_trip_is_right_with_its_warm_up_and_not_without(database_url: str) -> None:
    models, context, frames = _setting()
    middle_ms = ORIGIN_MS + (8 * H + 3 * 60) * 1000

    async def work(pool: asyncpg.Pool) -> tuple[ReprocessReport, ReprocessReport]:
        await _live(pool, models, context, frames)

        def replay(warmup_ms: int) -> Awaitable[ReprocessReport]:
            return reprocess(
                pool,
                OPERATOR,
                middle_ms,
                TO_MS,
                models=models,
                context=context,
                warmup_ms=warmup_ms,
                dry_run=True,
            )

        return await replay(2 * H * 1000), await replay(0)

    warmed, cold = _on_pool(database_url, work)
    assert (len(warmed.missing), len(warmed.stored_not_recomputed), len(warmed.changed)) == (0, 0, 0)
    assert warmed.recomputed > 0
    assert "trip_assigned" in {e.kind for e in cold.missing}, "a cold start assigns the trip again"


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=12))
def test_replay_in_pages_by_bus_gives_the_events_of_one_pass_in_arrival_order(sizes: list[int]) -> None:
    models, context, frames = _setting()
    whole = Replay(models, {OPERATOR: context})
    whole.feed(frames)
    by_bus = sorted(frames, key=lambda a: (a.frame.bus, a.frame.time_ms, a.frame.seq))
    paged = Replay(models, {OPERATOR: context})
    k = 0
    for size in itertools.cycle(sizes):
        if k >= len(by_bus):
            break
        paged.feed(by_bus[k : k + size])
        k += size
    assert sorted(e.key for e in paged.finish(TO_MS)) == sorted(e.key for e in whole.finish(TO_MS))
    assert paged.finish(TO_MS) != [], "the drive raises events"


def test_compare_splits_events_by_key_into_already_missing_extra_and_changed() -> None:
    base = Event(operator=OPERATOR, bus="B", kind="bus_online", time_ms=1, cause_ms=1, cause_seq=1)
    same, lost, gone = (msgspec.structs.replace(base, cause_seq=n) for n in (1, 2, 3))
    moved = msgspec.structs.replace(base, cause_seq=4)
    found = compare(
        [same, lost, msgspec.structs.replace(moved, details={"silent_s": 1.0}), same], [same, gone, moved]
    )
    assert (found.recomputed, found.already) == (3, 1)
    assert (found.missing, found.extra) == ([lost], [gone])
    assert [e.details for e in found.changed] == [{"silent_s": 1.0}]


def test_the_frames_replayed_for_a_lost_state_span_the_whole_batch_and_leave_its_own_out(
    database_url: str,
) -> None:
    """A backlog batch longer than the window still finds what came before it (the window counts back
    from its oldest frame), the stored frames between its frames are read, its own are not, and each bus
    gets at most ``per_bus``, its newest."""
    minute = 60_000
    base = 1_795_000_000_000

    def at(device: str, bus: str, seq: int) -> Frame:
        return frame(device, seq, bus=bus, time_ms=base + seq * minute)

    stored = [
        *(at("unit-1", "BUS-1", n) for n in range(200)),
        *(at("unit-2", "BUS-2", n) for n in range(20)),
        *(at("unit-3", "BUS-3", n) for n in range(200)),
    ]
    long_batch = [at("unit-1", "BUS-1", n) for n in (100, 150, 190)]  # 90 minutes, stored already
    short_batch = [at("unit-2", "BUS-2", 15)]
    late_batch = [at("unit-3", "BUS-3", 150)]

    async def scenario() -> list[Accepted]:
        pool = await open_pool(database_url)
        try:
            kept = [Accepted("op-a", "k1", f) for f in stored]
            await store_batch(pool, uuid.uuid4(), kept, [])
            async with pool.acquire() as conn:
                return await frames_before(
                    conn,
                    "op-a",
                    {"BUS-1": long_batch, "BUS-2": short_batch, "BUS-3": late_batch},
                    window_s=3_600,
                    per_bus=80,
                )
        finally:
            await pool.close()

    found = [(a.frame.bus, a.frame.seq) for a in asyncio.run(scenario())]
    one = [seq for bus, seq in found if bus == "BUS-1"]
    two = [seq for bus, seq in found if bus == "BUS-2"]
    # BUS-1: minutes 40 to 190 but its batch's 100, 150, 190; the newest 80 of those, in time order
    expected = [n for n in range(40, 191) if n not in (100, 150, 190)][-80:]
    assert one == expected
    assert two == [n for n in range(16) if n != 15]
    # BUS-3: the hour before its batch, no older (60 frames, fewer than per_bus)
    assert [seq for bus, seq in found if bus == "BUS-3"] == list(range(90, 150))
