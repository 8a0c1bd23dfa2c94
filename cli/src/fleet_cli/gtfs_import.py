"""A GTFS import end to end: read and check the feed on disk, store it as the operator's new active version.

``fleet gtfs import`` is these two steps with a printout; the development
tools (demo, ETA bench) call them directly.
"""

from __future__ import annotations

import zoneinfo
from datetime import date
from pathlib import Path

import asyncpg
import msgspec

from fleet_cli.gtfs_source import open_source
from fleet_processing.gtfs import FileCount, read_feed
from fleet_processing.gtfs.csvfiles import Progress
from fleet_schemas.gtfs import Feed, Notice
from fleet_store import gtfs as versions


class ImportReport(msgspec.Struct, frozen=True, kw_only=True):
    """What an import found; kept with the version in ``gtfs_feeds.report`` and printed by ``--json``."""

    source: str
    sha256: str
    counts: dict[str, FileCount]
    interpolated_stop_times: int
    generated_shapes: int
    notices: list[Notice]


class ImportResult(msgspec.Struct, frozen=True, kw_only=True):
    feed_id: int | None
    """None when the feed could not be imported"""
    operator: str | None
    active: bool
    dropped: list[int]
    """older versions dropped by --keep"""
    report: ImportReport


def read_source(
    path: Path, today: date, progress: Progress | None = None
) -> tuple[Feed | None, ImportReport]:
    """The normalized feed at ``path`` (zip or folder; None when nothing in it is usable) and its report.

    Time zones are checked against this machine's tz database, calendars against ``today``.
    """
    with open_source(path) as source:
        reading = read_feed(
            source.open_file, today=today, timezones=zoneinfo.available_timezones(), progress=progress
        )
        report = ImportReport(
            source=source.name,
            sha256=source.sha256,
            counts=reading.counts,
            interpolated_stop_times=reading.interpolated_stop_times,
            generated_shapes=reading.generated_shapes,
            notices=reading.notices,
        )
    return reading.feed, report


async def store_version(
    conn: asyncpg.Connection,
    operator: str,
    feed: Feed,
    report: ImportReport,
    *,
    keep: int | None = None,
    written: versions.Written | None = None,
) -> tuple[int, list[int]]:
    """Write ``feed`` as a new version, make it the operator's active one, drop all but the ``keep`` newest.

    The new version's id, and the ids dropped.
    """
    feed_id = await versions.write_feed(
        conn, operator, feed, source=report.source, sha256=report.sha256, report=report, written=written
    )
    await versions.activate(conn, operator, feed_id)
    dropped = await versions.prune(conn, operator, keep) if keep is not None else []
    return feed_id, dropped
