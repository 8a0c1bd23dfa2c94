"""Stop visits and the segment travel-time rollup against the real database."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pytest

from fleet_schemas.trips import StopVisit
from fleet_store.history import (
    InvalidVisitError,
    load_segment_history,
    refresh_segment_times,
    write_visits,
)
from fleet_store.maintain import maintain
from fleet_testing.database import run_on

MONDAY_8H_MS = 1_795_392_000_000 + 8 * 3_600_000
"""Monday 2026-11-23 08:00 UTC: hour of week 8"""


def trip_visits(
    start_ms: int,
    runs_s: list[float],
    dwells_s: list[float],
    *,
    bus: str = "B1",
    start_time: str = "08:00:00",
) -> list[StopVisit]:
    """A bus driving stops S0, S1, … with these run and dwell times, on schedule (never early)."""
    visits, t = [], float(start_ms)
    for k, dwell in enumerate(dwells_s):
        arrived = int(t)
        departed = int(t + dwell * 1000)
        visits.append(
            StopVisit(
                operator="op",
                bus=bus,
                feed_id=1,
                trip_id="T1",
                start_date="20261123",
                start_time=start_time,
                stop_sequence=k + 1,
                stop_id=f"S{k}",
                arrived_ms=arrived,
                departed_ms=departed,
                scheduled_arrival_ms=arrived,
                scheduled_departure_ms=arrived,
            )
        )
        if k < len(runs_s):
            t = departed + runs_s[k] * 1000
    return visits


async def _count(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608 - test table names


def test_a_visit_sent_again_after_a_redelivery_is_stored_and_rolled_up_once(database_url: str) -> None:
    visits = trip_visits(MONDAY_8H_MS, [600.0, 900.0], [0.0, 60.0, 0.0])

    async def work(conn: asyncpg.Connection) -> tuple[int, int, int, int]:
        first = await write_visits(conn, visits)
        again = await write_visits(conn, [*visits[1:], visits[1]])
        await refresh_segment_times(conn)
        return (
            first,
            again,
            await _count(conn, "stop_visits"),
            int(await conn.fetchval("SELECT sum(n) FROM segment_times")),
        )

    assert run_on(database_url, work) == (3, 0, 3, 2)


def test_segment_times_keep_count_mean_variance_and_the_latest_travel_time(database_url: str) -> None:
    runs = [600.0, 660.0, 900.0]
    trips = [
        trip_visits(MONDAY_8H_MS + k * 60_000, [run, 1200.0], [0.0, 30.0, 0.0], start_time=f"08:0{k}:00")
        for k, run in enumerate(runs)
    ]

    async def work(conn: asyncpg.Connection) -> dict[str, float]:
        for visits in trips:
            await write_visits(conn, visits)
        report = await refresh_segment_times(conn)
        assert report.visits == 9
        rows = await load_segment_history(conn, "op")
        (s0,) = [r for r in rows.segments if r.from_stop_id == "S0"]
        assert s0.to_stop_id == "S1"
        assert s0.hour_of_week == 8
        return {"n": s0.n, "mean": s0.mean_s, "var": s0.var_s, "last": s0.last_s}

    got = run_on(database_url, work)
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(np.mean(runs))
    assert got["var"] == pytest.approx(np.var(runs, ddof=1))
    assert got["last"] == 900.0, "the trip that reached S1 last"


def test_an_incremental_refresh_gives_what_one_refresh_of_everything_gives(database_url: str) -> None:
    runs = [500.0, 700.0, 650.0, 800.0, 610.0]
    trips = [
        trip_visits(MONDAY_8H_MS + k * 60_000, [run], [0.0, 0.0], start_time=f"08:0{k}:00")
        for k, run in enumerate(runs)
    ]

    async def work(conn: asyncpg.Connection) -> tuple[int, float, float, int]:
        for visits in trips:
            await write_visits(conn, visits)
            await refresh_segment_times(conn)
        nothing = await refresh_segment_times(conn)
        (row,) = (await load_segment_history(conn, "op")).segments
        return row.n, row.mean_s, row.var_s, nothing.visits

    n, mean, var, nothing = run_on(database_url, work)
    assert (n, nothing) == (5, 0)
    assert mean == pytest.approx(np.mean(runs))
    assert var == pytest.approx(np.var(runs, ddof=1))


def test_two_refreshes_at_once_count_every_visit_exactly_once(database_url: str) -> None:
    trips = [
        trip_visits(MONDAY_8H_MS + k * 3_600_000, [600.0 + k % 7, 300.0], [0.0, 10.0, 0.0], bus=f"B{k}")
        for k in range(400)
    ]

    async def refresh() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return (await refresh_segment_times(conn, visits_per_round=50)).visits
        finally:
            await conn.close()

    async def work(conn: asyncpg.Connection) -> tuple[list[int], int, int]:
        await write_visits(conn, [v for visits in trips for v in visits])
        claimed = list(await asyncio.gather(refresh(), refresh()))
        total = int(await conn.fetchval("SELECT sum(n) FROM segment_times"))
        return claimed, total, await _count(conn, "stop_visits_pending")

    claimed, total, pending = run_on(database_url, work)
    assert sum(claimed) == 1200
    assert (total, pending) == (800, 0)


def test_dwell_is_learnt_only_from_buses_that_were_not_early(database_url: str) -> None:
    on_time = trip_visits(MONDAY_8H_MS, [600.0], [0.0, 0.0])
    stop = on_time[1]
    late = [on_time[0], msgspec_replace(stop, departed_ms=stop.arrived_ms + 90_000)]
    early = trip_visits(MONDAY_8H_MS, [600.0], [0.0, 0.0], bus="B2")
    waited = msgspec_replace(
        early[1],
        departed_ms=early[1].arrived_ms + 600_000,
        scheduled_arrival_ms=early[1].arrived_ms + 300_000,
    )

    async def work(conn: asyncpg.Connection) -> list[tuple[str, int, float]]:
        await write_visits(conn, [*late, early[0], waited])
        await refresh_segment_times(conn)
        rows = (await load_segment_history(conn, "op")).dwells
        return sorted((r.stop_id, r.n, r.mean_s) for r in rows)

    assert run_on(database_url, work) == [("S0", 2, 0.0), ("S1", 1, 90.0)]


def test_a_visit_leaving_before_it_arrives_is_a_typed_error(database_url: str) -> None:
    (visit,) = trip_visits(MONDAY_8H_MS, [], [0.0])
    backwards = msgspec_replace(visit, departed_ms=visit.arrived_ms - 1)
    with pytest.raises(InvalidVisitError) as caught:
        run_on(database_url, lambda conn: write_visits(conn, [backwards]))
    assert caught.value.code == "invalid_visit"


def test_fleet_db_maintain_rolls_the_new_visits_up(database_url: str) -> None:
    run_on(
        database_url,
        lambda conn: write_visits(conn, trip_visits(MONDAY_8H_MS, [600.0, 600.0], [0.0, 0.0, 0.0])),
    )
    report = asyncio.run(maintain(database_url))
    assert report.history is not None
    assert (report.history.visits, report.history.segment_rows) == (3, 2)


def msgspec_replace(visit: StopVisit, **changes: int) -> StopVisit:
    import msgspec

    return msgspec.structs.replace(visit, **changes)
