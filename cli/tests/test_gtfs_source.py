"""Opening a feed on disk: folders and zips, files at the top or in one folder inside, BOM and CRLF."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest

from fleet_cli.gtfs_source import open_source
from fleet_store.errors import FeedSourceError

STOPS = '\ufeffstop_id,stop_name\r\nA,"Caroubier, gare"\r\n'


def _rows(path: Path, name: str) -> list[list[str]]:
    with open_source(path) as source:
        stream = source.open_file(name)
        assert stream is not None
        with stream:
            return list(csv.reader(stream))


def test_a_zip_with_its_files_in_a_folder_is_read_from_that_folder(tmp_path: Path) -> None:
    feed = tmp_path / "feed.zip"
    with zipfile.ZipFile(feed, "w") as archive:
        archive.writestr("gtfs/stops.txt", STOPS.encode())
    assert _rows(feed, "stops.txt") == [["stop_id", "stop_name"], ["A", "Caroubier, gare"]]
    with open_source(feed) as source:
        assert source.open_file("trips.txt") is None
        assert source.name == "feed.zip"


def test_a_folder_is_read_and_hashed_by_its_txt_files(tmp_path: Path) -> None:
    (tmp_path / "stops.txt").write_bytes(STOPS.encode())
    assert _rows(tmp_path, "stops.txt") == [["stop_id", "stop_name"], ["A", "Caroubier, gare"]]
    with open_source(tmp_path) as source:
        before = source.sha256
    (tmp_path / "notes.md").write_text("not part of the feed")
    with open_source(tmp_path) as source:
        assert source.sha256 == before
    (tmp_path / "trips.txt").write_text("route_id,service_id,trip_id\n")
    with open_source(tmp_path) as source:
        assert source.sha256 != before


def test_a_file_that_is_not_a_zip_is_refused_with_a_typed_error(tmp_path: Path) -> None:
    bogus = tmp_path / "feed.zip"
    bogus.write_text("stop_id\n")
    with pytest.raises(FeedSourceError, match="neither a folder nor a readable zip"), open_source(bogus):
        pass
