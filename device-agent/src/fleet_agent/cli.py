"""The ``fleet-agent`` command run on each bus's onboard unit."""

from __future__ import annotations

import click

from fleet_agent import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleet-agent")
def main() -> None:
    """fleet's onboard agent: read GNSS fixes, sign them, keep them through outages, publish over MQTT 5.

    \b
    Example:
      fleet-agent --version
    """


@main.command()
def version() -> None:
    """Print the agent and wire-format versions.

    \b
    Example:
      fleet-agent version
    """
    from fleet_schemas import FORMAT_VERSION

    click.echo(f"fleet-agent {__version__} (wire format v{FORMAT_VERSION})")
