"""compose.yaml cannot run here (no Docker engine); it must at least parse and be consistent."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_compose_file_parses_and_names_the_three_servers() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert {"timescaledb", "redis", "mosquitto"} <= set(services)
    assert "timescaledb" in services["timescaledb"]["image"]


def test_every_file_compose_mounts_exists() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).is_file(), source


def test_broker_config_never_drops_queued_messages_and_confines_devices() -> None:
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "max_queued_messages 0" in conf
    assert "persistence true" in conf
    assert "allow_anonymous false" in conf
    acl = (REPO / "deploy" / "mosquitto" / "acl").read_text().splitlines()
    assert "pattern write fleet/v1/+/%u/frames" in acl
    assert not any(line.startswith("pattern read") for line in acl)
