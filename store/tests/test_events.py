"""Events in the real PostgreSQL and Redis: stored once per key, published once, details intact."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import pytest
import redis.asyncio as aioredis

from fleet_schemas.events import EVENT_ENCODER, EVENTS_DECODER, Event
from fleet_store.events import (
    EventOutbox,
    InvalidEventError,
    delete_events,
    events_channel,
    outbox_key,
    read_events,
    rejected_key,
    write_events,
)
from fleet_store.maintain import Retention, maintain
from fleet_store.route_policies import (
    InvalidRoutePolicyError,
    clear_route_policy,
    list_route_policies,
    set_route_policy,
)
from fleet_testing.database import run_on

pytestmark = pytest.mark.stack

NOW_MS = 1_795_000_000_123
T = TypeVar("T")


def event(n: int, *, bus: str = "bus-1", kind: Any = "geofence_entered", **fields: Any) -> Event:
    return Event(
        operator="op-a",
        bus=bus,
        kind=kind,
        time_ms=NOW_MS + n * 1_000,
        cause_ms=NOW_MS + n * 1_000,
        cause_seq=n,
        subject=f"fence-{n % 3}",
        lat=36.75 + n / 1e5,
        lon=3.05,
        **fields,
    )


def with_services(
    database_url: str, redis_url: str, work: Callable[[asyncpg.Pool, aioredis.Redis], Awaitable[T]]
) -> T:
    async def run() -> T:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await work(pool, client)
        finally:
            await client.aclose()
            await pool.close()

    return asyncio.run(run())


async def published(pubsub: aioredis.client.PubSub, client: aioredis.Redis, channel: str) -> list[Event]:
    """Every event published on ``channel`` so far: read up to a marker the test publishes last."""
    await client.publish(channel, b"end")
    got: list[Event] = []
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
        if message is None:
            continue
        if message["data"] == b"end":
            return got
        got += EVENTS_DECODER.decode(message["data"])


def test_the_same_events_written_twice_are_stored_once(database_url: str) -> None:
    events = [event(n) for n in range(5)]

    async def work(conn: asyncpg.Connection) -> tuple[list[Event], list[Event], list[Event], int]:
        first = await write_events(conn, events[:3])
        again = await write_events(conn, [*events, events[4]])
        nothing = await write_events(conn, events)
        return first, again, nothing, int(await conn.fetchval("SELECT count(*) FROM events"))

    first, again, nothing, rows = run_on(database_url, work)
    assert first == events[:3]
    assert again == events[3:], "only the new ones, each once although given twice"
    assert nothing == []
    assert rows == 5


def test_an_event_with_another_cause_is_another_event(database_url: str) -> None:
    base = event(1)
    others = [
        Event(**{**{f: getattr(base, f) for f in base.__struct_fields__}, field: value})
        for field, value in [
            ("cause_seq", 99),
            ("cause_ms", NOW_MS),
            ("subject", "fence-x"),
            ("kind", "overspeed"),
        ]
    ]

    async def work(conn: asyncpg.Connection) -> int:
        return len(await write_events(conn, [base, *others]))

    assert run_on(database_url, work) == 5


def test_every_field_and_the_details_json_round_trip(database_url: str) -> None:
    details: dict[str, Any] = {
        "fence_id": "depot-Ω",
        "name": "Gare routière du Caroubier — quai 3",
        "speed_mps": 27.777777777777779,
        "limit_mps": 22.2,
        "duration_s": 6.5,
        "crossed": True,
        "nothing": None,
        "big": 2**53 + 1,
        "nested": {"list": [1, 2.5, "trois", {"x": []}]},
    }
    stored = event(
        7,
        kind="overspeed",
        trip_id="T-1",
        start_date="20261201",
        start_time="25:10:00",
        route_id="R-7",
        details=details,
    )
    bare = Event(
        operator="op-a", bus="bus-2", kind="bus_offline", time_ms=NOW_MS, cause_ms=NOW_MS - 1, cause_seq=0
    )

    async def work(conn: asyncpg.Connection) -> list[Event]:
        await write_events(conn, [stored, bare])
        return await read_events(conn, "op-a")

    assert run_on(database_url, work) == [stored, bare]


def test_events_are_read_newest_first_and_filtered(database_url: str) -> None:
    events = [
        event(n, bus=f"bus-{n % 2}", kind="stop_arrived" if n % 3 else "stop_departed") for n in range(12)
    ]
    other = Event(
        operator="op-b", bus="bus-0", kind="stop_arrived", time_ms=NOW_MS, cause_ms=NOW_MS, cause_seq=1
    )

    async def work(conn: asyncpg.Connection) -> dict[str, list[int]]:
        await write_events(conn, [*events, other])

        async def seqs(**query: Any) -> list[int]:
            return [e.cause_seq for e in await read_events(conn, "op-a", **query)]

        return {
            "all": await seqs(),
            "limit": await seqs(limit=3),
            "bus": await seqs(bus="bus-1"),
            "kinds": await seqs(kinds=["stop_departed"]),
            "range": await seqs(since_ms=NOW_MS + 2_000, until_ms=NOW_MS + 5_000),
        }

    got = run_on(database_url, work)
    assert got["all"] == list(range(11, -1, -1)), "the other operator's event is not listed"
    assert got["limit"] == [11, 10, 9]
    assert got["bus"] == [11, 9, 7, 5, 3, 1]
    assert got["kinds"] == [9, 6, 3, 0]
    assert got["range"] == [4, 3, 2], "since is inclusive, until exclusive"


def test_deleted_events_are_gone_and_can_be_stored_again(database_url: str) -> None:
    events = [event(n) for n in range(4)]

    async def work(conn: asyncpg.Connection) -> tuple[int, list[int], int]:
        await write_events(conn, events)
        deleted = await delete_events(conn, events[1:3])
        left = [e.cause_seq for e in await read_events(conn, "op-a")]
        return deleted, left, len(await write_events(conn, events))

    assert run_on(database_url, work) == (2, [3, 0], 2)


def test_fleet_db_maintain_drops_events_past_their_retention(database_url: str) -> None:
    old = Event(
        operator="op-a", bus="bus-1", kind="bus_online", time_ms=1_580_000_000_000, cause_ms=0, cause_seq=0
    )

    yesterday_ms = int(time.time() * 1000) - 86_400_000
    recent = Event(
        operator="op-a", bus="bus-1", kind="bus_online", time_ms=yesterday_ms, cause_ms=0, cause_seq=0
    )

    async def work(conn: asyncpg.Connection) -> tuple[int, list[Event]]:
        await write_events(conn, [old, recent])
        report = await maintain(database_url, Retention(events_days=30))
        return report.chunks_dropped["events"], await read_events(conn, "op-a")

    dropped, left = run_on(database_url, work)
    assert dropped == 1
    assert left == [recent]


def test_an_event_with_a_nul_in_its_details_is_refused_and_nothing_of_its_batch_is_stored(
    database_url: str,
) -> None:
    async def work(conn: asyncpg.Connection) -> int:
        with pytest.raises(InvalidEventError, match="NUL"):
            await write_events(conn, [event(1), event(2, details={"name": "a\x00b"})])
        return int(await conn.fetchval("SELECT count(*) FROM events"))

    assert run_on(database_url, work) == 0


def test_two_flushers_racing_over_one_outbox_store_and_publish_each_event_once(
    database_url: str, redis_url: str
) -> None:
    events = [event(n, bus=f"bus-{n % 5}") for n in range(300)]

    async def work(pool: asyncpg.Pool, client: aioredis.Redis) -> tuple[list[int], list[Event], int, int]:
        await client.rpush(outbox_key("op-a"), *[EVENT_ENCODER.encode(e) for e in events])
        pubsub = client.pubsub()
        await pubsub.subscribe(events_channel("op-a"))
        other = aioredis.Redis.from_url(redis_url)
        try:
            # small batches, so the two interleave over many rounds
            stored = await asyncio.gather(
                EventOutbox(client, batch=7).flush(pool, ["op-a"]),
                EventOutbox(other, batch=11).flush(pool, ["op-a"]),
            )
        finally:
            await other.aclose()
        got = await published(pubsub, client, events_channel("op-a"))
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        rows = int(await pool.fetchval("SELECT count(*) FROM events"))
        return list(stored), got, rows, int(await client.llen(outbox_key("op-a")))

    stored, got, rows, left = with_services(database_url, redis_url, work)
    assert sum(stored) == 300
    assert rows == 300
    assert left == 0
    assert Counter(e.key for e in got) == Counter(e.key for e in events), "each event published once"


def test_a_flush_after_a_crash_between_storing_and_removing_publishes_nothing_again(
    database_url: str, redis_url: str
) -> None:
    events = [event(n) for n in range(4)]

    async def work(pool: asyncpg.Pool, client: aioredis.Redis) -> tuple[int, list[Event], int]:
        await client.rpush(outbox_key("op-a"), *[EVENT_ENCODER.encode(e) for e in events])
        async with pool.acquire() as conn:  # the crashed flusher got this far
            await write_events(conn, events[:2])
        pubsub = client.pubsub()
        await pubsub.subscribe(events_channel("op-a"))
        stored = await EventOutbox(client).flush(pool, ["op-a"])
        got = await published(pubsub, client, events_channel("op-a"))
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        return stored, got, int(await client.llen(outbox_key("op-a")))

    stored, got, left = with_services(database_url, redis_url, work)
    assert stored == 2
    assert got == events[2:]
    assert left == 0


def test_an_outbox_item_that_is_not_a_storable_event_is_kept_aside_and_the_rest_flows(
    database_url: str, redis_url: str
) -> None:
    good = [event(1), event(2)]
    bad = [b"{not json", EVENT_ENCODER.encode(event(3, details={"name": "\x00"})), b'{"operator": "op-a"}']

    async def work(pool: asyncpg.Pool, client: aioredis.Redis) -> tuple[int, list[Any], int]:
        await client.rpush(outbox_key("op-a"), bad[0], EVENT_ENCODER.encode(good[0]), *bad[1:])
        await client.rpush(outbox_key("op-a"), EVENT_ENCODER.encode(good[1]))
        stored = await EventOutbox(client).flush(pool, ["op-a"])
        return (
            stored,
            await client.lrange(rejected_key("op-a"), 0, -1),
            int(await client.llen(outbox_key("op-a"))),
        )

    stored, rejected, left = with_services(database_url, redis_url, work)
    assert stored == 2
    assert rejected == bad
    assert left == 0


def test_route_policies_are_set_replaced_listed_and_cleared(database_url: str) -> None:
    async def work(conn: asyncpg.Connection) -> tuple[dict[str, tuple[float, float]], list[str], bool, bool]:
        await set_route_policy(conn, "op-a", "R1", 3_000.0, 2_000.0)
        await set_route_policy(conn, "op-a", "R2", 1_000.0, 800.0)
        await set_route_policy(conn, "op-a", "R1", 2_500.0, 2_000.0)
        await set_route_policy(conn, "op-b", "R1", 900.0, 600.0)
        loaded = {
            p.route_id: (p.deviation_leave_m, p.deviation_return_m)
            for p in await list_route_policies(conn, "op-a")
        }
        listed = [f"{p.operator}/{p.route_id}" for p in await list_route_policies(conn)]
        cleared = await clear_route_policy(conn, "op-a", "R2")
        again = await clear_route_policy(conn, "op-a", "R2")
        return loaded, listed, cleared, again

    loaded, listed, cleared, again = run_on(database_url, work)
    assert loaded == {"R1": (2_500.0, 2_000.0), "R2": (1_000.0, 800.0)}
    assert listed == ["op-a/R1", "op-a/R2", "op-b/R1"]
    assert (cleared, again) == (True, False)


@pytest.mark.parametrize(("leave_m", "return_m"), [(1_000.0, 1_000.0), (1_000.0, 1_500.0), (1_000.0, 0.0)])
def test_a_route_policy_without_hysteresis_is_refused(
    database_url: str, leave_m: float, return_m: float
) -> None:
    async def work(conn: asyncpg.Connection) -> int:
        with pytest.raises(InvalidRoutePolicyError):
            await set_route_policy(conn, "op-a", "R1", leave_m, return_m)
        return int(await conn.fetchval("SELECT count(*) FROM route_policies"))

    assert run_on(database_url, work) == 0
