"""The demo feed through the real importer: whole, no ERROR notice, the timetable the simulator drives."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import date
from pathlib import Path

import asyncpg
import msgspec
import pytest
from click.testing import CliRunner

from fleet_agent.schedule import load_trip
from fleet_cli.cli import main
from fleet_cli.gtfs_import import ImportResult, read_source
from fleet_devtools.demo_feed import OPERATOR, feed_dir
from fleet_schemas.gtfs import StopTime
from fleet_store.settings import ServiceUrls
from fleet_testing.database import run_on
from fleet_testing.ingest import fleet_env


@pytest.mark.stack
def test_the_demo_feed_imports_whole_with_no_error_severity_notice(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    env = fleet_env(stack_urls, database_url, tmp_path / "broker")
    result = CliRunner(env=env).invoke(
        main, ["gtfs", "import", str(feed_dir()), "--operator", OPERATOR, "--json"]
    )
    assert result.exit_code == 0, result.output
    imported = msgspec.json.decode(result.stdout, type=ImportResult)
    assert imported.operator == OPERATOR
    assert imported.active
    errors = [n for n in imported.report.notices if n.severity == "ERROR"]
    assert errors == []
    for table, count in imported.report.counts.items():
        assert (count.read, count.imported) == (_rows(table), _rows(table)), table

    async def stored(conn: asyncpg.Connection) -> list[int]:
        return [
            await conn.fetchval(f"SELECT count(*) FROM {table} WHERE feed_id = $1", imported.feed_id)  # noqa: S608
            for table in ("gtfs_trips", "gtfs_stop_times", "gtfs_shapes", "gtfs_stops")
        ]

    files = [_rows("trips.txt"), _rows("stop_times.txt"), _shapes(), _rows("stops.txt")]
    assert run_on(database_url, stored) == files


def test_the_importer_and_the_simulator_read_the_same_timetable() -> None:
    """Blank times interpolated, distances along the shapes: what ingest predicts from is what buses drive."""
    feed, _ = read_source(feed_dir(), date(2026, 12, 1))
    assert feed is not None
    by_trip: dict[str, list[StopTime]] = defaultdict(list)
    for stop_time in feed.stop_times:
        by_trip[stop_time.trip_id].append(stop_time)
    assert len(by_trip) == _rows("trips.txt")
    for trip_id, imported in by_trip.items():
        driven = load_trip(feed_dir(), trip_id).calls
        assert [(s.stop_id, s.arrival_s, s.departure_s, s.interpolated) for s in imported] == [
            (c.stop_id, c.arrival_s, c.departure_s, c.interpolated) for c in driven
        ], trip_id
        assert [s.dist_m for s in imported] == pytest.approx([c.dist_m for c in driven], abs=1.0), trip_id


def _rows(table: str) -> int:
    with (feed_dir() / table).open(encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _shapes() -> int:
    with (feed_dir() / "shapes.txt").open(encoding="utf-8", newline="") as handle:
        return len({row["shape_id"] for row in csv.DictReader(handle)})
