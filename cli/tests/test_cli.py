"""The fleet command against the real local stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import click
import pytest
from click.testing import CliRunner

from fleet_cli.cli import CORE_COMMANDS, _FleetGroup, main
from fleet_store.migrate import load_migrations, migrate
from fleet_store.settings import ServiceUrls
from fleet_testing.ingest import fleet_env

REPO = Path(__file__).resolve().parents[2]


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path, as click lists them (so the commands other packages add are there too)."""
    ctx = click.Context(group)
    paths = [prefix]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    paths = _command_paths(main)
    assert ("ingest",) in paths
    assert ("bench", "ingest") in paths
    for path in paths:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example" in result.output, path


@pytest.mark.stack
def test_stack_status_and_env_report_the_running_servers(stack_urls: ServiceUrls) -> None:
    runner = CliRunner()
    env = runner.invoke(main, ["stack", "env"])
    assert env.exit_code == 0, env.output
    assert f"export FLEET_DATABASE_URL='{stack_urls.database_url}'" in env.output
    status = runner.invoke(main, ["stack", "status"])
    if status.output.startswith("stack: never started"):
        pytest.skip("the servers come from FLEET_*_URL, not the local stack")
    assert status.exit_code == 0, status.output
    assert status.output.count(" up ") == 3


@pytest.mark.stack
def test_stack_up_twice_starts_nothing_the_second_time(stack_urls: ServiceUrls) -> None:
    result = CliRunner().invoke(main, ["stack", "up"])
    assert result.exit_code == 0, result.output
    assert "starting" not in result.output
    assert f"FLEET_DATABASE_URL={stack_urls.database_url}" in result.output


@pytest.mark.stack
def test_migrate_twice_applies_nothing_the_second_time(migrated_database_url: str) -> None:
    report = asyncio.run(migrate(migrated_database_url))
    assert report.applied == []
    assert report.already == [m.name for m in load_migrations(REPO / "sql")]
    assert report.features.version
    assert report.features.license in ("apache", "timescale")


@pytest.mark.stack
def test_migrated_schema_has_hypertables(database_url: str) -> None:
    async def hypertables() -> set[str]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT hypertable_name FROM timescaledb_information.hypertables")
            return {r["hypertable_name"] for r in rows}
        finally:
            await conn.close()

    assert {"positions", "rejected_frames"} <= asyncio.run(hypertables())


@pytest.mark.stack
def test_a_frame_identity_is_stored_once_whatever_its_fix_time(database_url: str) -> None:
    insert = """INSERT INTO frame_ids (device, seq, time) VALUES ('bus-a', 7, to_timestamp($1 / 1000.0))
                ON CONFLICT DO NOTHING"""

    async def store_twice() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            for time_ms in (1_795_000_000_000, 1_795_000_060_000):
                await conn.execute(insert, time_ms)
            count: int = await conn.fetchval("SELECT count(*) FROM frame_ids")
            return count
        finally:
            await conn.close()

    assert asyncio.run(store_twice()) == 1


def test_bootstrap_a_second_time_does_nothing() -> None:
    result = subprocess.run(
        [str(REPO / "scripts" / "bootstrap")], capture_output=True, text=True, check=False, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout, result.stdout


@pytest.mark.stack
def test_demo_frames_arrive_through_the_broker_verified(stack_urls: ServiceUrls) -> None:
    result = CliRunner().invoke(main, ["demo", "broker", "--buses", "2", "--frames", "15"])
    assert result.exit_code == 0, result.output
    assert "demo: 30 of 30 frames arrived" in result.output


@pytest.mark.stack
@pytest.mark.parametrize("device", ["x\n", "unit-1\n", "unit 1"])
def test_devices_add_with_an_unsafe_id_is_one_line_without_secrets(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path, device: str
) -> None:
    env = fleet_env(stack_urls, database_url, tmp_path / "broker")
    result = CliRunner(env=env).invoke(main, ["devices", "add", device, "--operator", "o", "--bus", "b"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error [invalid_identifier]: device ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "$7$" not in result.output


@pytest.mark.stack
def test_the_readme_recipe_stack_env_then_devices_add_works_as_written(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    env = CliRunner().invoke(main, ["stack", "env"])
    if "FLEET_KEY_ENCRYPTION_KEY" not in env.output:
        pytest.skip("the servers come from FLEET_*_URL, not the local stack")
    # The test database and a broker folder of the test's own stand in for the stack's after the
    # exports, so the developer's own devices and broker accounts are left alone.
    script = (
        'eval "$(fleet stack env)" && echo "broker folder: $FLEET_MOSQUITTO_DIR"'
        ' && export FLEET_DATABASE_URL="$TEST_DATABASE_URL" FLEET_MOSQUITTO_DIR="$PWD"'
        " && fleet devices add unit-recipe --operator demo --bus B1 --key-file key.toml"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    clean["FLEET_STATE_DIR"] = str(Path(".fleet").absolute())
    clean["TEST_DATABASE_URL"] = database_url
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=clean, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"broker folder: {Path('.fleet').absolute()}/data/mosquitto" in result.stdout
    assert (tmp_path / "key.toml").exists()


def test_a_core_command_is_found_without_loading_the_installed_extras() -> None:
    """``fleet ingest`` must not import every installed command group before it starts."""
    ingest_command = main.commands["ingest"]
    group = _FleetGroup(name="fleet", commands={"ingest": ingest_command})
    ctx = click.Context(group)
    assert group.get_command(ctx, "ingest") is ingest_command
    assert not group._extras_loaded
    assert group.get_command(ctx, "bench") is not None  # fleet_devtools' group, by its entry point
    assert group._extras_loaded


def test_fleet_ingest_starts_without_importing_the_other_commands_or_the_web_framework() -> None:
    """Every core group is imported when named: ``fleet ingest`` loads neither litestar nor the CLI groups."""
    probe = (
        "import sys, click\n"
        "from fleet_cli.cli import main\n"
        "main.get_command(click.Context(main), 'ingest')\n"
        "import fleet_ingest.runner\n"
        "loaded = [m for m in sys.modules if m.startswith('litestar') or m.startswith('fleet_cli.')]\n"
        "print(sorted(m for m in loaded if not m.startswith('fleet_cli.cli')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_core_command_is_listed_and_found_by_its_name() -> None:
    ctx = click.Context(main)
    listed = main.list_commands(ctx)
    for name in CORE_COMMANDS:
        assert name in listed
        command = main.get_command(ctx, name)
        assert command is not None, name
        assert command.name == name
