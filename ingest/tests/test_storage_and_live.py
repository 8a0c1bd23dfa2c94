"""History in TimescaleDB and live state in Redis, against the real servers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis

from fleet_ingest.assess import Accepted, Incoming, Rejected
from fleet_ingest.live import newest_positions
from fleet_ingest.service import FailingBuses, open_pool
from fleet_ingest.storage import (
    _CLAIM_STAGED,
    _MOVE_STAGED,
    PART_MIN_FRAMES,
    POSITION_COLUMNS,
    RAW_KEPT_BYTES,
    Stored,
    _position_row,
    parts_by_device,
    store_batch,
    store_messages,
)
from fleet_schemas.live import LIVE_DECODER
from fleet_store.events import outbox_key
from fleet_store.live import (
    UNWRITTEN,
    LiveState,
    OfflineWrite,
    Processing,
    ProcessingWrite,
    geo_key,
    positions_channel,
    proc_key,
)
from fleet_store.maintain import Retention, maintain, refresh_rollups
from fleet_testing.frames import frame

pytestmark = pytest.mark.stack

NOW_MS = 1_795_000_000_000
T = TypeVar("T")


def accepted(seq: int, **fields: object) -> Accepted:
    return Accepted("op-a", "unit-1-k1", frame("unit-1", seq, **fields))


def test_duplicate_frames_are_stored_once_and_reported_as_not_new(database_url: str) -> None:
    async def scenario() -> tuple[set[tuple[str, int]], set[tuple[str, int]], int]:
        pool = await open_pool(database_url)
        try:
            first = (await store_batch(pool, uuid.uuid4(), [accepted(1), accepted(2), accepted(2)], [])).new
            second = (await store_batch(pool, uuid.uuid4(), [accepted(2), accepted(3)], [])).new
            count = await pool.fetchval("SELECT count(*) FROM positions")
            return first, second, count
        finally:
            await pool.close()

    first, second, count = asyncio.run(scenario())
    assert first == {("unit-1", 1), ("unit-1", 2)}
    assert second == {("unit-1", 3)}
    assert count == 3


def test_a_batch_retried_after_an_unknown_commit_outcome_is_stored_once(database_url: str) -> None:
    bad = Rejected("fleet/v1/op-a/unit-1/frames", "undecodable", "garbage", "unit-1", None, b"\xc1")
    batch = uuid.uuid4()

    async def scenario() -> tuple[set[tuple[str, int]], set[tuple[str, int]], int, int]:
        pool = await open_pool(database_url)
        try:
            first = (await store_batch(pool, batch, [accepted(1)], [bad])).new
            again = (await store_batch(pool, batch, [accepted(1)], [bad])).new
            return (
                first,
                again,
                await pool.fetchval("SELECT count(*) FROM positions"),
                await pool.fetchval("SELECT count(*) FROM rejected_frames"),
            )
        finally:
            await pool.close()

    first, again, positions, rejected = asyncio.run(scenario())
    assert first == {("unit-1", 1)}
    assert again == set()
    assert (positions, rejected) == (1, 1)


def test_rejected_frames_keep_their_raw_bytes_and_reason(database_url: str) -> None:
    bad = Rejected(
        "fleet/v1/op-a/unit-1/frames",
        "bad_signature",
        "signature does not match",
        "unit-1",
        None,
        b"\x94\x01raw",
    )

    async def scenario() -> asyncpg.Record:
        pool = await open_pool(database_url)
        try:
            await store_batch(pool, uuid.uuid4(), [], [bad])
            row = await pool.fetchrow("SELECT topic, reason, detail, device, seq, raw FROM rejected_frames")
            assert row is not None
            return row
        finally:
            await pool.close()

    row = asyncio.run(scenario())
    assert dict(row) == {
        "topic": bad.topic,
        "reason": "bad_signature",
        "detail": bad.detail,
        "device": "unit-1",
        "seq": None,
        "raw": bad.raw,
    }


async def _update(live: LiveState, *frames: Accepted) -> int:
    """Write accepted frames to the live state as ingest does, received at NOW_MS."""
    return (await live.update(newest_positions(frames, NOW_MS), NOW_MS)).moved


def test_live_position_moves_forward_only_and_is_published(redis_url: str) -> None:
    async def scenario() -> tuple[list[int], int, list[Any], list[bytes]]:
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub()
        await pubsub.subscribe(positions_channel("op-a"))
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        live = LiveState(client, ttl_s=60)
        moved = [
            await _update(live, accepted(5, lat=36.70), accepted(4, lat=36.60)),
            await _update(live, accepted(3, lat=36.50)),  # older: must not move it back
            await _update(live, accepted(6, lat=36.80)),
        ]
        position = await live.position("op-a", "BUS-01")
        assert position is not None
        near = await client.geosearch(geo_key("op-a"), longitude=3.042, latitude=36.8, radius=1, unit="km")
        published: list[bytes] = []
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] == "message":
                published.append(message["data"])
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
        return moved, position.seq, list(near), published

    moved, seq, near, published = asyncio.run(scenario())
    assert moved == [1, 0, 1]
    assert seq == 6
    assert near == [b"BUS-01"]
    assert [LIVE_DECODER.decode(p[1:-1]).seq for p in published] == [5, 6]


def test_processing_state_is_written_only_at_the_version_it_was_read(redis_url: str) -> None:
    async def scenario() -> tuple[list[set[tuple[str, str]]], list[Processing], int, list[Any]]:
        client = aioredis.Redis.from_url(redis_url)
        live = LiveState(client, ttl_s=60)
        bus = ("op-a", "BUS-01")
        conflicts = []
        for seq, write in [
            (5, ProcessingWrite(UNWRITTEN, b"p5", b"d5", [b'{"e":5}'])),
            (6, ProcessingWrite(UNWRITTEN, b"p6", b"d6", [b'{"e":6}'])),  # read before the first write: loses
        ]:
            updated = await live.update(newest_positions([accepted(seq)], NOW_MS), NOW_MS, {bus: write})
            conflicts.append(updated.conflicts)
        (read_again,) = await live.processing([bus])
        write = ProcessingWrite(read_again.version, b"p6", b"d6", [b'{"e":6}'])
        updated = await live.update(newest_positions([accepted(6)], NOW_MS), NOW_MS, {bus: write})
        conflicts.append(updated.conflicts)
        held = await live.processing([bus, ("op-a", "BUS-02")])
        position = await live.position(*bus)
        outbox = await client.lrange(outbox_key("op-a"), 0, -1)
        await client.aclose()
        assert position is not None
        assert held[0].version not in {UNWRITTEN, read_again.version}
        return conflicts, held, position.seq, outbox

    conflicts, held, seq, outbox = asyncio.run(scenario())
    assert conflicts == [set(), {("op-a", "BUS-01")}, set()]
    assert [(h.progress, h.state) for h in held] == [(b"p6", b"d6"), (None, None)]
    assert held[1] == Processing()
    assert seq == 6
    assert outbox == [b'{"e":5}', b'{"e":6}']  # the lost write queued nothing


def test_a_version_read_before_redis_lost_the_state_is_refused_however_many_writes_follow(
    redis_url: str,
) -> None:
    """A counter would restart at 0 after the loss and, once back at the version a slow process read
    before it, let that process's stale state win; versions carry Redis's clock, so none comes back."""

    async def scenario() -> tuple[set[tuple[str, str]], Processing]:
        client = aioredis.Redis.from_url(redis_url)
        live = LiveState(client, ttl_s=60)
        bus = ("op-a", "BUS-01")

        async def write_at_the_version_held(seq: int) -> str:
            (held,) = await live.processing([bus])
            write = ProcessingWrite(held.version, f"p{seq}".encode(), f"d{seq}".encode())
            updated = await live.update(newest_positions([accepted(seq)], NOW_MS), NOW_MS, {bus: write})
            assert not updated.conflicts
            return held.version

        for seq in range(1, 4):
            await write_at_the_version_held(seq)
        (stale,) = await live.processing([bus])  # a slow process reads here, then stalls
        await client.delete(proc_key(*bus))  # Redis loses the state
        versions = [await write_at_the_version_held(seq) for seq in range(4, 7)]  # as many as before
        assert versions[0] == UNWRITTEN
        assert stale.version not in versions
        late = ProcessingWrite(stale.version, b"stale", b"stale")
        updated = await live.update(newest_positions([accepted(9)], NOW_MS), NOW_MS, {bus: late})
        (held,) = await live.processing([bus])
        await client.aclose()
        return updated.conflicts, held

    conflicts, held = asyncio.run(scenario())
    assert conflicts == {("op-a", "BUS-01")}
    assert (held.progress, held.state) == (b"p6", b"d6")


def test_a_version_read_before_an_older_snapshot_was_restored_is_refused(redis_url: str) -> None:
    async def scenario() -> tuple[set[tuple[str, str]], set[tuple[str, str]], Processing]:
        client = aioredis.Redis.from_url(redis_url)
        live = LiveState(client, ttl_s=60)
        bus = ("op-a", "BUS-01")
        first = ProcessingWrite(UNWRITTEN, b"p1", b"d1")
        await live.update(newest_positions([accepted(1)], NOW_MS), NOW_MS, {bus: first})
        snapshot = await client.dump(proc_key(*bus))
        assert snapshot is not None
        (held,) = await live.processing([bus])
        second = ProcessingWrite(held.version, b"p2", b"d2")
        await live.update(newest_positions([accepted(2)], NOW_MS), NOW_MS, {bus: second})
        (stale,) = await live.processing([bus])  # read after the snapshot was taken
        await client.restore(proc_key(*bus), 0, snapshot, replace=True)  # the snapshot is restored
        again = ProcessingWrite(held.version, b"p2'", b"d2'")  # the state after the snapshot, run again
        rerun = await live.update(newest_positions([accepted(2)], NOW_MS), NOW_MS, {bus: again})
        late = ProcessingWrite(stale.version, b"stale", b"stale")
        refused = await live.update(newest_positions([accepted(3)], NOW_MS), NOW_MS, {bus: late})
        (now,) = await live.processing([bus])
        await client.aclose()
        return rerun.conflicts, refused.conflicts, now

    rerun, refused, now = asyncio.run(scenario())
    assert rerun == set()
    assert refused == {("op-a", "BUS-01")}
    assert (now.progress, now.state) == (b"p2'", b"d2'")


def test_a_state_written_by_a_counting_version_is_taken_over_at_that_version(redis_url: str) -> None:
    """Hashes written before versions carried the clock hold a plain count; they go on from it."""

    async def scenario() -> tuple[set[tuple[str, str]], Processing]:
        client = aioredis.Redis.from_url(redis_url)
        live = LiveState(client, ttl_s=60)
        bus = ("op-a", "BUS-01")
        await client.hset(proc_key(*bus), mapping={"v": 5, "progress": b"p5", "detect": b"d5"})
        (held,) = await live.processing([bus])
        write = ProcessingWrite(held.version, b"p6", b"d6")
        updated = await live.update(newest_positions([accepted(6)], NOW_MS), NOW_MS, {bus: write})
        (now,) = await live.processing([bus])
        await client.aclose()
        assert held.version == "5"
        return updated.conflicts, now

    conflicts, now = asyncio.run(scenario())
    assert conflicts == set()
    assert now.version.endswith(".6")
    assert (now.progress, now.state) == (b"p6", b"d6")


def test_a_silent_bus_is_declared_offline_once_whoever_sweeps(redis_url: str) -> None:
    async def scenario() -> tuple[list[int], int, list[Processing], list[Any]]:
        client = aioredis.Redis.from_url(redis_url)
        live = LiveState(client, ttl_s=60)
        bus = ("op-a", "BUS-01")
        await live.update(
            newest_positions([accepted(5)], NOW_MS), NOW_MS, {bus: ProcessingWrite(UNWRITTEN, None, b"s")}
        )
        early = await live.silent("op-a", NOW_MS - 1)
        silent = await live.silent("op-a", NOW_MS + 1_000)
        write = OfflineWrite("op-a", "BUS-01", silent[0].processing.version, b"off", b'{"offline":1}')
        declared = list(
            await asyncio.gather(*(live.declare_offline([write], NOW_MS + 1_000) for _ in range(3)))
        )
        held = await live.processing([bus])
        outbox = await client.lrange(outbox_key("op-a"), 0, -1)
        after = await live.silent("op-a", NOW_MS + 1_000)
        await client.aclose()
        return declared, len(early) + len(after), held, outbox

    declared, others, held, outbox = asyncio.run(scenario())
    assert sorted(declared) == [0, 0, 1]
    assert others == 0  # not silent before its last update; not looked at again once offline
    assert [(h.progress, h.state) for h in held] == [(None, b"off")]
    assert outbox == [b'{"offline":1}']


def test_polar_fix_updates_the_hash_but_not_the_geo_set(redis_url: str) -> None:
    async def scenario() -> int:
        client = aioredis.Redis.from_url(redis_url)
        moved = await _update(LiveState(client), accepted(1, lat=89.0))
        await client.aclose()
        return moved

    assert asyncio.run(scenario()) == 1
    assert redis.Redis.from_url(redis_url).zcard(geo_key("op-a")) == 0


def test_expired_buses_are_pruned_from_the_geo_set(redis_url: str) -> None:
    async def scenario() -> tuple[int, int]:
        client = aioredis.Redis.from_url(redis_url)
        live = LiveState(client, ttl_s=60)
        await _update(live, accepted(1))
        kept = await live.prune(NOW_MS + 30_000)
        pruned = await live.prune(NOW_MS + 61_000)
        await client.aclose()
        return kept, pruned

    assert asyncio.run(scenario()) == (0, 1)


def test_rollups_follow_late_frames_and_retention_drops_old_chunks(database_url: str) -> None:
    minute = 1_795_000_020_000 - 1_795_000_020_000 % 60_000
    recent = [accepted(i, time_ms=minute + i * 1_000, speed_mps=10.0 + i) for i in range(1, 11)]
    late = [accepted(100, time_ms=minute + 30_500, speed_mps=40.0)]
    ancient = [accepted(200, time_ms=int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1000))]

    async def scenario() -> tuple[asyncpg.Record | None, asyncpg.Record | None, int, dict[str, int]]:
        pool = await open_pool(database_url)
        try:
            await store_batch(pool, uuid.uuid4(), recent, [])
            await maintain(database_url)
            before = await pool.fetchrow(
                "SELECT frames, speed_max FROM positions_1m WHERE bucket = fleet_ms($1)", minute
            )
            await store_batch(pool, uuid.uuid4(), late + ancient, [])
            report = await maintain(database_url, Retention(positions_days=365 * 3))
            after = await pool.fetchrow(
                "SELECT frames, speed_max FROM positions_1m WHERE bucket = fleet_ms($1)", minute
            )
            old = await pool.fetchval("SELECT count(*) FROM positions WHERE time < '2021-01-01'")
            return before, after, old, report.chunks_dropped
        finally:
            await pool.close()

    before, after, old, dropped = asyncio.run(scenario())
    assert before is not None
    assert after is not None
    assert (before["frames"], before["speed_max"]) == (10, 20.0)
    assert (after["frames"], after["speed_max"]) == (11, 40.0)
    assert old == 0
    assert dropped["positions"] >= 1


def _run(database_url: str, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def scenario() -> T:
        pool = await open_pool(database_url)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(scenario())


def test_same_sequence_with_another_fix_time_is_stored_once_and_recorded_as_seq_conflict(
    database_url: str,
) -> None:
    resent = [accepted(2, time_ms=NOW_MS + 3_600_000), accepted(3)]

    async def work(pool: asyncpg.Pool) -> tuple[Stored, Stored, list[asyncpg.Record], list[asyncpg.Record]]:
        first = await store_batch(pool, uuid.uuid4(), [accepted(1), accepted(2)], [])
        second = await store_batch(pool, uuid.uuid4(), resent, [])
        rows = await pool.fetch("SELECT seq, time FROM positions ORDER BY seq")
        rejected = await pool.fetch("SELECT reason, device, seq FROM rejected_frames")
        return first, second, rows, rejected

    first, second, rows, rejected = _run(database_url, work)
    assert first.new == {("unit-1", 1), ("unit-1", 2)}
    assert second.new == {("unit-1", 3)}
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert [r.reason for r in second.refused] == ["seq_conflict"]
    assert [dict(r) for r in rejected] == [{"reason": "seq_conflict", "device": "unit-1", "seq": 2}]
    assert second.kept(resent) == [resent[1]]


def test_a_conflict_within_one_batch_refuses_only_the_frame_that_came_second(database_url: str) -> None:
    original, resent = accepted(5), accepted(5, time_ms=NOW_MS - 3_600_000)

    async def work(pool: asyncpg.Pool) -> Stored:
        return await store_batch(pool, uuid.uuid4(), [original, resent], [])

    stored = _run(database_url, work)
    assert stored.new == {("unit-1", 5)}
    assert [r.reason for r in stored.refused] == ["seq_conflict"]
    assert stored.kept([original, resent]) == [original]


def test_a_rejection_seen_again_is_counted_not_stored_again(database_url: str) -> None:
    topic = "fleet/v1/op-a/unit-1/frames"
    bad_message = Rejected(topic, "undecodable", "garbage", "unit-1", None, b"\xc1\xc1")
    bad_frame = Rejected(topic, "teleport", "failed the teleport check", "unit-1", 7, b"\x96frame")
    other = Rejected(topic, "undecodable", "garbage", "unit-1", None, b"\xc1\xc2")

    async def work(pool: asyncpg.Pool) -> tuple[list[int], int]:
        repeated = []
        for rows in ([bad_message, bad_frame], [bad_message, bad_frame], [other, other], [bad_message]):
            repeated.append((await store_batch(pool, uuid.uuid4(), [], rows)).repeated)
        return repeated, await pool.fetchval("SELECT count(*) FROM rejected_frames")

    repeated, count = _run(database_url, work)
    assert repeated == [0, 2, 1, 1]
    assert count == 3


def test_a_huge_rejected_payload_keeps_a_bounded_prefix_with_its_length_and_hash(database_url: str) -> None:
    raw = os.urandom(RAW_KEPT_BYTES * 8)
    bad = Rejected("fleet/v1/op-a/unit-1/frames", "too_large", "too big", "unit-1", None, raw)

    async def work(pool: asyncpg.Pool) -> asyncpg.Record:
        await store_batch(pool, uuid.uuid4(), [], [bad])
        row = await pool.fetchrow("SELECT raw, raw_length, raw_sha256 FROM rejected_frames")
        assert row is not None
        return row

    row = _run(database_url, work)
    assert bytes(row["raw"]) == raw[:RAW_KEPT_BYTES]
    assert row["raw_length"] == len(raw)
    assert bytes(row["raw_sha256"]) == hashlib.sha256(raw).digest()


def test_a_message_postgresql_refuses_is_isolated_and_kept_as_unstorable(database_url: str) -> None:
    # Frame() does not validate, so this frame carries what the wire format refuses: a NUL in text.
    poison = Accepted("op-a", "unit-1-k1", frame("unit-1", 3, trip_id="T\x00"), message=2)
    incoming = [Incoming("fleet/v1/op-a/unit-1/frames", f"message {i}".encode()) for i in range(5)]
    good = [Accepted("op-a", "unit-1-k1", frame("unit-1", 10 + i), message=i) for i in (0, 1, 3, 4)]
    batch = uuid.uuid4()

    async def work(pool: asyncpg.Pool) -> tuple[Stored, Stored, list[int], list[asyncpg.Record]]:
        stored = await store_messages(pool, batch, incoming, [*good, poison], [])
        retried = await store_messages(
            pool, batch, incoming, [*good, poison], []
        )  # an unknown commit outcome
        seqs = [r["seq"] for r in await pool.fetch("SELECT seq FROM positions ORDER BY seq")]
        rejected = await pool.fetch("SELECT reason, detail, raw FROM rejected_frames")
        return stored, retried, seqs, rejected

    stored, retried, seqs, rejected = _run(database_url, work)
    assert seqs == [10, 11, 13, 14]
    assert stored.dropped == {2}
    assert stored.new == {("unit-1", s) for s in seqs}
    assert retried.new == set()
    assert [(r["reason"], bytes(r["raw"])) for r in rejected] == [("unstorable", b"message 2")]
    assert "CharacterNotInRepertoireError (22021)" in rejected[0]["detail"]
    assert poison not in stored.kept([*good, poison])


def test_a_retry_above_committed_halves_keeps_what_they_stored(database_url: str) -> None:
    """A batch whose poison message was isolated by halving fails again on a retry (as after a
    transient error in one half): the halves that committed answer from ``done``, not as empty."""
    poison = Accepted("op-a", "unit-1-k1", frame("unit-1", 3, trip_id="T\x00"), message=2)
    incoming = [Incoming("fleet/v1/op-a/unit-1/frames", f"message {i}".encode()) for i in range(4)]
    good = [Accepted("op-a", "unit-1-k1", frame("unit-1", 10 + i), message=i) for i in (0, 1, 3)]
    batch = uuid.uuid4()

    async def work(pool: asyncpg.Pool) -> tuple[Stored, Stored]:
        done: dict[uuid.UUID, Stored] = {}
        first = await store_messages(pool, batch, incoming, [*good, poison], [], done=done)
        del done[batch]  # the whole batch is tried again; its halves are known
        return first, await store_messages(pool, batch, incoming, [*good, poison], [], done=done)

    first, retried = _run(database_url, work)
    assert retried.new == first.new == {("unit-1", s) for s in (10, 11, 13)}
    assert retried.dropped == first.dropped == {2}
    assert [r.reason for r in retried.refused] == ["unstorable"]


def _two_devices_batch(frames_each: int) -> tuple[list[Incoming], list[Accepted]]:
    """One message per frame, from two devices that land in different parts."""
    incoming: list[Incoming] = []
    items: list[Accepted] = []
    for n in range(frames_each):
        for device in ("unit-1", "unit-4"):
            items.append(Accepted("op-a", f"{device}-k1", frame(device, n + 1), message=len(incoming)))
            incoming.append(Incoming(f"fleet/v1/op-a/{device}/frames", b"signed bytes"))
    return incoming, items


def test_a_big_batch_is_split_by_device_and_small_ones_are_not() -> None:
    incoming, items = _two_devices_batch(PART_MIN_FRAMES)
    groups = parts_by_device(incoming, len(items), parts=2)
    assert len(groups) == 2
    assert sorted(i for group in groups for i in group) == list(range(len(incoming)))
    for group in groups:
        assert len({incoming[i].topic for i in group}) == 1, "one device's messages in one part"
    assert parts_by_device(incoming, PART_MIN_FRAMES * 2 - 1, parts=2) == [list(range(len(incoming)))]
    assert parts_by_device(incoming, len(items), parts=1) == [list(range(len(incoming)))]


def test_a_batch_stored_in_concurrent_parts_is_stored_once_and_a_retry_redoes_only_the_missing_part(
    database_url: str,
) -> None:
    incoming, items = _two_devices_batch(PART_MIN_FRAMES)
    batch = uuid.uuid4()

    async def work(pool: asyncpg.Pool) -> tuple[Stored, Stored, Stored, int]:
        first = await store_messages(pool, batch, incoming, items, [], parts=2)
        # An attempt that knows part 0 committed (as after part 1 failed) runs part 1 only: its
        # commit was already made, so it finds nothing new, and part 0's answer is the one kept.
        kept = Stored(new={("unit-4", 0)})
        part_0 = uuid.uuid5(batch, "part 0 of 2")
        retried = await store_messages(pool, batch, incoming, items, [], parts=2, done={part_0: kept})
        again = await store_messages(pool, batch, incoming, items, [], parts=2)
        return first, retried, again, await pool.fetchval("SELECT count(*) FROM positions")

    first, retried, again, count = _run(database_url, work)
    assert count == len(items)
    assert first.new == {(a.frame.device, a.frame.seq) for a in items}
    assert retried.new == {("unit-4", 0)}
    assert again.new == set(), "the same batch id stores nothing twice"


def test_a_minute_marked_while_its_rollup_is_refreshed_is_refreshed_again(database_url: str) -> None:
    minute = 1_795_000_020_000 - 1_795_000_020_000 % 60_000
    first = [accepted(i, time_ms=minute + i * 1_000) for i in range(1, 6)]
    later = [accepted(i, time_ms=minute + i * 1_000) for i in range(6, 9)]

    async def work(pool: asyncpg.Pool) -> tuple[int, int]:
        await store_batch(pool, uuid.uuid4(), first, [])
        # A batch for the same minute is in flight (uncommitted) while the refresh runs.
        async with pool.acquire() as ingest_conn:
            transaction = ingest_conn.transaction()
            await transaction.start()
            await ingest_conn.copy_records_to_table(
                "positions_staging", records=[_position_row(a) for a in later], columns=POSITION_COLUMNS
            )
            await ingest_conn.fetchrow(_CLAIM_STAGED, uuid.uuid4(), len(later))
            await ingest_conn.execute(_MOVE_STAGED)
            async with pool.acquire() as refresher:
                await refresh_rollups(refresher)
            await transaction.commit()
        during = await pool.fetchval("SELECT frames FROM positions_1m WHERE bucket = fleet_ms($1)", minute)
        async with pool.acquire() as refresher:
            await refresh_rollups(refresher)
        after = await pool.fetchval("SELECT frames FROM positions_1m WHERE bucket = fleet_ms($1)", minute)
        return during, after

    assert _run(database_url, work) == (5, 8)


def test_a_query_postgresql_does_not_answer_is_given_up_after_the_timeout(database_url: str) -> None:
    """A silent network partition looks like this to ingest: a query that never answers. Without a
    deadline it waited for TCP's retransmission backoff, 25 s after a 30 s partition had healed
    (make chaos); with one it fails as a store error, retried on a new connection."""

    async def scenario() -> int:
        pool = await open_pool(database_url, timeout_s=0.5)
        try:
            with pytest.raises(TimeoutError):
                await pool.execute("SELECT pg_sleep(30)")
            answer: int = await pool.fetchval("SELECT 1")
            return answer
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == 1, "the pool serves again after the timeout"


def test_a_bus_whose_processing_failed_is_not_looked_up_again_within_the_window() -> None:
    failing = FailingBuses(size=2)
    a, b, c = ("op", "a"), ("op", "b"), ("op", "c")
    failing.note([a], now=100.0)
    assert failing.without([a, b], now=150.0, window_s=60.0) == {b}
    assert failing.without([a, b], now=161.0, window_s=60.0) == {a, b}, "the window passed"
    failing.note([b, c], now=170.0)  # size 2: a, the oldest, is forgotten
    assert failing.without([a, b, c], now=171.0, window_s=60.0) == {a}
