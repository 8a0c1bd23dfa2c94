"""Trip ETAs and stop boards in the real Redis: newest prediction wins, passed stops leave the boards."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from fleet_schemas.trips import StopEta, TripEtas
from fleet_store.etas import BOARD_KEEP_MS, EtaBoards, EtaUpdate, etas_channel

pytestmark = pytest.mark.stack

NOW_MS = 1_795_000_000_000
T = TypeVar("T")


def etas(time_ms: int, stops: dict[str, int], *, trip: str = "T1", bus: str = "bus-1") -> TripEtas:
    return TripEtas(
        operator="op-a",
        trip_id=trip,
        route_id="R1",
        start_date="20261201",
        start_time="08:00:00",
        bus=bus,
        feed_id=1,
        time_ms=time_ms,
        updated_ms=time_ms,
        delay_s=60.0,
        stops=[
            StopEta(
                stop_sequence=n,
                stop_id=stop,
                scheduled_arrival_ms=at - 60_000,
                scheduled_departure_ms=at,
                arrival_ms=at,
                departure_ms=at + 30_000,
                arrival_early_ms=at - 30_000,
                arrival_late_ms=at + 90_000,
            )
            for n, (stop, at) in enumerate(stops.items(), start=1)
        ],
    )


def with_boards(redis_url: str, scenario: Callable[[EtaBoards], Awaitable[T]]) -> T:
    async def run() -> T:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await scenario(EtaBoards(client))
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_a_trip_prediction_is_readable_by_trip_and_on_each_stop_board(redis_url: str) -> None:
    async def scenario(boards: EtaBoards) -> tuple[list[TripEtas], list[str], list[str]]:
        await boards.publish([EtaUpdate(etas(NOW_MS, {"A": NOW_MS + 60_000, "B": NOW_MS + 600_000}))], NOW_MS)
        await boards.publish(
            [EtaUpdate(etas(NOW_MS, {"B": NOW_MS + 300_000}, trip="T2", bus="bus-2"))], NOW_MS
        )
        board_b = [line.trip_id for line in await boards.board("op-a", "B")]
        board_a = [line.trip_id for line in await boards.board("op-a", "A")]
        return await boards.trip("op-a", "T1"), board_a, board_b

    trip, board_a, board_b = with_boards(redis_url, scenario)
    assert [len(t.stops) for t in trip] == [2]
    assert board_a == ["T1"]
    assert board_b == ["T2", "T1"], "the board lists the soonest arrival first"


def test_an_older_prediction_never_replaces_a_newer_one(redis_url: str) -> None:
    async def scenario(boards: EtaBoards) -> tuple[int, list[TripEtas], list[int]]:
        await boards.publish([EtaUpdate(etas(NOW_MS + 10_000, {"A": NOW_MS + 70_000}))], NOW_MS)
        written = await boards.publish([EtaUpdate(etas(NOW_MS, {"A": NOW_MS + 999_000}))], NOW_MS)
        board = [line.arrival_ms for line in await boards.board("op-a", "A")]
        return written, await boards.trip("op-a", "T1"), board

    written, trip, board = with_boards(redis_url, scenario)
    assert written == 0
    assert trip[0].time_ms == NOW_MS + 10_000
    assert board == [NOW_MS + 70_000]


def test_a_passed_stop_leaves_its_board(redis_url: str) -> None:
    async def scenario(boards: EtaBoards) -> tuple[list[str], list[str]]:
        await boards.publish([EtaUpdate(etas(NOW_MS, {"A": NOW_MS + 60_000, "B": NOW_MS + 600_000}))], NOW_MS)
        later = etas(NOW_MS + 90_000, {"B": NOW_MS + 500_000})
        await boards.publish([EtaUpdate(later, gone_stop_ids=("A",))], NOW_MS + 90_000)
        return (
            [line.trip_id for line in await boards.board("op-a", "A")],
            [line.trip_id for line in await boards.board("op-a", "B")],
        )

    board_a, board_b = with_boards(redis_url, scenario)
    assert board_a == []
    assert board_b == ["T1"]


def test_a_line_long_past_its_arrival_is_pruned_from_the_board(redis_url: str) -> None:
    async def scenario(boards: EtaBoards) -> list[str]:
        await boards.publish([EtaUpdate(etas(NOW_MS, {"A": NOW_MS + 60_000}, bus="gone"))], NOW_MS)
        later = NOW_MS + 60_000 + BOARD_KEEP_MS + 1
        await boards.publish([EtaUpdate(etas(later, {"A": later + 60_000}, trip="T2"))], later)
        return [line.trip_id for line in await boards.board("op-a", "A")]

    assert with_boards(redis_url, scenario) == ["T2"]


def test_each_batch_of_predictions_is_published_on_the_operator_channel(redis_url: str) -> None:
    async def scenario(boards: EtaBoards) -> bytes:
        client = aioredis.Redis.from_url(redis_url)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(etas_channel("op-a"))
                await pubsub.get_message(timeout=1.0)
                await boards.publish(
                    [EtaUpdate(etas(NOW_MS, {"A": NOW_MS + 60_000})), EtaUpdate(etas(NOW_MS, {}, trip="T2"))],
                    NOW_MS,
                )
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                assert message is not None
                data: bytes = message["data"]
                return data
        finally:
            await client.aclose()

    published = with_boards(redis_url, scenario)
    assert published.startswith(b"[")
    assert published.count(b'"trip_id"') == 2
