"""``fleet status``: one screen with the health of every component; ``--json`` for scripts."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

import click
import msgspec

from fleet_cli.events_cli import describe
from fleet_cli.status import Status, gather_status
from fleet_store import stackfile
from fleet_store.settings import Settings


def render(status: Status) -> str:
    when = datetime.fromtimestamp(status.checked_ms / 1000, UTC)
    lines = [f"fleet status at {when:%Y-%m-%d %H:%M:%S}Z: {'all OK' if status.ok else 'SOMETHING IS DOWN'}"]
    for c in status.components:
        lines.append(f"  {'OK  ' if c.ok else 'DOWN'}  {c.name:<12} {c.detail}")
    if not any(c.name.startswith("serve ") for c in status.components):
        lines.append("  --    serve        not checked (give --serve URL or FLEET_STATUS_SERVE)")
    lines.append("buses (live position held, and of those declared offline):")
    lines += [f"  {b.operator:<20} {b.live:>6} live  {b.offline:>6} offline" for b in status.buses] or [
        "  none"
    ]
    lines.append("last events:")
    lines += [f"  {describe(e)}" for e in status.last_events] or ["  none"]
    return "\n".join(lines)


@click.command(name="status")
@click.option(
    "--serve",
    "serve_urls",
    multiple=True,
    envvar="FLEET_STATUS_SERVE",
    help="base URL of a fleet serve node to check (repeat; env FLEET_STATUS_SERVE, space-separated)",
)
@click.option("--events", default=5, show_default=True, help="how many of the newest events to show")
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
@click.pass_obj
def status(settings: Settings, serve_urls: tuple[str, ...], events: int, as_json: bool) -> None:
    """The health of the broker, ingest, serve nodes, PostgreSQL and Redis, the buses and the last events.

    Exits 1 if a component is down or an ingest instance is not running, so a
    script or a cron job can page on it. Each component gets 5 s to answer.

    \b
    Example:
      fleet status
      fleet status --serve http://10.0.0.5:8080 --serve http://10.0.0.6:8080
      fleet status --json | jq '.components[] | select(.ok | not)'
    """
    found = asyncio.run(gather_status(stackfile.resolve_urls(settings), list(serve_urls), events))
    click.echo(msgspec.json.format(msgspec.json.encode(found)).decode() if as_json else render(found))
    if not found.ok:
        sys.exit(1)
