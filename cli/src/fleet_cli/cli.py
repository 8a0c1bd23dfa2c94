"""The ``fleet`` command: one entry point for every server-side task."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

import asyncpg
import click
import msgspec

from fleet_cli import __version__
from fleet_schemas.live import LivePosition
from fleet_store import sessions, stackfile
from fleet_store.errors import ConfigError, FleetError
from fleet_store.migrate import migrate
from fleet_store.settings import ServiceUrls, Settings, load_settings

COMMANDS_GROUP = "fleet.commands"
"""Entry point group through which other installed packages (fleet_devtools) add commands."""

CORE_COMMANDS = {
    "broker-exporter": "fleet_cli.broker_exporter_cli:broker_exporter",
    "devices": "fleet_cli.devices_cli:devices",
    "events": "fleet_cli.events_cli:events",
    "geofences": "fleet_cli.geofences_cli:geofences",
    "gtfs": "fleet_cli.gtfs_cli:gtfs",
    "routes": "fleet_cli.routes_cli:routes",
    "serve": "fleet_cli.serve_cli:serve",
    "status": "fleet_cli.status_cli:status",
    "tokens": "fleet_cli.tokens_cli:tokens_group",
}
"""This package's command groups kept in their own modules, imported only when named (or listed): each
pulls in what its work needs (litestar, shapely, pyproj...), which ``fleet ingest`` and the rest need not
load before they start."""


class _FleetGroup(click.Group):
    """Shows a FleetError as one line with its code, not a traceback; adds installed command groups.

    The core groups (``CORE_COMMANDS``) are imported when named or listed. The
    extra commands are looked up only when click asks for the list or for a
    name this package lacks, after this module is imported, so a package
    registering some may import it.
    """

    _extras_loaded = False

    def _load_extras(self) -> None:
        if self._extras_loaded:
            return
        self._extras_loaded = True
        for point in entry_points(group=COMMANDS_GROUP):
            if point.name not in self.commands and point.name not in CORE_COMMANDS:
                self.add_command(point.load(), point.name)

    def _load_core(self, name: str) -> click.Command | None:
        where = CORE_COMMANDS.get(name)
        if where is None:
            return None
        module, _, attribute = where.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), where
        self.add_command(command, name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_extras()
        return sorted({*super().list_commands(ctx), *CORE_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # Only a name this package lacks loads the extras, and only the core group named is imported:
        # ``fleet ingest`` starts without importing every command (litestar, shapely and the rest).
        command = super().get_command(ctx, cmd_name) or self._load_core(cmd_name)
        if command is None and not self._extras_loaded:
            self._load_extras()
            command = super().get_command(ctx, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FleetError as exc:
            click.echo(f"error [{exc.code}]: {exc.message}", err=True)
            sys.exit(1)


def progress(line: str) -> None:
    """Progress goes to stderr, so stdout stays what a script reads."""
    click.echo(line, err=True)


@click.group(cls=_FleetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleet")
@click.pass_context
def main(ctx: click.Context) -> None:
    """fleet: GPS telemetry for intercity bus fleets.

    Configuration comes from FLEET_* environment variables (see README).

    \b
    Example:
      fleet stack up && fleet db migrate
    """
    ctx.obj = load_settings()


T = TypeVar("T")


async def on_database(database_url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigError(f"cannot connect to the database: {exc}") from exc
    try:
        return await work(conn)
    except asyncpg.UndefinedTableError as exc:
        raise ConfigError(f"the database schema is behind ({exc.message}): run `fleet db migrate`") from exc
    finally:
        await conn.close()


def print_sessions(urls: ServiceUrls) -> None:
    """The ingest sessions the registry knows, and what the broker says it stores.

    A database that cannot say (not migrated, not reachable) gets its reason on the sessions line;
    the broker's lines follow all the same.
    """
    now = datetime.now(UTC)
    try:
        rows = asyncio.run(on_database(urls.database_url, sessions.listed))
    except FleetError as exc:
        rows = []
        click.echo(f"ingest sessions: unknown ({exc.message})")
    else:
        click.echo(f"ingest sessions: {len(rows)}")
    for row in rows:
        age = (now - row.last_seen).total_seconds()
        note = "running" if age < 90 else f"ABSENT for {_duration(age)}: forget it or bring it back"
        click.echo(
            f"  {row.client_id:<32} group {row.share_group:<12} host {row.host:<20}"
            f" last seen {row.last_seen:%Y-%m-%d %H:%M:%S}Z  {note}"
        )
    store = sessions.broker_store(urls.mqtt_url)
    click.echo(
        f"broker: {_count(store.stored_messages)} messages stored ({_count(store.stored_bytes)} bytes),"
        f" {_count(store.disconnected_clients)} disconnected clients with a session"
    )
    retained = sessions.retained_topics(urls.mqtt_url)
    click.echo(
        f"broker: {_count(None if retained is None else len(retained))} retained messages under fleet/"
        " (a status per device that ever connected; anything else there is left over)"
    )


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _duration(seconds: float) -> str:
    if seconds < 3_600:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


@main.group(name="db")
def db_group() -> None:
    """Database schema and upkeep.

    \b
    Example:
      fleet db migrate
    """


@db_group.command(name="migrate")
@click.option(
    "--sql-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="folder of NNN_name.sql files (default: the repository's sql/)",
)
@click.pass_obj
def db_migrate(settings: Settings, sql_dir: Path | None) -> None:
    """Apply the SQL migrations not yet applied, in order; a second run does nothing.

    \b
    Example:
      fleet db migrate
    """
    urls = stackfile.resolve_urls(settings)
    report = asyncio.run(migrate(urls.database_url, sql_dir))
    for name in report.applied:
        click.echo(f"applied {name}")
    if not report.applied:
        click.echo(f"up to date ({len(report.already)} migrations already applied)")
    features = report.features
    click.echo(
        f"TimescaleDB {features.version}, license {features.license}; PostGIS {features.postgis or 'absent'}"
    )
    if features.policies:
        click.echo("retention, compression and continuous aggregates: TimescaleDB policies")
    else:
        click.echo(
            "retention, compression and continuous aggregates: not under this license; "
            "fleet does retention and rollups itself"
        )


@main.group(invoke_without_command=True)
@click.option(
    "--burst",
    "burst_idle_s",
    type=float,
    default=None,
    help="exit once nothing arrived for this many seconds (one-off drains, tests)",
)
@click.option(
    "--instance", default=None, help="suffix of the MQTT client id, for several processes on one host"
)
@click.option(
    "--forget",
    is_flag=True,
    help="delete this instance's session from the broker and exit (an instance retired for good)",
)
@click.option(
    "--sessions",
    "show_sessions",
    is_flag=True,
    help="list the broker sessions ingest instances hold, with the broker's stored totals, and exit",
)
@click.pass_context
def ingest(
    ctx: click.Context, burst_idle_s: float | None, instance: str | None, forget: bool, show_sessions: bool
) -> None:
    """Consume signed frames and OwnTracks JSON from the broker into TimescaleDB and Redis, at least once.

    Run N of these (on N machines, or with --instance on one) to share the
    load: they split the messages on one MQTT 5 shared subscription. Each
    keeps a persistent session that the broker fills while it is down; an
    instance retired for good must be removed with --forget, or the broker
    keeps queueing its share for it.

    \b
    Example:
      fleet ingest
      fleet ingest --instance 2
      fleet ingest --sessions            # which sessions exist, when each instance was last seen
      fleet ingest --instance 2 --forget
      fleet ingest http --addr 0.0.0.0:5055   # drivers' phones over HTTP (see its --help)
    """
    if ctx.invoked_subcommand is not None:
        return
    settings: Settings = ctx.obj
    from fleet_ingest.runner import forget_session, run_ingest, serve_metrics
    from fleet_ingest.settings import load_ingest_settings
    from fleet_schemas.logs import configure_logging

    configure_logging(settings.log_level)
    ingest_settings = load_ingest_settings()
    urls = stackfile.resolve_urls(settings)
    client_id = f"{ingest_settings.client_id}-{instance}" if instance else ingest_settings.client_id
    if show_sessions:
        print_sessions(urls)
        return
    if forget:
        asyncio.run(forget_session(urls.mqtt_url, client_id, ingest_settings.group))
        asyncio.run(on_database(urls.database_url, lambda conn: sessions.forget(conn, client_id)))
        progress(f"ingest: session {client_id} deleted from the broker")
        return
    serve_metrics(ingest_settings.metrics_addr)
    batches = asyncio.run(
        run_ingest(settings, ingest_settings, urls, client_id=client_id, burst_idle_s=burst_idle_s)
    )
    progress(f"ingest: stopped after {batches} batches")


@ingest.command(name="http")
@click.option("--addr", default=None, help="host:port to listen on [FLEET_HTTP_INGEST_ADDR, 127.0.0.1:5055]")
@click.pass_obj
def ingest_http(settings: Settings, addr: str | None) -> None:
    """Take drivers' phones over HTTP (Traccar Client, OsmAnd, fleet apps) into the ingest pipeline.

    GET/POST / speaks the OsmAnd protocol; POST /v1/ingest/frames takes a
    wire-format JSON batch or a signed envelope. Phones authenticate with the
    device token of `fleet devices add --kind phone`. It needs PostgreSQL and
    Redis, not the broker; run as many as needed behind a load balancer, with
    TLS in front of it (the token travels in the URL).

    \b
    Example:
      fleet devices add phone-0007 --operator sogral --bus DZ-16-0007 --kind phone
      fleet ingest http --addr 0.0.0.0:5055
    """
    from fleet_ingest.runner import run_http_ingest, serve_metrics
    from fleet_ingest.settings import load_http_ingest_settings, load_ingest_settings
    from fleet_schemas.logs import configure_logging

    configure_logging(settings.log_level)
    http_settings = load_http_ingest_settings()
    if addr is not None:
        http_settings = msgspec.structs.replace(http_settings, addr=addr)
    serve_metrics(http_settings.metrics_addr)
    urls = stackfile.resolve_urls(settings)
    asyncio.run(run_http_ingest(settings, load_ingest_settings(), http_settings, urls))
    progress("ingest http: stopped")


@main.command()
@click.option("--operator", required=True, help="operator whose buses to show")
@click.option(
    "--rebuild",
    is_flag=True,
    help="first write each bus's newest stored frame (received within FLEET_LIVE_TTL_S) back to Redis,"
    " for a Redis that lost its keys; never moves a bus back",
)
@click.pass_obj
def live(settings: Settings, operator: str, rebuild: bool) -> None:
    """Show where each bus of an operator is now (Redis live state), newest first.

    \b
    Example:
      fleet live --operator sim
      fleet live --operator sim --rebuild   # after Redis came back empty
    """
    from fleet_ingest.service import open_redis
    from fleet_store.live import LiveState
    from fleet_store.live_rebuild import rebuild_live

    urls = stackfile.resolve_urls(settings)

    async def read() -> list[LivePosition]:
        client = open_redis(urls.redis_url)
        try:
            state = LiveState(client, ttl_s=settings.live_ttl_s)
            if rebuild:
                conn = await asyncpg.connect(urls.database_url)
                try:
                    rebuilt = await rebuild_live(conn, state, operator, settings.live_ttl_s)
                finally:
                    await conn.close()
                progress(f"live: {rebuilt} buses rebuilt from PostgreSQL")
            return await state.buses(operator)
        finally:
            await client.aclose()

    positions = asyncio.run(read())
    for p in positions:
        when = datetime.fromtimestamp(p.time_ms / 1000, UTC).strftime("%H:%M:%S")
        speed = f"{p.speed_mps * 3.6:5.1f} km/h" if p.speed_mps is not None else "    - km/h"
        click.echo(
            f"{p.bus:<16} {p.lat:10.5f} {p.lon:10.5f}  {speed}  fix {when}Z  seq {p.seq}  ({p.device})"
            + _trip_line(p)
        )
    progress(f"live: {len(positions)} buses of operator {operator}")


def _trip_line(position: LivePosition) -> str:
    """The trip block as a person reads it: trip, delay in minutes, next stop and its ETA (UTC)."""
    c = position.calculated
    if c is None:
        return ""
    if c.trip_id is None:
        return f"  [{c.state}]"
    parts = [f"  [{c.state} {c.trip_id}"]
    if c.delay_s is not None:
        parts.append(f" {c.delay_s / 60:+.0f} min")
    if c.next_stop_id is not None and c.next_stop_eta_ms is not None:
        eta = datetime.fromtimestamp(c.next_stop_eta_ms / 1000, UTC).strftime("%H:%M")
        parts.append(f", next {c.next_stop_id} at {eta}Z")
    return "".join(parts) + "]"


@db_group.command(name="maintain")
@click.pass_obj
def db_maintain(settings: Settings) -> None:
    """Refresh the 1-minute rollups and segment travel times; drop data past retention (FLEET_RETENTION_*).

    `fleet ingest` does this periodically too; run it from cron where no ingest runs.

    \b
    Example:
      fleet db maintain
    """
    from fleet_store.maintain import maintain

    urls = stackfile.resolve_urls(settings)
    report = asyncio.run(maintain(urls.database_url, settings.retention))
    click.echo(f"rollups: {report.minutes_refreshed} minutes refreshed ({report.rollup_rows} rows)")
    if report.history is not None:
        h = report.history
        click.echo(
            f"travel times: {h.visits} stop visits rolled up ({h.segment_rows} segment rows,"
            f" {h.dwell_rows} dwell rows); {report.visits_forgotten} visits past retention deleted"
        )
    for table, dropped in report.chunks_dropped.items():
        click.echo(f"retention: {table}: {dropped} chunks dropped")
    click.echo(f"compression: {report.compression}")
