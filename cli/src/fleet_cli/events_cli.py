"""``fleet events``: list what the detectors stored, and recompute a time range from stored positions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import click
import msgspec

from fleet_cli.database import run_on_database
from fleet_cli.params import Duration, Moment
from fleet_schemas.errors import FleetSchemaError
from fleet_schemas.events import EVENT_ENCODER, EVENT_KINDS, Event, EventKind
from fleet_schemas.topics import check_identifier
from fleet_store import stackfile
from fleet_store.errors import ConfigError, InvalidIdentifierError
from fleet_store.events import DEFAULT_LIMIT, read_events
from fleet_store.settings import Settings

if TYPE_CHECKING:
    from fleet_ingest.reprocess import ReprocessReport


def _note(line: str) -> None:
    click.echo(line, err=True)


def check_operator(operator: str) -> str:
    """``operator`` if it is a valid id, else InvalidIdentifierError."""
    try:
        return check_identifier(operator, "operator")
    except FleetSchemaError as exc:
        raise InvalidIdentifierError(exc.message) from exc


def utc(ms: int) -> str:
    """Epoch ms as a person reads it, to the second, UTC."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def describe(event: Event) -> str:
    """One line per event: when, who, what, about what, and its details as key=value."""
    details = " ".join(f"{k}={_value(v)}" for k, v in sorted(event.details.items()))
    route = f" route {event.route_id}" if event.route_id else ""
    return (
        f"{utc(event.time_ms)}  {event.bus:<14} {event.kind:<18} {event.subject}{route}  {details}".rstrip()
    )


@click.group(name="events")
def events() -> None:
    """What the detectors found: corridor deviations, geofences, stops, delays, offline, trips.

    Ingest stores each event once (its key is what caused it) and publishes
    it on the live channel; these commands read the stored ones.

    \b
    Example:
      fleet events list --operator sogral --since 2h
      fleet events reprocess --operator sogral --from 2026-12-01T00:00 --to 2026-12-02T00:00 --dry-run
    """


@events.command(name="list")
@click.option("--operator", default=None, help="operator whose events to list (default: every operator)")
@click.option("--bus", default=None, help="only this bus's events")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    type=click.Choice(EVENT_KINDS),
    help=f"only this kind (repeatable): {', '.join(EVENT_KINDS)}",
)
@click.option("--since", "since_ms", type=Moment(), default=None, help="from this time: 2h (ago) or ISO, UTC")
@click.option("--until", "until_ms", type=Moment(), default=None, help="before this time: 30m (ago) or ISO")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the events as one JSON array")
@click.pass_obj
def list_events(
    settings: Settings,
    operator: str | None,
    bus: str | None,
    kinds: tuple[EventKind, ...],
    since_ms: int | None,
    until_ms: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """List stored events, newest first.

    \b
    Example:
      fleet events list --operator sogral --since 2h
      fleet events list --operator sogral --bus B-104 --kind deviation_started --kind deviation_ended
      fleet events list --since 2026-12-01T06:00 --until 2026-12-01T12:00 --limit 1000 --json
    """
    found = run_on_database(
        settings,
        lambda conn: read_events(
            conn, operator, since_ms=since_ms, until_ms=until_ms, bus=bus, kinds=kinds or None, limit=limit
        ),
    )
    if as_json:
        click.echo(EVENT_ENCODER.encode(found).decode())
    else:
        for event in found:
            click.echo(describe(event))
    more = " (the limit: there may be more, see --limit)" if len(found) == limit else ""
    _note(f"events: {len(found)} listed{more}")


SAMPLES_SHOWN = 5


@events.command(name="reprocess")
@click.option("--operator", required=True, help="operator whose events to recompute")
@click.option(
    "--from", "from_ms", type=Moment(), required=True, help="start of the range: ISO (UTC) or 6h (ago)"
)
@click.option(
    "--to", "to_ms", type=Moment(), required=True, help="end of the range (excluded): ISO or 30m (ago)"
)
@click.option(
    "--warmup",
    type=Duration(),
    default="2h",
    show_default=True,
    help="replay from this long before --from, so each bus's trip and fences are known when the range starts",
)
@click.option("--dry-run", is_flag=True, help="compare only: store and delete nothing")
@click.option(
    "--replace",
    is_flag=True,
    help="also delete stored events not recomputed, and rewrite those recomputed with other content",
)
@click.option("--json", "as_json", is_flag=True, help="print the report (with the differing events) as JSON")
@click.pass_obj
def reprocess_events(
    settings: Settings,
    operator: str,
    from_ms: int,
    to_ms: int,
    warmup: timedelta,
    dry_run: bool,
    replace: bool,
    as_json: bool,
) -> None:
    """Recompute the events of a time range from stored positions, with ingest's detectors.

    Uses the operator's active feed, its stored route thresholds and the
    FLEET_INGEST_* detector settings of this environment. Events recomputed
    but not stored are added (not published live); stored events not
    recomputed are only deleted with --replace. Run with --dry-run first.

    \b
    Example:
      fleet events reprocess --operator sogral --from 2026-12-01T00:00 --to 2026-12-02T00:00 --dry-run
      fleet events reprocess --operator sogral --from 6h --to now --json
    """
    if to_ms <= from_ms:
        raise click.BadParameter("--to must be after --from", param_hint="--to")
    check_operator(operator)
    report = asyncio.run(
        _reprocess(settings, operator, from_ms, to_ms, warmup // timedelta(milliseconds=1), dry_run, replace)
    )
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    _print_reprocessed(report)


async def _reprocess(
    settings: Settings, operator: str, from_ms: int, to_ms: int, warmup_ms: int, dry_run: bool, replace: bool
) -> ReprocessReport:
    from fleet_ingest.detectors import Detectors
    from fleet_ingest.feeds import Networks
    from fleet_ingest.reprocess import reprocess
    from fleet_ingest.service import open_pool
    from fleet_ingest.settings import load_ingest_settings

    policy = load_ingest_settings().detectors
    try:
        pool = await open_pool(stackfile.resolve_urls(settings).database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigError(f"cannot connect to the database: {exc}") from exc
    try:
        networks = Networks()
        _note("reprocess: loading the active feeds")
        await networks.refresh(pool)
        model = networks.models.get(operator)
        if model is None:
            _note(f"reprocess: operator {operator} has no active feed: no trip events")
        detectors = Detectors(policy)
        await detectors.refresh(pool)
        context = detectors.contexts([operator])[operator]

        def shown(done: int, total: int, found: int) -> None:
            share = f" ({done / total:.0%})" if total else ""
            _note(f"reprocess: {done:,} of {total:,} fixes{share}, {found:,} events")

        return await reprocess(
            pool,
            operator,
            from_ms,
            to_ms,
            models={operator: model} if model is not None else {},
            context=context,
            warmup_ms=warmup_ms,
            dry_run=dry_run,
            replace=replace,
            progress=shown,
        )
    finally:
        await pool.close()


def _print_reprocessed(report: ReprocessReport) -> None:
    applied = not report.dry_run
    click.echo(
        f"reprocess {report.operator} {utc(report.from_ms)} to {utc(report.to_ms)}"
        f" (warm-up {report.warmup_ms / 3_600_000:g} h):"
        f" {report.fixes:,} fixes replayed, {report.late:,} late"
    )
    rows = [
        ("recomputed", report.recomputed, ""),
        ("already stored", report.already_stored, ""),
        ("missing", len(report.missing), "added" if applied else "not added (--dry-run)"),
        (
            "stored, not recomputed",
            len(report.stored_not_recomputed),
            "deleted" if applied and report.replace else "kept (--replace deletes them)",
        ),
        (
            "changed",
            len(report.changed),
            "rewritten" if applied and report.replace else "kept (--replace rewrites them)",
        ),
    ]
    for label, count, note in rows:
        click.echo(f"  {label:<24}{count:>8,}  {note if count else ''}".rstrip())
    for title, listed in (
        ("missing", report.missing),
        ("stored, not recomputed", report.stored_not_recomputed),
        ("changed", report.changed),
    ):
        for event in listed[:SAMPLES_SHOWN]:
            click.echo(f"  {title}: {describe(event)}")
        if len(listed) > SAMPLES_SHOWN:
            click.echo(f"  {title}: … {len(listed) - SAMPLES_SHOWN:,} more (--json lists them all)")
