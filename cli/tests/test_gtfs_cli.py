"""``fleet gtfs`` against the real database: the Accra feed whole, versions, refusals."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import msgspec
import pytest
from click.testing import CliRunner, Result

from fleet_cli.cli import main
from fleet_cli.gtfs_import import ImportResult
from fleet_store.settings import ServiceUrls
from fleet_testing.database import run_on
from fleet_testing.ingest import fleet_env

pytestmark = pytest.mark.stack

ACCRA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gtfs" / "accra"
ACCRA_ZIP = ACCRA / "GTFS_Accra.zip"
needs_accra = pytest.mark.skipif(not ACCRA_ZIP.is_file(), reason=f"the Accra feed is not at {ACCRA}")

# README.md beside the feed: rows per file, header excluded
ACCRA_ROWS = {
    "agency.txt": 1,
    "stops.txt": 4_171,
    "routes.txt": 277,
    "trips.txt": 554,
    "stop_times.txt": 11_336,
    "shapes.txt": 115_721,
    "frequencies.txt": 554,
    "calendar.txt": 1,
}


def _fleet(stack_urls: ServiceUrls, database_url: str, tmp_path: Path, *args: str) -> Result:
    env = fleet_env(stack_urls, database_url, tmp_path / "broker")
    return CliRunner(env=env).invoke(main, ["gtfs", *args])


def _count(database_url: str, sql: str, *args: object) -> int:
    async def fetch(conn: asyncpg.Connection) -> int:
        value: int = await conn.fetchval(sql, *args)
        return value

    return run_on(database_url, fetch)


@needs_accra
def test_the_accra_feed_imports_whole_with_its_report_and_every_row_stored(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    result = _fleet(
        stack_urls, database_url, tmp_path, "import", str(ACCRA_ZIP), "--operator", "ama", "--json"
    )
    assert result.exit_code == 0, result.output
    assert "gtfs: shapes.txt: 115,721 rows" in result.stderr
    imported = msgspec.json.decode(result.stdout, type=ImportResult)
    assert imported.active
    assert imported.operator == "ama"
    report = imported.report
    assert {name: (c.read, c.imported) for name, c in report.counts.items()} == {
        name: (rows, rows) for name, rows in ACCRA_ROWS.items()
    }
    severities = {n.code: n.severity for n in report.notices}
    assert severities["expired_calendar"] == "WARNING"  # the calendar ended on 2020-01-31
    assert severities["stop_too_far_from_shape"] == "WARNING"
    assert "ERROR" not in severities.values()
    feed_id = imported.feed_id
    for table, rows in {
        "gtfs_stops": 4_171,
        "gtfs_routes": 277,
        "gtfs_trips": 554,
        "gtfs_stop_times": 11_336,
        "gtfs_shapes": 554,
        "gtfs_frequencies": 554,
        "gtfs_calendars": 1,
        "gtfs_agencies": 1,
    }.items():
        query = f"SELECT count(*) FROM {table} WHERE feed_id = $1"  # noqa: S608 - our table names
        assert _count(database_url, query, feed_id) == rows, table
    points = _count(
        database_url, "SELECT sum(cardinality(lats)) FROM gtfs_shapes WHERE feed_id = $1", feed_id
    )
    assert points == 115_721
    stored = _count(
        database_url,
        "SELECT (report -> 'counts' -> 'stop_times.txt' ->> 'imported')::int FROM gtfs_feeds WHERE id = $1",
        feed_id,
    )
    assert stored == 11_336


@needs_accra
def test_a_reimport_is_a_new_active_version_and_the_previous_is_kept_until_dropped(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    first = _fleet(stack_urls, database_url, tmp_path, "import", str(ACCRA), "--json")
    second = _fleet(stack_urls, database_url, tmp_path, "import", str(ACCRA_ZIP), "--json")
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    one = msgspec.json.decode(first.stdout, type=ImportResult)
    two = msgspec.json.decode(second.stdout, type=ImportResult)
    assert one.operator == two.operator == "AMA"  # the feed's only agency_id
    assert two.feed_id != one.feed_id
    listing = _fleet(stack_urls, database_url, tmp_path, "list", "--operator", "AMA")
    lines = {line.split()[0]: line.split()[2] for line in listing.stdout.splitlines()}
    assert lines == {str(one.feed_id): "inactive", str(two.feed_id): "active"}
    assert (
        _count(database_url, "SELECT count(*) FROM gtfs_stop_times WHERE feed_id = $1", one.feed_id) == 11_336
    )

    refused = _fleet(stack_urls, database_url, tmp_path, "drop", str(two.feed_id))
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error [gtfs_feed_active]")
    dropped = _fleet(stack_urls, database_url, tmp_path, "drop", str(one.feed_id))
    assert dropped.exit_code == 0, dropped.output
    assert _count(database_url, "SELECT count(*) FROM gtfs_stop_times WHERE feed_id = $1", one.feed_id) == 0
    assert _count(database_url, "SELECT count(*) FROM gtfs_feeds") == 1


def test_a_feed_with_nothing_usable_exits_1_with_its_report(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "agency.txt").write_text(
        "agency_name,agency_url,agency_timezone\nSogral,https://sogral.dz,Africa/Algiers\n"
    )
    result = _fleet(stack_urls, database_url, tmp_path, "import", str(feed), "--operator", "sogral")
    assert result.exit_code == 1
    assert "missing_required_file" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error [gtfs_feed_unusable]")
    assert _count(database_url, "SELECT count(*) FROM gtfs_feeds") == 0


def test_a_file_that_is_not_a_zip_is_a_typed_error(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    bogus = tmp_path / "feed.zip"
    bogus.write_bytes(b"not a zip")
    result = _fleet(stack_urls, database_url, tmp_path, "import", str(bogus))
    assert result.exit_code == 1
    assert result.stderr.startswith("error [gtfs_source_unreadable]")


SMALL_FEED = {
    "agency.txt": "agency_id,agency_name,agency_url,agency_timezone\nSOG,Sogral,https://sogral.dz,Africa/Algiers\n",
    "stops.txt": "stop_id,stop_lat,stop_lon\nALG,36.7347,3.0866\nBLI,36.47,2.83\n",
    "routes.txt": "route_id,route_type\nR1,3\n",
    "trips.txt": "route_id,service_id,trip_id\nR1,D,T1\n",
    "stop_times.txt": "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
    "T1,07:00:00,07:00:00,ALG,1\nT1,07:50:00,07:50:00,BLI,2\n",
    "calendar_dates.txt": "service_id,date,exception_type\nD,20261201,1\n",
}


def _small_feed(tmp_path: Path) -> Path:
    """Alger to Blida, one trip, one service date."""
    feed = tmp_path / "feed"
    feed.mkdir()
    for name, text in SMALL_FEED.items():
        (feed / name).write_text(text)
    return feed


def test_activate_rolls_back_to_an_earlier_version(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    feed = _small_feed(tmp_path)
    ids = []
    for _ in range(2):
        result = _fleet(stack_urls, database_url, tmp_path, "import", str(feed), "--json")
        assert result.exit_code == 0, result.output
        ids.append(msgspec.json.decode(result.stdout, type=ImportResult).feed_id)
    back = _fleet(stack_urls, database_url, tmp_path, "activate", str(ids[0]))
    assert back.exit_code == 0, back.output
    shown = _fleet(stack_urls, database_url, tmp_path, "show", str(ids[1]))
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith(f"imported feed as feed {ids[1]} of operator SOG, not active\n")
    assert "stop_times.txt                2          2" in shown.stdout
    active = _count(database_url, "SELECT id FROM gtfs_feeds WHERE operator = 'SOG' AND state = 'active'")
    assert active == ids[0]


def test_an_operator_id_that_cannot_stand_in_a_topic_is_refused(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    feed = _small_feed(tmp_path)
    result = _fleet(stack_urls, database_url, tmp_path, "import", str(feed), "--operator", "ama/north")
    assert result.exit_code == 1
    assert (
        result.stderr.strip().splitlines()[-1].startswith("error [invalid_identifier]: operator 'ama/north'")
    )
    assert _count(database_url, "SELECT count(*) FROM gtfs_feeds") == 0
