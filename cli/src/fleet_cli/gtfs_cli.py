"""``fleet gtfs``: import a feed as a new version, list the versions, switch back, drop old ones."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import click
import msgspec

from fleet_cli.gtfs_import import ImportReport, ImportResult, read_source, store_version
from fleet_processing.gtfs.csvfiles import FILE_NAMES
from fleet_schemas.errors import FleetSchemaError
from fleet_schemas.gtfs import Feed
from fleet_schemas.topics import check_identifier
from fleet_store import gtfs as versions
from fleet_store import stackfile
from fleet_store.errors import FeedNotFoundError, FeedUnusableError, InvalidIdentifierError
from fleet_store.settings import Settings

T = TypeVar("T")

SAMPLES_SHOWN = 2


def _note(line: str) -> None:
    click.echo(line, err=True)


def _on_database(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    from fleet_cli.cli import on_database

    return asyncio.run(on_database(stackfile.resolve_urls(settings).database_url, work))


@click.group(name="gtfs")
def gtfs() -> None:
    """GTFS feeds: each import is a version; the operator's active one is what trips and ETAs use.

    \b
    Example:
      fleet gtfs import GTFS_Accra.zip --operator ama
      fleet gtfs list
      fleet gtfs show 12
    """


@gtfs.command(name="import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--operator", default=None, help="operator id (default: the feed's agency_id when it has one agency)"
)
@click.option("--json", "as_json", is_flag=True, help="print the result and report as JSON")
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=None,
    help="then drop the operator's versions beyond the N newest (the active one is always kept)",
)
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="the date expired_calendar is checked against (default: today, UTC)",
)
@click.pass_obj
def import_feed(
    settings: Settings,
    source: Path,
    operator: str | None,
    as_json: bool,
    keep: int | None,
    today: datetime | None,
) -> None:
    """Read, check and store a GTFS feed (zip or folder) as the operator's new active version.

    Problems are reported with MobilityData gtfs-validator's notice codes
    and severities; rows that cannot be used are dropped with a notice and
    the rest is imported. Exit status 0 when the feed was imported (its
    problems are warnings to read), 1 when nothing in it could be used.

    \b
    Example:
      fleet gtfs import GTFS_Accra.zip --operator ama
      fleet gtfs import feeds/sogral/ --operator sogral --keep 3 --json
    """
    if operator is not None:
        _check_operator(operator)
    check_day = today.date() if today is not None else datetime.now(UTC).date()
    feed, report = read_source(
        source, check_day, progress=lambda name, rows: _note(f"gtfs: {name}: {rows:,} rows")
    )
    if feed is None:
        _print(
            ImportResult(feed_id=None, operator=operator, active=False, dropped=[], report=report), as_json
        )
        raise FeedUnusableError(f"{source} has nothing usable: see the ERROR notices above")
    owner = _operator(operator, feed)
    feed_id, dropped = _on_database(
        settings,
        lambda conn: store_version(
            conn,
            owner,
            feed,
            report,
            keep=keep,
            written=lambda table, rows: _note(f"gtfs: {table}: {rows:,} rows stored"),
        ),
    )
    _print(
        ImportResult(feed_id=feed_id, operator=owner, active=True, dropped=dropped, report=report), as_json
    )


def _operator(given: str | None, feed: Feed) -> str:
    if given is not None:
        return given
    if len(feed.agencies) != 1:
        raise InvalidIdentifierError(
            f"the feed has {len(feed.agencies)} agencies: say which operator with --operator"
        )
    return _check_operator(feed.agencies[0].agency_id)


def _check_operator(operator: str) -> str:
    try:
        return check_identifier(operator, "operator")
    except FleetSchemaError as exc:
        raise InvalidIdentifierError(exc.message) from exc


def _print(result: ImportResult, as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
        return
    report = result.report
    if result.feed_id is not None:
        state = "active" if result.active else "not active"
        click.echo(
            f"imported {report.source} as feed {result.feed_id} of operator {result.operator}, {state}"
        )
    else:
        click.echo(f"not imported: {report.source}")
    click.echo(f"  {'file':<20} {'rows':>10} {'imported':>10}")
    for name, count in sorted(report.counts.items(), key=lambda item: FILE_NAMES.index(item[0])):
        click.echo(f"  {name:<20} {count.read:>10,} {count.imported:>10,}")
    click.echo(
        f"  {report.interpolated_stop_times:,} stop times interpolated,"
        f" {report.generated_shapes:,} shapes built from stop sequences"
    )
    errors = sum(n.count for n in report.notices if n.severity == "ERROR")
    warnings = sum(n.count for n in report.notices if n.severity == "WARNING")
    click.echo(f"notices: {errors:,} errors, {warnings:,} warnings (gtfs-validator codes)")
    for notice in report.notices:
        click.echo(f"  {notice.severity:<7} {notice.code:<56} {notice.count:>7,}")
        for sample in notice.samples[:SAMPLES_SHOWN]:
            click.echo("          " + " ".join(f"{key}={value}" for key, value in sample.items()))
    if result.dropped:
        click.echo(f"dropped older versions: {', '.join(map(str, result.dropped))}")


@gtfs.command(name="list")
@click.option("--operator", default=None, help="only this operator's versions")
@click.pass_obj
def list_feeds(settings: Settings, operator: str | None) -> None:
    """List the stored feed versions, newest first, with their state and row counts.

    \b
    Example:
      fleet gtfs list --operator ama
    """
    rows = _on_database(settings, lambda conn: versions.list_feeds(conn, operator))
    for v in rows:
        counts = v.counts
        click.echo(
            f"{v.id:>6}  {v.operator:<16} {v.state:<8}  {v.imported_at:%Y-%m-%d %H:%M:%S}Z  {v.source:<28}"
            f" {counts.get('gtfs_stops', 0):>7,} stops {counts.get('gtfs_trips', 0):>7,} trips"
            f" {counts.get('gtfs_stop_times', 0):>9,} stop times"
        )
    _note(f"gtfs: {len(rows)} feed versions")


@gtfs.command(name="show")
@click.argument("feed_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="print the version and its report as JSON")
@click.pass_obj
def show_feed(settings: Settings, feed_id: int, as_json: bool) -> None:
    """Show the report a stored version was imported with.

    \b
    Example:
      fleet gtfs show 12
    """
    version, raw = _on_database(settings, lambda conn: versions.stored_report(conn, feed_id))
    report = msgspec.json.decode(raw, type=ImportReport)
    active = version.state == "active"
    _print(
        ImportResult(feed_id=version.id, operator=version.operator, active=active, dropped=[], report=report),
        as_json,
    )


@gtfs.command(name="activate")
@click.argument("feed_id", type=int)
@click.pass_obj
def activate_feed(settings: Settings, feed_id: int) -> None:
    """Make a stored version its operator's active one again (roll back an import).

    \b
    Example:
      fleet gtfs activate 12
    """

    async def work(conn: asyncpg.Connection) -> str:
        found = [v for v in await versions.list_feeds(conn) if v.id == feed_id]
        if not found:
            raise FeedNotFoundError(f"no feed version {feed_id}")
        await versions.activate(conn, found[0].operator, feed_id)
        return found[0].operator

    owner = _on_database(settings, work)
    click.echo(f"feed {feed_id} is now operator {owner}'s active version")


@gtfs.command(name="drop")
@click.argument("feed_id", type=int)
@click.pass_obj
def drop_feed(settings: Settings, feed_id: int) -> None:
    """Delete a feed version that is not active, with all its rows.

    \b
    Example:
      fleet gtfs drop 11
    """
    _on_database(settings, lambda conn: versions.drop_feed(conn, feed_id))
    click.echo(f"dropped feed {feed_id}")
