"""``fleet events``: list what the detectors stored, and recompute a time range from stored positions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import click

from fleet_cli.params import Moment
from fleet_schemas.events import EVENT_ENCODER, EVENT_KINDS, Event, EventKind
from fleet_store import stackfile
from fleet_store.events import DEFAULT_LIMIT, read_events
from fleet_store.settings import Settings

T = TypeVar("T")


def _note(line: str) -> None:
    click.echo(line, err=True)


def _on_database(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    from fleet_cli.cli import on_database

    return asyncio.run(on_database(stackfile.resolve_urls(settings).database_url, work))


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
    found = _on_database(
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
