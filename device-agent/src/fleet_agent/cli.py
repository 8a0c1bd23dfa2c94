"""The ``fleet-agent`` command run on each bus's onboard unit."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import click
import msgspec

from fleet_agent import __version__
from fleet_agent.errors import AgentError


class _AgentGroup(click.Group):
    """Shows an AgentError as one line with its code and exits 2: the unit's supervisor sees why."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except AgentError as exc:
            click.echo(f"fleet-agent: error [{exc.code}]: {exc.message}", err=True)
            sys.exit(2)


@click.group(cls=_AgentGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleet-agent")
def main() -> None:
    """fleet's onboard agent: read GNSS fixes, sign them, keep them through outages, publish over MQTT 5.

    \b
    Example:
      fleet-agent run --config /etc/fleet-agent/agent.toml
    """


_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/etc/fleet-agent/agent.toml"),
    show_default=True,
    help="agent.toml",
)


def _install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


@main.command()
@_config_option
def run(config_path: Path) -> None:
    """Run the agent until SIGTERM/SIGINT; unacked frames stay in the outbox for next time.

    \b
    Example:
      fleet-agent run --config agent.toml
    """
    from fleet_agent.agent import Agent
    from fleet_agent.config import load_config
    from fleet_agent.keys import read_key_file
    from fleet_agent.sources import open_source
    from fleet_schemas.logs import configure_logging

    config = load_config(config_path)
    configure_logging(config.log_level)
    # A bad key file is refused before the receiver is opened, so its error is the only line.
    read_key_file(Path(config.key_file), config.device)

    async def main_loop() -> None:
        stop = asyncio.Event()
        _install_stop_signals(stop)
        await Agent(config, open_source(config.source, bus=config.bus)).run(stop)

    asyncio.run(main_loop())


@main.command()
@_config_option
def status(config_path: Path) -> None:
    """Show backlog, last fix, last ack and key id of the agent configured by --config.

    Reads the health file and the outbox; works whether the agent runs or not.

    \b
    Example:
      fleet-agent status --config agent.toml
    """
    from fleet_agent.config import load_config

    config = load_config(config_path)
    outbox = Path(config.data_dir) / "outbox.sqlite"
    backlog: int | None = None
    if outbox.exists():
        with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as conn:
            backlog = conn.execute("SELECT count(*) FROM frames").fetchone()[0]
    health: dict[str, object] = {}
    if config.health_file and Path(config.health_file).exists():
        health = msgspec.json.decode(Path(config.health_file).read_bytes())
    report = {
        "device": config.device,
        "backlog": backlog,
        **{k: v for k, v in health.items() if k != "backlog"},
    }
    click.echo(msgspec.json.format(msgspec.json.encode(report)).decode())


@main.command()
@click.argument("nmea_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="print each fix as one JSON line instead of publishing")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="agent.toml (needed unless --dry-run)",
)
def replay(nmea_file: Path, dry_run: bool, config_path: Path | None) -> None:
    """Replay a field log of NMEA sentences: publish its fixes, or print them with --dry-run.

    Published replays keep the receiver's fix times (no clock check) and go
    through the outbox like live fixes; the command ends when all are acked.

    \b
    Example:
      fleet-agent replay drive-2026-11-02.nmea --dry-run | head
      fleet-agent replay drive-2026-11-02.nmea --config agent.toml
    """
    if dry_run:
        from fleet_agent.replay import dry_run_lines

        for line in dry_run_lines(nmea_file):
            click.echo(line)
        return
    if config_path is None:
        raise click.UsageError("--config is needed to publish; use --dry-run to only print the fixes")
    from fleet_agent.agent import Agent
    from fleet_agent.config import SourceConfig, load_config
    from fleet_agent.sources import open_source
    from fleet_schemas.logs import configure_logging

    config = load_config(config_path)
    configure_logging(config.log_level)
    source = open_source(SourceConfig(kind="nmea-file", path=str(nmea_file), speedup=0))

    async def main_loop() -> None:
        stop = asyncio.Event()
        _install_stop_signals(stop)
        agent = Agent(config, source, check_clock=False)
        await agent.run(stop, exit_when_drained=True)
        click.echo(f"replayed {agent.fixes.framed} frames of {agent.fixes.received} fixes", err=True)

    asyncio.run(main_loop())
