"""The ``fleet`` command: one entry point for every server-side task."""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import click

from fleet_ingest import __version__, sessions, stack
from fleet_ingest.bench_cli import bench
from fleet_ingest.broker_accounts import BrokerLogin
from fleet_ingest.devices_cli import devices
from fleet_ingest.errors import ConfigError, FleetError
from fleet_ingest.migrate import migrate
from fleet_ingest.secretbox import KEK_FILE, load_key_encryption_key
from fleet_ingest.settings import ServiceUrls, Settings, load_settings
from fleet_schemas.live import LivePosition


class _FleetGroup(click.Group):
    """Shows a FleetError as one line with its code, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FleetError as exc:
            click.echo(f"error [{exc.code}]: {exc.message}", err=True)
            sys.exit(1)


def _progress(line: str) -> None:
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


@main.group(name="stack")
def stack_group() -> None:
    """Run a throwaway local stack: Mosquitto, Redis, PostgreSQL+TimescaleDB.

    \b
    Example:
      fleet stack up; eval "$(fleet stack env)"; fleet stack down
    """


@stack_group.command()
@click.pass_obj
def up(settings: Settings) -> None:
    """Start the local servers on free loopback ports (idempotent) and print their URLs.

    With FLEET_MQTT_URL, FLEET_DATABASE_URL and FLEET_REDIS_URL all set, nothing
    is started and those servers are used.

    \b
    Example:
      fleet stack up
    """
    if settings.external:
        click.echo(
            "FLEET_MQTT_URL, FLEET_DATABASE_URL and FLEET_REDIS_URL are set: using those servers", err=True
        )
        urls = stack.resolve_urls(settings)
    else:
        begun = time.monotonic()
        urls, started = stack.up(settings.state_dir, _progress)
        verb = f"started {', '.join(started)}" if started else "all already running"
        _progress(f"stack: {verb} in {time.monotonic() - begun:.1f} s; state in {settings.state_dir}")
    click.echo(f"FLEET_MQTT_URL={stack.redact(urls.mqtt_url)}")
    click.echo(f"FLEET_DATABASE_URL={urls.database_url}")
    click.echo(f"FLEET_REDIS_URL={urls.redis_url}")


@stack_group.command()
@click.pass_obj
def down(settings: Settings) -> None:
    """Stop the local servers; their data stays under FLEET_STATE_DIR.

    \b
    Example:
      fleet stack down
    """
    stopped = stack.down(settings.state_dir, _progress)
    if not stopped:
        _progress("stack: nothing was running")


@stack_group.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """Show whether each local server answers; exits 1 if one does not.

    \b
    Example:
      fleet stack status
    """
    services = stack.status(settings.state_dir)
    if not services:
        click.echo("stack: never started here (run `fleet stack up`)")
        sys.exit(1)
    for service in services:
        state = "up" if service.answering else "DOWN"
        click.echo(f"{service.name:<10} {state:<5} {service.url}  ({service.detail})")
    if not all(s.answering for s in services):
        sys.exit(1)
    try:
        _print_sessions(stack.resolve_urls(settings))
    except FleetError as exc:
        click.echo(f"ingest sessions: unknown ({exc.message})")


T = TypeVar("T")


async def _on_database(database_url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
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


def _print_sessions(urls: ServiceUrls) -> None:
    """The ingest sessions the registry knows, and what the broker says it stores."""
    now = datetime.now(UTC)
    rows = asyncio.run(_on_database(urls.database_url, sessions.listed))
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


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _duration(seconds: float) -> str:
    if seconds < 3_600:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


@stack_group.command()
@click.pass_obj
def env(settings: Settings) -> None:
    """Print shell exports of the URLs in use (contains the MQTT password), and of the local KEK.

    With all three URLs set, commands use those servers as existing ones, which
    need FLEET_KEY_ENCRYPTION_KEY: for the local stack it is read from its file
    when the exports are evaluated (the key itself is not printed).

    \b
    Example:
      eval "$(fleet stack env)"; fleet devices add unit-1 --operator demo --bus B1
    """
    urls = stack.resolve_urls(settings)
    click.echo(f"export FLEET_MQTT_URL='{urls.mqtt_url}'")
    click.echo(f"export FLEET_DATABASE_URL='{urls.database_url}'")
    click.echo(f"export FLEET_REDIS_URL='{urls.redis_url}'")
    if not settings.external and not settings.key_encryption_key:
        load_key_encryption_key(settings)  # generated on first use, so the file exists to be read
        kek_file = shlex.quote(str(settings.state_dir / KEK_FILE))
        click.echo(f'export FLEET_KEY_ENCRYPTION_KEY="$(cat {kek_file})"')


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
    urls = stack.resolve_urls(settings)
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


@main.command()
@click.option("--buses", default=3, show_default=True, help="simulated buses")
@click.option("--frames", "frames_per_bus", default=30, show_default=True, help="frames per bus")
@click.pass_obj
def demo(settings: Settings, buses: int, frames_per_bus: int) -> None:
    """Publish signed frames through the broker and show them arriving verified.

    \b
    Example:
      fleet stack up && fleet demo --buses 3
    """
    from fleet_ingest.demo import run_demo

    urls = stack.resolve_urls(settings)
    verified = run_demo(urls.mqtt_url, buses=buses, frames_per_bus=frames_per_bus, echo=click.echo)
    click.echo(
        f"demo: {verified} of {buses * frames_per_bus} frames arrived through the broker, signatures verified"
    )
    if verified != buses * frames_per_bus:
        sys.exit(1)


def _register_simulated(settings: Settings, urls: ServiceUrls, home: Path, operator: str, buses: int) -> None:
    from fleet_ingest import devices as registry
    from fleet_ingest.devices_cli import update_broker
    from fleet_ingest.secretbox import load_key_encryption_key
    from fleet_ingest.simulate import register

    async def work() -> tuple[list[str], list[BrokerLogin]]:
        conn = await asyncpg.connect(urls.database_url)
        try:
            added = await register(conn, load_key_encryption_key(settings), home, operator, buses)
            return added, await registry.broker_logins(conn)
        finally:
            await conn.close()

    added, logins = asyncio.run(work())
    _progress(f"simulate: registered {len(added)} new devices")
    if added:
        update_broker(settings, logins)


@main.command()
@click.option("--buses", default=10, show_default=True, help="simulated buses, each a full agent")
@click.option("--operator", default="sim", show_default=True, help="operator id of the simulated buses")
@click.option("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
@click.option("--speedup", type=float, default=1.0, show_default=True, help="simulated seconds per second")
@click.option("--route", default=None, help="GeoJSON route file (default: Algiers-Blida)")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="keys and outboxes (default: FLEET_STATE_DIR/sim)",
)
@click.option(
    "--register",
    is_flag=True,
    help="register the buses as devices (keys, broker logins) so `fleet ingest` accepts them",
)
@click.pass_obj
def simulate(
    settings: Settings,
    buses: int,
    operator: str,
    duration: float | None,
    speedup: float,
    route: str | None,
    seed: int,
    directory: Path | None,
    register: bool,
) -> None:
    """Run N simulated onboard agents in one process, publishing signed frames to the broker.

    \b
    Example:
      fleet simulate --buses 50 --duration 60 --register
    """
    from fleet_ingest.simulate import simulate as run_simulation

    urls = stack.resolve_urls(settings)
    home = directory or settings.state_dir / "sim"
    if register:
        _register_simulated(settings, urls, home, operator, buses)
    produced, acked = asyncio.run(
        run_simulation(
            home,
            urls.mqtt_url,
            operator,
            buses,
            duration_s=duration,
            speedup=speedup,
            route=route,
            seed=seed,
            report=_progress,
        )
    )
    click.echo(f"simulate: {buses} buses produced {produced} frames; {acked} acknowledged by the broker")


main.add_command(devices)
main.add_command(bench)


@main.command()
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
@click.pass_obj
def ingest(
    settings: Settings, burst_idle_s: float | None, instance: str | None, forget: bool, show_sessions: bool
) -> None:
    """Consume signed frames from the broker into TimescaleDB and Redis, at least once.

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
    """
    from fleet_agent.logs import configure_logging
    from fleet_ingest.runner import forget_session, run_ingest, serve_metrics

    configure_logging(settings.log_level)
    urls = stack.resolve_urls(settings)
    client_id = f"{settings.ingest_client_id}-{instance}" if instance else settings.ingest_client_id
    if show_sessions:
        _print_sessions(urls)
        return
    if forget:
        asyncio.run(forget_session(urls.mqtt_url, client_id, settings.ingest_group))
        asyncio.run(_on_database(urls.database_url, lambda conn: sessions.forget(conn, client_id)))
        _progress(f"ingest: session {client_id} deleted from the broker")
        return
    serve_metrics(settings.metrics_addr)
    batches = asyncio.run(run_ingest(settings, urls, client_id=client_id, burst_idle_s=burst_idle_s))
    _progress(f"ingest: stopped after {batches} batches")


@main.command()
@click.option("--operator", required=True, help="operator whose buses to show")
@click.pass_obj
def live(settings: Settings, operator: str) -> None:
    """Show where each bus of an operator is now (Redis live state), newest first.

    \b
    Example:
      fleet live --operator sim
    """
    from datetime import UTC, datetime

    from fleet_ingest.live import LiveState
    from fleet_ingest.service import open_redis

    async def read() -> list[LivePosition]:
        client = open_redis(stack.resolve_urls(settings).redis_url)
        try:
            return await LiveState(client).buses(operator)
        finally:
            await client.aclose()

    positions = asyncio.run(read())
    for p in positions:
        when = datetime.fromtimestamp(p.time_ms / 1000, UTC).strftime("%H:%M:%S")
        speed = f"{p.speed_mps * 3.6:5.1f} km/h" if p.speed_mps is not None else "    - km/h"
        click.echo(
            f"{p.bus:<16} {p.lat:10.5f} {p.lon:10.5f}  {speed}  fix {when}Z  seq {p.seq}  ({p.device})"
        )
    _progress(f"live: {len(positions)} buses of operator {operator}")


@db_group.command(name="maintain")
@click.pass_obj
def db_maintain(settings: Settings) -> None:
    """Refresh the 1-minute rollups and drop data past its retention (FLEET_RETENTION_*).

    `fleet ingest` does this periodically too; run it from cron where no ingest runs.

    \b
    Example:
      fleet db maintain
    """
    from fleet_ingest.maintain import maintain

    urls = stack.resolve_urls(settings)
    report = asyncio.run(maintain(urls.database_url, settings.retention))
    click.echo(f"rollups: {report.minutes_refreshed} minutes refreshed ({report.rollup_rows} rows)")
    for table, dropped in report.chunks_dropped.items():
        click.echo(f"retention: {table}: {dropped} chunks dropped")
    click.echo(f"compression: {report.compression}")
