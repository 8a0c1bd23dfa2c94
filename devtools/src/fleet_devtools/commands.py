"""``fleet stack``, ``fleet simulate``, ``fleet demo`` and ``fleet demo-feed``: the development commands.

Registered on the ``fleet`` group through the ``fleet.commands`` entry point
(see this package's pyproject), so the production CLI never imports them.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import click

from fleet_cli.cli import print_sessions, progress
from fleet_devtools import stack
from fleet_store import stackfile
from fleet_store.broker_accounts import BrokerLogin, broker_dir
from fleet_store.errors import FleetError
from fleet_store.secretbox import KEK_FILE, load_key_encryption_key
from fleet_store.settings import ServiceUrls, Settings

if TYPE_CHECKING:
    from fleet_devtools.demo_status import Status


@click.group(name="stack")
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
        urls = stackfile.resolve_urls(settings)
    else:
        begun = time.monotonic()
        urls, started = stack.up(settings.state_dir, progress)
        verb = f"started {', '.join(started)}" if started else "all already running"
        progress(f"stack: {verb} in {time.monotonic() - begun:.1f} s; state in {settings.state_dir}")
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
    stopped = stack.down(settings.state_dir, progress)
    if not stopped:
        progress("stack: nothing was running")


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
        urls = stackfile.resolve_urls(settings)
    except FleetError as exc:
        click.echo(f"ingest sessions: unknown ({exc.message})")
        return
    print_sessions(urls)


@stack_group.command()
@click.pass_obj
def env(settings: Settings) -> None:
    """Print shell exports of the URLs in use (contains the MQTT password), the local KEK and broker folder.

    With all three URLs set, commands use those servers as existing ones, which
    need FLEET_KEY_ENCRYPTION_KEY (for the local stack it is read from its file
    when the exports are evaluated; the key itself is not printed) and
    FLEET_MOSQUITTO_DIR (where `fleet devices` writes the broker's accounts).

    \b
    Example:
      eval "$(fleet stack env)"; fleet devices add unit-1 --operator demo --bus B1
    """
    urls = stackfile.resolve_urls(settings)
    click.echo(f"export FLEET_MQTT_URL='{urls.mqtt_url}'")
    click.echo(f"export FLEET_DATABASE_URL='{urls.database_url}'")
    click.echo(f"export FLEET_REDIS_URL='{urls.redis_url}'")
    if not settings.external and not settings.key_encryption_key:
        load_key_encryption_key(settings)  # generated on first use, so the file exists to be read
        kek_file = shlex.quote(str(settings.state_dir / KEK_FILE))
        click.echo(f'export FLEET_KEY_ENCRYPTION_KEY="$(cat {kek_file})"')
    if not settings.external and settings.mosquitto_dir is None:
        broker = broker_dir(settings)  # with the URLs set, `fleet devices` would not find it alone
        if broker is not None:
            click.echo(f"export FLEET_MOSQUITTO_DIR={shlex.quote(str(broker))}")


@click.group()
def demo() -> None:
    """The demo: the whole chain on the local stack (run), or signed frames through the broker (broker).

    \b
    Example:
      fleet demo run --duration 60
    """


@demo.command(name="run")
@click.option("--buses", type=click.IntRange(min=1), default=200, show_default=True, help="simulated buses")
@click.option(
    "--duration",
    type=float,
    default=None,
    help="seconds from the first bus live to the exit (default: until Ctrl-C)",
)
@click.option("--addr", default=None, help="host:port for fleet serve and its map (default: a free port)")
@click.pass_obj
def demo_run(settings: Settings, buses: int, duration: float | None, addr: str | None) -> None:
    """The whole chain: stack, feed, ingest, serve, a token, N buses; prints the map URL and a status line.

    Imports the Algerian demo feed's lines (with departures every few minutes,
    so each bus has a trip) and its geofences, starts `fleet ingest` and
    `fleet serve`, issues a manager token, prints the map's URL, and runs
    `fleet simulate` with signed agents over MQTT (some detour, stop long or go
    dark). The status line (frames/s, buses live, events, websocket clients)
    is refreshed until Ctrl-C or --duration; then everything it started stops.
    With --duration it exits 1 unless its last status shows every bus live and
    events recorded.

    \b
    Example:
      fleet demo run                      # until Ctrl-C
      fleet demo run --duration 60 --buses 200
    """
    from fleet_devtools.demo_run import DemoOptions, run_demo_chain

    interactive = sys.stdout.isatty()
    status_shown = False  # on a terminal the status line is rewritten in place until something else prints

    def show(status: Status) -> None:
        nonlocal status_shown
        if interactive:
            click.echo(f"\r{status.line()}\033[K", nl=False)
            status_shown = True
        else:
            click.echo(status.line())

    def echo(line: str) -> None:
        nonlocal status_shown
        if status_shown:
            click.echo()
            status_shown = False
        click.echo(line, err=True)

    last = run_demo_chain(
        settings, DemoOptions(buses=buses, duration_s=duration, serve_addr=addr), echo=echo, show=show
    )
    if status_shown:
        click.echo()
    if last is not None:
        click.echo(f"demo: last status: {last.line()}")
    if duration is not None and (last is None or last.buses_live < buses or last.events_total == 0):
        click.echo(f"demo: expected {buses} buses live and events recorded", err=True)
        sys.exit(1)


@demo.command(name="screenshot")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/map.png"))
@click.option("--buses", type=click.IntRange(min=1), default=200, show_default=True, help="simulated buses")
@click.option(
    "--after",
    type=float,
    default=150.0,
    show_default=True,
    help="seconds of demo before the picture (the detours become deviations after about two minutes)",
)
@click.pass_obj
def demo_screenshot(settings: Settings, out: Path, buses: int, after: float) -> None:
    """Run the demo until every bus is live, take a PNG of /map in headless Chromium, stop the demo.

    Exits 1 if the page logged errors or the buses never all showed.

    \b
    Example:
      fleet demo screenshot docs/map.png
    """
    from fleet_devtools.demo_run import DemoOptions, run_demo_chain
    from fleet_devtools.screenshot import Shot, take

    shots: list[Shot] = []

    def done(map_url: str, status: Status) -> bool:
        if status.buses_live < buses or status.elapsed_s < after:
            return False
        progress(f"screenshot: opening the map with {status.buses_live} buses live")
        shots.append(take(map_url, out))
        return True

    run_demo_chain(
        settings,
        DemoOptions(buses=buses, duration_s=after + 300),
        echo=progress,
        show=lambda status: progress(status.line()),
        done=done,
    )
    if not shots:
        click.echo(f"screenshot: {buses} buses were never all live; no picture", err=True)
        sys.exit(1)
    shot = shots[0]
    for error in shot.errors:
        click.echo(f"screenshot: {error}", err=True)
    click.echo(f"screenshot: {shot.path}, {shot.buses_drawn} buses in view")
    if shot.errors:
        sys.exit(1)


@demo.command(name="broker")
@click.option("--buses", default=3, show_default=True, help="simulated buses")
@click.option("--frames", "frames_per_bus", default=30, show_default=True, help="frames per bus")
@click.pass_obj
def demo_broker(settings: Settings, buses: int, frames_per_bus: int) -> None:
    """Publish signed frames through the broker and show them arriving verified.

    \b
    Example:
      fleet stack up && fleet demo broker --buses 3
    """
    from fleet_devtools.demo import run_demo

    urls = stackfile.resolve_urls(settings)
    verified = run_demo(urls.mqtt_url, buses=buses, frames_per_bus=frames_per_bus, echo=click.echo)
    click.echo(
        f"demo: {verified} of {buses * frames_per_bus} frames arrived through the broker, signatures verified"
    )
    if verified != buses * frames_per_bus:
        sys.exit(1)


@click.command(name="demo-feed")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="folder to write the GTFS tables to (default: the feed shipped in fleet_devtools)",
)
@click.option(
    "--check", is_flag=True, help="write nothing; exit 1 if the shipped tables differ from the source"
)
def demo_feed(out: Path | None, check: bool) -> None:
    """Generate the Algerian demo GTFS feed from its hand-written source (data/feeds/algeria.toml).

    \b
    Example:
      fleet demo-feed --check
      fleet demo-feed --out /tmp/algeria && fleet gtfs import /tmp/algeria --operator demo-dz
    """
    from fleet_devtools.demo_feed import build_feed, feed_dir, load_source, stale_tables, write_feed

    tables = build_feed(load_source())
    target = out or feed_dir()
    if check:
        stale = stale_tables(tables, target)
        if stale:
            click.echo(f"demo-feed: {', '.join(stale)} in {target} differ from the source", err=True)
            sys.exit(1)
        click.echo(f"demo-feed: {target} matches its source")
        return
    write_feed(tables, target)
    click.echo(f"demo-feed: wrote {len(tables)} tables to {target}")


def _register_simulated(settings: Settings, urls: ServiceUrls, home: Path, operator: str, buses: int) -> None:
    from fleet_cli.devices_cli import update_broker
    from fleet_devtools.simulate import register
    from fleet_store import devices as registry
    from fleet_store.secretbox import load_key_encryption_key

    async def work() -> tuple[list[str], list[BrokerLogin]]:
        conn = await asyncpg.connect(urls.database_url)
        try:
            added = await register(conn, load_key_encryption_key(settings), home, operator, buses)
            return added, await registry.broker_logins(conn)
        finally:
            await conn.close()

    added, logins = asyncio.run(work())
    progress(f"simulate: registered {len(added)} new devices")
    # Always: the broker may have missed an earlier change (it was down, or restarted on a new config).
    update_broker(settings, logins)


@click.command()
@click.option(
    "--buses",
    type=click.IntRange(min=1),
    default=None,
    help="simulated buses, each a full agent (default 10; with --trips all-active, one per trip under way,"
    " or this many of those trips)",
)
@click.option("--operator", default="sim", show_default=True, help="operator id of the simulated buses")
@click.option("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
@click.option("--speedup", type=float, default=1.0, show_default=True, help="simulated seconds per second")
@click.option("--route", default=None, help="GeoJSON route file (default: Algiers-Blida)")
@click.option(
    "--feed",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="GTFS feed (folder or zip) whose trips the buses follow, with --trip or --trips",
)
@click.option(
    "--trip", "trip_ids", multiple=True, help="a trip of --feed to drive, one bus per --trip (repeatable)"
)
@click.option(
    "--trips",
    "trip_set",
    type=click.Choice(["all-active"]),
    default=None,
    help="all-active: one bus for every trip of --feed under way now",
)
@click.option("--delay-s", type=float, default=0.0, show_default=True, help="seconds late on the timetable")
@click.option(
    "--send-trip-id", is_flag=True, help="frames carry the trip_id (default: the server must infer it)"
)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="append each bus's true position and stop times to this JSON-lines file",
)
@click.option(
    "--chain-trips",
    is_flag=True,
    help="at the end of its trip a bus takes the next departure from that terminus (feeds running daily)",
)
@click.option(
    "--faults-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="of every N buses, one detours off its corridor, one stops 20 min, one goes dark 11 min (0: none)",
)
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
    buses: int | None,
    operator: str,
    duration: float | None,
    speedup: float,
    route: str | None,
    feed: Path | None,
    trip_ids: tuple[str, ...],
    trip_set: str | None,
    delay_s: float,
    send_trip_id: bool,
    truth: Path | None,
    chain_trips: bool,
    faults_every: int,
    seed: int,
    directory: Path | None,
    register: bool,
) -> None:
    """Run N simulated onboard agents in one process, publishing signed frames to the broker.

    With --feed and --trip (or --trips all-active) each bus follows one GTFS
    trip on its timetable, starting where the schedule (plus --delay-s) has it
    now, so a 5-hour trip is joined in its middle; --buses is then the number
    of trips (with --trips all-active, that many of the trips under way, taken
    evenly). --faults-every scripts detours, long stops and outages, starting
    from where each bus joins.

    \b
    Example:
      fleet simulate --buses 50 --duration 60 --register
      fleet simulate --operator demo-dz --register --feed devtools/src/fleet_devtools/data/feeds/algeria \\
        --trips all-active --delay-s 300 --truth /tmp/truth.jsonl --duration 30
    """
    from fleet_devtools.simulate import TripDrive, spread, trips_running
    from fleet_devtools.simulate import simulate as run_simulation

    drive = None
    trips = list(trip_ids)
    if (trip_ids or trip_set) and feed is None:
        raise click.UsageError("--trip and --trips need --feed")
    if feed is not None:
        if not (trip_ids or trip_set):
            raise click.UsageError("--feed needs --trip TRIP_ID or --trips all-active")
        drive = TripDrive(
            feed=str(feed),
            delay_s=delay_s,
            send_trip_id=send_trip_id,
            truth_file=str(truth) if truth else None,
            chain=chain_trips,
        )
        if trip_set == "all-active":
            running = trips_running(str(feed), int((time.time() - delay_s) * 1000))
            if buses is not None and buses > len(running):
                raise click.UsageError(f"--buses {buses}: {len(running)} trips of {feed} are under way now")
            trips += running if buses is None else spread(running, buses)
        if not trips:
            raise click.UsageError(f"no trip of {feed} is under way now")
        buses = len(trips)
        shown = ", ".join(trips[:10]) + (f" and {len(trips) - 10} more" if len(trips) > 10 else "")
        progress(f"simulate: {buses} buses on trips {shown}")
    buses = 10 if buses is None else buses
    urls = stackfile.resolve_urls(settings)
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
            report=progress,
            trips=trips,
            drive=drive,
            faults_every=faults_every,
        )
    )
    click.echo(f"simulate: {buses} buses produced {produced} frames; {acked} acknowledged by the broker")
    if produced and not acked:
        click.echo("simulate: the broker acknowledged nothing (see the warnings above)", err=True)
        sys.exit(1)
