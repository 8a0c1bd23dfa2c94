"""The GTFS reader on mutated real feeds: it reports problems with notice codes and never crashes.

The feeds are the demo feed and, when present, the first rows of each file of
the Accra feed, mutated by ``fleet_testing.gtfs_mutations`` (dropped files and
columns, garbled cells, BOMs, wrong encodings, cut files, stray quotes).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from fleet_processing.gtfs import read_feed
from fleet_processing.gtfs.notices import SEVERITIES
from fleet_testing.gtfs_mutations import Files, load, mutations, opener, table, write

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "devtools" / "src" / "fleet_devtools" / "data" / "feeds" / "algeria"
ACCRA = ROOT.parent / "shared" / "data" / "gtfs" / "accra"
ACCRA_ROWS = 300
"""rows kept of each Accra file: enough for its quirks, small enough for many examples"""

FEEDS = [pytest.param(DEMO, None, id="demo")]
if ACCRA.is_dir():
    FEEDS.append(pytest.param(ACCRA, ACCRA_ROWS, id="accra"))


@pytest.mark.parametrize(("folder", "rows"), FEEDS)
def test_a_mutated_feed_is_reported_with_notice_codes_and_never_crashes_the_reader(
    folder: Path, rows: int | None
) -> None:
    original = load(folder, rows)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutations(original))
    def check(files: Files) -> None:
        reading = read_feed(opener(files), today=date(2026, 12, 1), timezones={"Africa/Algiers", "GMT"})
        assert {n.code for n in reading.notices} <= set(SEVERITIES)
        assert all(n.severity == SEVERITIES[n.code] for n in reading.notices)
        if reading.feed is None:
            assert any(n.severity == "ERROR" for n in reading.notices), "unusable, and not a word why"
        for count in reading.counts.values():
            assert 0 <= count.imported <= count.read

    check()


def test_a_nul_in_a_value_is_taken_out_and_reported_so_the_feed_can_be_stored() -> None:
    files = load(DEMO)
    rows = table(files["stops.txt"])
    name = rows[0].index("stop_name")
    rows[1][name] = "Caroubier\x00 gare"
    files["stops.txt"] = write(rows)

    reading = read_feed(opener(files))

    assert reading.feed is not None
    assert all("\x00" not in (stop.name or "") for stop in reading.feed.stops)
    [found] = [n for n in reading.notices if n.code == "invalid_characters"]
    assert found.samples == [
        {"filename": "stops.txt", "csvRowNumber": 2, "fieldName": "stop_name", "fieldValue": "Caroubier gare"}
    ]
