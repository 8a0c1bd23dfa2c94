"""The README's example queries for analysts run as written and answer correctly."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

pytestmark = pytest.mark.stack

README = Path(__file__).resolve().parents[1] / "README.md"
CAROUBIER = (36.7347, 3.0866)
EIGHT_AM = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def readme_query(name: str) -> str:
    match = re.search(rf"<!-- query: {name} -->\n```sql\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no query {name!r}"
    return match.group(1)


async def _run(database_url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = []
        for bus, start_lat, step in (("SOGRAL-001", CAROUBIER[0], 0.0001), ("SOGRAL-002", 36.9, 0.0001)):
            for second in range(-120, 120, 10):
                time = datetime.fromtimestamp(EIGHT_AM.timestamp() + second, UTC)
                rows.append(
                    (
                        time,
                        f"unit-{bus[-3:]}",
                        second + 1000,
                        "sogral",
                        bus,
                        start_lat + step * (second + 120),
                        CAROUBIER[1],
                        10.0,
                        "sim",
                        "k1",
                        time,
                    )
                )
        await conn.executemany(
            "INSERT INTO positions (time, device, seq, operator, bus, lat, lon, speed_mps, source, key_id,"
            " received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            rows,
        )
        return await conn.fetch(query)
    finally:
        await conn.close()


def test_track_query_returns_the_bus_fixes_of_the_day_in_order(database_url: str) -> None:
    rows = asyncio.run(_run(database_url, readme_query("track")))
    assert len(rows) == 24
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)


def test_near_query_finds_only_the_bus_within_five_km(database_url: str) -> None:
    rows = asyncio.run(_run(database_url, readme_query("near")))
    assert [r["bus"] for r in rows] == ["SOGRAL-001"]
    assert 0 < rows[0]["distance_m"] < 5_000


def test_distance_query_sums_each_bus_day(database_url: str) -> None:
    rows = asyncio.run(_run(database_url, readme_query("distance")))
    assert [r["bus"] for r in rows] == ["SOGRAL-001", "SOGRAL-002"]
    # 23 steps of 0.001 degree of latitude: about 2.56 km
    assert [float(r["km"]) for r in rows] == [pytest.approx(2.6, abs=0.1)] * 2
