"""deploy/systemd/fleet-ingest@.service restarts a dead instance quickly, under its own client id."""

from __future__ import annotations

from pathlib import Path

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "systemd" / "fleet-ingest@.service"


def _settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_a_dead_instance_is_restarted_within_seconds_and_stopped_gracefully() -> None:
    unit = _settings()
    assert unit["Restart"] == ["always"]
    assert int(unit["RestartSec"][0]) <= 5
    assert unit["StartLimitIntervalSec"] == ["0"]
    assert unit["KillSignal"] == ["SIGTERM"]
    assert int(unit["TimeoutStopSec"][0]) > 0


def test_each_instance_runs_under_its_own_client_id_with_settings_from_a_file() -> None:
    unit = _settings()
    assert unit["ExecStart"][0].endswith("fleet ingest --instance %i")
    assert "/etc/fleet/ingest.env" in unit["EnvironmentFile"]
