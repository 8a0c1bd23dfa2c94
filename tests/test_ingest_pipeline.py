"""The ingest pipeline end to end against real Mosquitto, TimescaleDB and Redis.

Every scenario publishes a mix of good and bad signed frames through the
broker to real ``fleet ingest`` processes, then checks what the servers hold:
exactly the good unique frames in ``positions``, every bad message in
``rejected_frames`` with its reason and raw bytes, and each bus's newest fix
as its live position, whatever went wrong on the way.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner

from fleet_cli.cli import main
from fleet_devtools import stack
from fleet_devtools.scratch import recreate_database
from fleet_store import stackfile
from fleet_store.settings import ServiceUrls, load_settings
from fleet_testing.ingest import IngestProcesses, register_devices, stored
from fleet_testing.mqtt import publish_all
from fleet_testing.traffic import Traffic, mixed_traffic

pytestmark = pytest.mark.stack


def _traffic(
    ingest: IngestProcesses, operator: str, frames: int, devices: int = 40
) -> tuple[dict[str, str], Traffic]:
    buses, keys = asyncio.run(register_devices(ingest.database_url, ingest.kek, operator, devices))
    return buses, mixed_traffic(operator, keys, buses, frames)


def _check(ingest: IngestProcesses, operator: str, buses: dict[str, str], traffic: Traffic) -> None:
    result = stored(ingest.database_url, ingest.redis_url, operator, buses)
    assert len(result.positions) == len(set(result.positions)), "a frame was stored twice"
    missing = traffic.stored - set(result.positions)
    assert not missing, f"{len(missing)} good frames were lost, e.g. {sorted(missing)[:5]}"
    assert set(result.positions) == traffic.stored, "a bad frame was stored"
    assert result.rejected == traffic.stored_rejections
    assert result.rejected_raw == traffic.rejected_raw
    assert result.live == traffic.newest


def _publish_in_background(url: str, messages: list[tuple[str, bytes]]) -> threading.Thread:
    thread = threading.Thread(target=publish_all, args=(url, messages), daemon=True)
    thread.start()
    return thread


def test_mixed_traffic_stores_exactly_the_good_unique_frames(
    ingest: IngestProcesses, operator_id: str
) -> None:
    buses, traffic = _traffic(ingest, operator_id, 100_000)
    asyncio.run(ingest.open_sessions("1"))
    publish_all(ingest.urls.mqtt_url, traffic.messages)
    started = time.monotonic()
    ingest.start("1")
    ingest.wait("1")
    print(
        f"{len(traffic.messages)} messages ({traffic.duplicates} duplicates, {traffic.out_of_order} late, "
        f"{sum(traffic.rejected.values())} bad) ingested in {time.monotonic() - started:.1f} s"
    )
    _check(ingest, operator_id, buses, traffic)


def test_two_ingest_processes_store_the_same_result_as_one(ingest: IngestProcesses, operator_id: str) -> None:
    buses, traffic = _traffic(ingest, operator_id, 30_000)
    asyncio.run(ingest.open_sessions("1", "2"))
    ingest.start("1")
    ingest.start("2")
    publish_all(ingest.urls.mqtt_url, traffic.messages)
    ingest.wait("1")
    ingest.wait("2")
    _check(ingest, operator_id, buses, traffic)


def test_sigterm_mid_stream_then_restart_loses_nothing(ingest: IngestProcesses, operator_id: str) -> None:
    buses, traffic = _traffic(ingest, operator_id, 30_000)
    asyncio.run(ingest.open_sessions("1"))
    ingest.start("1", burst_s=None)
    publisher = _publish_in_background(ingest.urls.mqtt_url, traffic.messages)
    _wait_for_rows(ingest, operator_id, buses, 2_000)
    ingest.terminate("1")
    publisher.join()
    ingest.start("1")
    ingest.wait("1")
    _check(ingest, operator_id, buses, traffic)


def _restart(service: str) -> Callable[[], None]:
    def bounce() -> None:
        state_dir = load_settings().state_dir
        stack.down(state_dir, only=(service,))
        time.sleep(3)
        stack.up(state_dir)

    return bounce


@pytest.mark.parametrize("service", ["postgres", "redis"])
def test_database_or_redis_restarted_mid_stream_loses_nothing_and_duplicates_nothing(
    ingest: IngestProcesses, operator_id: str, service: str
) -> None:
    if load_settings().external or stackfile.read_state(load_settings().state_dir) is None:
        pytest.skip("restarting a server needs the local stack, not FLEET_*_URL servers")
    buses, traffic = _traffic(ingest, operator_id, 30_000)
    asyncio.run(ingest.open_sessions("1"))
    ingest.start("1", burst_s=6.0)
    publisher = _publish_in_background(ingest.urls.mqtt_url, traffic.messages)
    _wait_for_rows(ingest, operator_id, buses, 2_000)
    _restart(service)()
    publisher.join()
    log = ingest.wait("1")
    _check(ingest, operator_id, buses, traffic)
    store = "postgresql" if service == "postgres" else "redis"
    assert f'"store":"{store}"' in log, "the restart happened after ingest had finished: nothing was tested"


def test_metrics_count_frames_by_reason_and_duplicates(ingest: IngestProcesses, operator_id: str) -> None:
    ingest.metrics_addr = f"127.0.0.1:{stack.free_port()}"
    buses, traffic = _traffic(ingest, operator_id, 5_000, devices=10)
    asyncio.run(ingest.open_sessions("1"))
    ingest.start("1", burst_s=None)
    publish_all(ingest.urls.mqtt_url, traffic.messages)
    _wait_for_rows(ingest, operator_id, buses, len(traffic.stored))
    deadline = time.monotonic() + 30
    while True:
        metrics = _scrape(ingest.metrics_addr)
        if (
            metrics.get("fleet_ingest_messages_total", 0) >= len(traffic.messages)
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.2)
    ingest.terminate("1")
    assert metrics["fleet_ingest_messages_total"] == len(traffic.messages)
    assert metrics["fleet_ingest_frames_accepted_total"] == len(traffic.stored)
    assert metrics["fleet_ingest_frames_duplicate_total"] == traffic.duplicates
    for reason, count in traffic.rejected.items():
        assert metrics[f'fleet_ingest_frames_rejected_total{{reason="{reason}"}}'] == count
    assert metrics["fleet_ingest_lag_seconds_count"] == len(traffic.stored) + traffic.duplicates


def _scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _wait_for_rows(ingest: IngestProcesses, operator: str, buses: dict[str, str], rows: int) -> None:
    deadline = time.monotonic() + 120
    while len(stored(ingest.database_url, ingest.redis_url, operator, buses).positions) < rows:
        assert time.monotonic() < deadline, "ingest stored nothing"
        time.sleep(0.2)


def test_ingest_records_its_session_and_forget_removes_it(ingest: IngestProcesses, operator_id: str) -> None:
    asyncio.run(ingest.open_sessions("1"))
    ingest.start("1", burst_s=1.0)
    ingest.wait("1")
    env = {**ingest.env(), "FLEET_INGEST_CLIENT_ID": ingest.group}
    listed = CliRunner(env=env).invoke(main, ["ingest", "--sessions"])
    assert listed.exit_code == 0, listed.output
    assert "ingest sessions: 1" in listed.output
    assert f"{ingest.client_id('1')} " in listed.output
    assert "running" in listed.output
    assert "messages stored" in listed.output
    assert "retained messages under fleet/" in listed.output
    forgot = CliRunner(env=env).invoke(main, ["ingest", "--instance", "1", "--forget"])
    assert forgot.exit_code == 0, forgot.output
    assert "ingest sessions: 0" in CliRunner(env=env).invoke(main, ["ingest", "--sessions"]).output


def test_sessions_on_an_unmigrated_database_say_why_and_still_show_the_broker(
    stack_urls: ServiceUrls,
) -> None:
    name = f"{urlsplit(stack_urls.database_url).path.lstrip('/')}_unmigrated"
    asyncio.run(recreate_database(stack_urls.database_url, name))
    try:
        env = {
            "FLEET_MQTT_URL": stack_urls.mqtt_url,
            "FLEET_DATABASE_URL": urlunsplit(urlsplit(stack_urls.database_url)._replace(path=f"/{name}")),
            "FLEET_REDIS_URL": stack_urls.redis_url,
        }
        listed = CliRunner(env=env).invoke(main, ["ingest", "--sessions"])
    finally:
        asyncio.run(recreate_database(stack_urls.database_url, name, create=False))
    assert listed.exit_code == 0, listed.output
    assert "ingest sessions: unknown (the database schema is behind" in listed.output
    assert "run `fleet db migrate`" in listed.output
    assert "messages stored" in listed.output
    assert "retained messages under fleet/" in listed.output
