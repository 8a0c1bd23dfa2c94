"""``fleet status`` against the real stack: every component looked at, the down ones named, exit code 1."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner

from fleet_cli.cli import main
from fleet_devtools import stack
from fleet_schemas.events import Event
from fleet_serve.app import create_app
from fleet_serve.settings import load_serve_settings
from fleet_store.events import write_events
from fleet_testing.ingest import IngestProcesses, register_devices, stored
from fleet_testing.mqtt import publish_all
from fleet_testing.serving import serving
from fleet_testing.traffic import mixed_traffic

pytestmark = pytest.mark.stack


def _status(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner(env=env).invoke(main, ["status", "--json", *args])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


async def _write_event(database_url: str, event: Event) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await write_events(conn, [event])
    finally:
        await conn.close()


def _components(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in found["components"]}


def test_status_reports_every_component_buses_going_offline_and_the_last_events(
    ingest: IngestProcesses, operator_id: str
) -> None:
    ingest.settings = {"FLEET_INGEST_OFFLINE_S": "3", "FLEET_INGEST_SWEEP_S": "1"}
    buses, keys = asyncio.run(register_devices(ingest.database_url, ingest.kek, operator_id, 4))
    traffic = mixed_traffic(operator_id, keys, buses, 200)
    asyncio.run(ingest.open_sessions("1"))
    ingest.start("1", burst_s=None)
    publish_all(ingest.urls.mqtt_url, traffic.messages)
    deadline = time.monotonic() + 60
    while len(stored(ingest.database_url, ingest.redis_url, operator_id, buses).positions) < len(
        traffic.stored
    ):
        assert time.monotonic() < deadline, "ingest did not store the traffic"
        time.sleep(0.2)
    newest = max(seq for _, seq in traffic.stored)
    overspeed = Event(
        operator=operator_id,
        bus=next(iter(buses.values())),
        kind="overspeed",
        time_ms=int(time.time() * 1000),
        cause_ms=int(time.time() * 1000),
        cause_seq=newest,
        subject="motorway-a1",
        details={"speed_mps": 33.0},
    )
    asyncio.run(_write_event(ingest.database_url, overspeed))
    env = {**ingest.env(), "FLEET_TOKEN_KEYS": "k1=" + "A" * 43 + "="}

    settings = load_serve_settings(env)
    with serving(create_app(settings, ingest.redis_url, ingest.database_url), settings) as serve_url:
        deadline = time.monotonic() + 30
        while True:  # the sweep declares the silent buses offline within seconds
            code, found = _status(env, "--serve", serve_url)
            if (found["buses"] and found["buses"][0]["offline"] == len(buses)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        text = CliRunner(env=env).invoke(main, ["status", "--serve", serve_url])
    assert code == 0, found
    assert found["ok"] is True
    components = _components(found)
    assert sorted(components) == sorted(["broker", "postgresql", "ingest", "redis", f"serve {serve_url}"])
    assert all(c["ok"] for c in components.values()), components
    assert components["ingest"]["facts"]["instances_running"] == 1
    assert components["ingest"]["facts"]["frames_last_5min"] == len(traffic.stored)
    assert components["broker"]["facts"]["stored_messages"] is not None
    assert found["buses"] == [{"operator": operator_id, "live": len(buses), "offline": len(buses)}]
    shown = [(e["kind"], e.get("subject", "")) for e in found["last_events"]]
    assert ("overspeed", "motorway-a1") in shown, shown
    assert {kind for kind, _ in shown} <= {"overspeed", "bus_offline"}, shown

    assert text.exit_code == 0, text.output
    assert "all OK" in text.output
    assert f"{operator_id}" in text.output
    assert "overspeed" in text.output


def test_status_names_what_is_down_and_exits_1(ingest: IngestProcesses) -> None:
    nowhere = f"127.0.0.1:{stack.free_port()}"
    env = {**ingest.env(), "FLEET_REDIS_URL": f"redis://{nowhere}/0"}
    code, found = _status(env, "--serve", f"http://{nowhere}")
    assert code == 1
    assert found["ok"] is False
    components = _components(found)
    assert components["broker"]["ok"] is True
    assert components["postgresql"]["ok"] is True
    assert components["redis"]["ok"] is False
    assert components[f"serve http://{nowhere}"]["ok"] is False
    assert components["ingest"]["ok"] is False  # none has run on this database
    assert components["ingest"]["detail"].startswith("running: none")

    text = CliRunner(env=env).invoke(main, ["status", "--serve", f"http://{nowhere}"])
    assert text.exit_code == 1
    assert "SOMETHING IS DOWN" in text.output
    assert "DOWN  redis" in text.output
