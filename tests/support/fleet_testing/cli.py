"""``fleet`` commands run in-process, as a user would type them."""

from __future__ import annotations

from click.testing import CliRunner

from fleet_cli.cli import main


def fleet_devices(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``fleet devices ARGS`` with ``env``: exit code, stdout, stderr."""
    result = CliRunner(env=env).invoke(main, ["devices", *args])
    return result.exit_code, result.stdout, result.stderr
