"""compose.yaml cannot run here (no Docker engine); it must at least parse and be consistent."""

from __future__ import annotations

from pathlib import Path

import yaml

from fleet_devtools.stack import mosquitto_config
from fleet_schemas import MAX_PACKET_BYTES
from fleet_store import dynsec

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
                assert (REPO / source).exists(), source


def test_broker_config_never_drops_queued_messages_and_confines_devices() -> None:
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "max_queued_messages 0" in conf
    assert "persistence true" in conf
    assert "allow_anonymous false" in conf
    assert not any(line.startswith("acl_file") for line in conf), "acl_file checks no SUBSCRIBE"
    assert "plugin /usr/lib/mosquitto_dynamic_security.so" in conf
    shipped = (REPO / "deploy" / "mosquitto" / "dynamic-security.json").read_text()
    assert shipped == dynsec.render(dynsec.desired(["fleet-server"], []))


def test_deployed_and_local_brokers_refuse_packets_over_what_ingest_accepts(tmp_path: Path) -> None:
    for conf in (
        (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text(),
        mosquitto_config(tmp_path, 1883),
    ):
        assert f"max_packet_size {MAX_PACKET_BYTES}" in conf.splitlines()


def test_compose_pins_the_broker_version_bootstrap_installs() -> None:
    image = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["mosquitto"]["image"]
    bootstrap = (REPO / "scripts" / "bootstrap").read_text()
    minimum = bootstrap.split("MIN_MOSQUITTO=", 1)[1].split()[0]
    version = image.split(":", 1)[1]
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split("."))), image


def test_each_ingest_replica_has_its_own_stable_client_id() -> None:
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    ingest = {name: s for name, s in services.items() if s.get("command") == ["ingest"]}
    assert len(ingest) >= 2
    client_ids = [s["environment"]["FLEET_INGEST_CLIENT_ID"] for s in ingest.values()]
    assert len(set(client_ids)) == len(client_ids), client_ids
    assert all(s.get("deploy", {}).get("replicas", 1) == 1 for s in ingest.values()), "a replica is a service"
