"""GTFS feed versions in the real database: COPY in, atomic switch, read back, drop."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import TypeVar

import asyncpg
import pytest

from fleet_schemas.gtfs import (
    Agency,
    Calendar,
    CalendarDate,
    Feed,
    Frequency,
    Notice,
    Route,
    Shape,
    Stop,
    StopTime,
    Trip,
)
from fleet_store import gtfs
from fleet_store.errors import FeedActiveError, FeedNotFoundError
from fleet_testing.database import run_on as _on

pytestmark = pytest.mark.stack

T = TypeVar("T")


def _feed(headsign: str = "Oran") -> Feed:
    return Feed(
        agencies=[Agency(agency_id="SOG", name="Sogral", url="https://sogral.dz", timezone="Africa/Algiers")],
        routes=[
            Route(route_id="R1", agency_id="SOG", route_type=3, short_name="1", long_name="Alger - Oran")
        ],
        stops=[
            Stop(stop_id="ALG", lat=36.7347, lon=3.0866, name="Caroubier"),
            Stop(stop_id="ORN", lat=35.6971, lon=-0.6308, name="Oran", parent_station=None),
        ],
        shapes=[
            Shape(
                shape_id="S1",
                lats=[36.7347, 36.2, 35.6971],
                lons=[3.0866, 1.3, -0.6308],
                dist_m=[0, 1.7e5, 3.5e5],
            )
        ],
        trips=[
            Trip(
                trip_id="T1", route_id="R1", service_id="WK", shape_id="S1", direction_id=0, headsign=headsign
            )
        ],
        stop_times=[
            StopTime(
                trip_id="T1", stop_sequence=1, stop_id="ALG", arrival_s=28_800, departure_s=28_800, dist_m=0
            ),
            StopTime(
                trip_id="T1",
                stop_sequence=2,
                stop_id="ORN",
                arrival_s=104_400,
                departure_s=104_400,
                dist_m=3.5e5,
                interpolated=True,
                timepoint=False,
            ),
        ],
        calendars=[
            Calendar(
                service_id="WK",
                days=(True, True, True, True, True, False, True),
                start_date=date(2026, 1, 1),
                end_date=date(2026, 12, 31),
            )
        ],
        calendar_dates=[CalendarDate(service_id="WK", date=date(2026, 7, 5), exception_type=2)],
        frequencies=[Frequency(trip_id="T1", start_s=21_600, end_s=36_000, headway_s=3_600)],
    )


REPORT = {"notices": [Notice(code="expired_calendar", severity="WARNING", count=1)]}


async def _write(conn: asyncpg.Connection, operator: str, feed: Feed) -> int:
    return await gtfs.write_feed(conn, operator, feed, source="test.zip", sha256="0" * 64, report=REPORT)


def test_a_written_feed_reads_back_as_it_was(database_url: str) -> None:
    feed = _feed()

    async def work(conn: asyncpg.Connection) -> tuple[Feed, list[gtfs.FeedVersion], object]:
        feed_id = await _write(conn, "sogral", feed)
        report = await conn.fetchval(
            "SELECT report -> 'notices' -> 0 ->> 'code' FROM gtfs_feeds WHERE id = $1", feed_id
        )
        return await gtfs.load_feed(conn, feed_id), await gtfs.list_feeds(conn, "sogral"), report

    loaded, versions, report = _on(database_url, work)
    assert loaded == feed
    (version,) = versions
    assert version.state == "loaded"
    assert version.counts["gtfs_stop_times"] == 2
    assert report == "expired_calendar"


def test_a_reimport_is_a_new_version_switched_atomically_and_the_previous_is_queryable_until_dropped(
    database_url: str,
) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        first = await _write(conn, "sogral", _feed("Oran"))
        assert await gtfs.active_feed_id(conn, "sogral") is None
        await gtfs.activate(conn, "sogral", first)
        second = await _write(conn, "sogral", _feed("Oran (new)"))
        assert await gtfs.active_feed_id(conn, "sogral") == first
        await gtfs.activate(conn, "sogral", second)
        assert await gtfs.active_feed_id(conn, "sogral") == second
        states = {v.id: v.state for v in await gtfs.list_feeds(conn, "sogral")}
        assert states == {first: "inactive", second: "active"}
        assert (await gtfs.load_feed(conn, first)).trips[0].headsign == "Oran"
        with pytest.raises(FeedActiveError):
            await gtfs.drop_feed(conn, second)
        await gtfs.drop_feed(conn, first)
        with pytest.raises(FeedNotFoundError):
            await gtfs.load_feed(conn, first)
        left = await conn.fetchval("SELECT count(*) FROM gtfs_stop_times WHERE feed_id = $1", first)
        assert left == 0
        assert (await gtfs.load_feed(conn, second)).trips[0].headsign == "Oran (new)"

    _on(database_url, work)


def test_readers_always_see_one_active_version_while_versions_switch(database_url: str) -> None:
    async def work(conn: asyncpg.Connection) -> tuple[list[int], set[int | None]]:
        ids = [await _write(conn, "sogral", _feed()) for _ in range(2)]
        await gtfs.activate(conn, "sogral", ids[0])
        reader = await asyncpg.connect(database_url)
        seen: set[int | None] = set()
        switching = True

        async def switch() -> None:
            nonlocal switching
            for i in range(40):
                await gtfs.activate(conn, "sogral", ids[i % 2])
            switching = False

        async def read() -> None:
            while switching:
                seen.add(await gtfs.active_feed_id(reader, "sogral"))

        try:
            await asyncio.gather(switch(), read())
        finally:
            await reader.close()
        return ids, seen

    ids, seen = _on(database_url, work)
    assert seen
    assert seen <= set(ids)


def test_activating_another_operators_version_is_refused(database_url: str) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        feed_id = await _write(conn, "sogral", _feed())
        with pytest.raises(FeedNotFoundError, match="tahkout"):
            await gtfs.activate(conn, "tahkout", feed_id)

    _on(database_url, work)


def test_a_failed_write_leaves_no_version(database_url: str) -> None:
    feed = _feed()
    broken = Feed(
        **{**{f: getattr(feed, f) for f in feed.__struct_fields__}, "stops": feed.stops + feed.stops[:1]}
    )

    async def work(conn: asyncpg.Connection) -> int:
        with pytest.raises(asyncpg.UniqueViolationError):
            await _write(conn, "sogral", broken)
        count: int = await conn.fetchval("SELECT count(*) FROM gtfs_feeds")
        return count

    assert _on(database_url, work) == 0


def test_prune_keeps_the_newest_versions_and_the_active_one(database_url: str) -> None:
    async def work(conn: asyncpg.Connection) -> tuple[list[int], list[int], list[int]]:
        ids = [await _write(conn, "sogral", _feed()) for _ in range(4)]
        await gtfs.activate(conn, "sogral", ids[0])
        dropped = await gtfs.prune(conn, "sogral", keep=2)
        return ids, dropped, [v.id for v in await gtfs.list_feeds(conn, "sogral")]

    ids, dropped, left = _on(database_url, work)
    assert dropped == [ids[1]]
    assert sorted(left) == [ids[0], ids[2], ids[3]]
