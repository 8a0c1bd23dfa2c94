"""The ``fleet-agent`` command: help with examples, refusals in one line, replay dry runs, status."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from fleet_agent.agent import Agent
from fleet_agent.cli import main
from fleet_agent.config import AgentConfig
from fleet_agent.fix import Fix
from fleet_agent.replay import DryRunFix, dry_run_lines
from fleet_testing.agents import agent_config, config_toml

NMEA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nmea"
REFUSING_BROKER = "mqtt://unit:secret@127.0.0.1:1"
"""A URL with a password (so the config must be 0600) where nothing listens: frames stay in the outbox."""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``fleet-agent run`` points the root logger at the runner's stderr; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write_config(directory: Path, *, prefix: bytes = b"", mode: int = 0o600) -> tuple[Path, AgentConfig]:
    """agent.toml (and its key file) under ``directory``; ``prefix`` goes before the first line."""
    config, _ = agent_config(directory, REFUSING_BROKER, operator="op-cli")
    path = directory / "agent.toml"
    path.write_bytes(prefix + config_toml(config))
    path.chmod(mode)
    return path, config


def test_every_command_shows_an_example_in_its_help() -> None:
    runner = CliRunner()
    for command in ["", *main.commands]:
        result = runner.invoke(main, [command, "--help"] if command else ["--help"])
        assert result.exit_code == 0, result.output
        assert "Example" in result.output, command


def _missing_config(directory: Path) -> Path:
    return directory / "agent.toml"


def _unknown_key(directory: Path) -> Path:
    return write_config(directory, prefix=b'colour = "red"\n')[0]


def _world_readable_key_file(directory: Path) -> Path:
    path, config = write_config(directory)
    Path(config.key_file).chmod(0o644)
    return path


def _missing_key_file(directory: Path) -> Path:
    path, config = write_config(directory)
    Path(config.key_file).unlink()
    return path


def _world_readable_config_with_password(directory: Path) -> Path:
    return write_config(directory, mode=0o644)[0]


def _with_broker_line(directory: Path, line: bytes, replacement: bytes) -> Path:
    path, _ = write_config(directory)
    toml = path.read_bytes()
    assert line in toml
    path.write_bytes(toml.replace(line, replacement))
    return path


def _backoff_ceiling_below_its_start(directory: Path) -> Path:
    return _with_broker_line(directory, b"backoff_max_s = 1.0", b"backoff_max_s = 0.1")


def _backoff_never_stable(directory: Path) -> Path:
    return _with_broker_line(directory, b"stable_after_s = 60.0", b"stable_after_s = 0.0")


@pytest.mark.parametrize(
    ("make_config", "expected"),
    [
        (_missing_config, ["[config_error]", "cannot be read"]),
        (_unknown_key, ["[config_error]", "colour"]),
        (_world_readable_key_file, ["[key_file_error]", "readable by others", "chmod 600"]),
        (_missing_key_file, ["[key_file_error]", "key.toml cannot be read"]),
        (_world_readable_config_with_password, ["[config_error]", "broker password", "chmod 600"]),
        (_backoff_ceiling_below_its_start, ["[config_error]", "backoff_max_s must not be below"]),
        (_backoff_never_stable, ["[config_error]", "stable_after_s"]),
    ],
)
def test_run_refuses_to_start_with_one_line_and_exit_code_2(
    tmp_path: Path, make_config: Callable[[Path], Path], expected: list[str]
) -> None:
    config_path = make_config(tmp_path)
    result = CliRunner().invoke(main, ["run", "--config", str(config_path)])
    assert result.exit_code == 2, result.output
    # The JSON log lines of what started before the refusal (the source) are not the message.
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fleet-agent: error [")
    for phrase in expected:
        assert phrase in lines[0]
    assert result.stdout == ""


@pytest.mark.skipif(not NMEA.is_dir(), reason=f"the shared NMEA captures ({NMEA}) are absent")
def test_replay_dry_run_prints_one_json_line_per_fix_of_each_capture() -> None:
    runner = CliRunner()
    for capture in sorted(NMEA.glob("*.log")):
        result = runner.invoke(main, ["replay", str(capture), "--dry-run"])
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines == list(dry_run_lines(capture)), capture.name
        for line in lines:
            msgspec.json.decode(line, type=DryRunFix, strict=True)
    rx210 = runner.invoke(main, ["replay", str(NMEA / "rx210.log"), "--dry-run"])
    assert len(rx210.stdout.splitlines()) == 40


class _Fixes:
    """A receiver that gives these fixes and then goes quiet."""

    def __init__(self, fixes: list[Fix]) -> None:
        self._fixes = fixes

    async def fixes(self) -> AsyncIterator[Fix]:
        for fix in self._fixes:
            yield fix


def test_status_reports_the_backlog_and_the_health_file_after_the_agent_ran(tmp_path: Path) -> None:
    config_path, config = write_config(tmp_path)
    now_ms = int(time.time() * 1000)
    fixes = [
        Fix(time_ms=now_ms - (5 - n) * 1000, lat=36.73 - n * 0.001, lon=3.08, mode=3, speed_mps=15.0)
        for n in range(5)
    ]
    agent = Agent(config, _Fixes(fixes))

    async def run_until_stored() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(agent.run(stop))
        while agent.outbox.next_seq < len(fixes):
            await asyncio.sleep(0.01)
        stop.set()
        await running

    asyncio.run(run_until_stored())
    result = CliRunner().invoke(main, ["status", "--config", str(config_path)])
    assert result.exit_code == 0, result.output
    report = msgspec.json.decode(result.stdout)
    assert config.health_file is not None
    health = msgspec.json.decode(Path(config.health_file).read_bytes())
    assert report["backlog"] == 5, "nothing reached the refusing broker: all 5 frames wait"
    assert report == {"device": config.device, "backlog": 5} | {
        key: value for key, value in health.items() if key != "backlog"
    }
    assert report["next_seq"] == 5
    assert report["connected"] is False
    assert report["fixes"]["framed"] == 5
    assert report["last_fix_ms"] == fixes[-1].time_ms
