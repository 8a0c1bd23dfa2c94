"""A real Prometheus scrapes fleet ingest, fleet serve and the exporters, all real, under traffic.

Every panel query of dashboards/grafana returns data; every alert rule
evaluates without error on the real series, names only series that exist,
and is in the state the traffic calls for: the mixed traffic's 3 % of bad
messages and its minutes-old frames (an uploaded backlog) set off the
rejected-share and lag alerts, nothing else; then ingest is killed and
IngestDown goes pending.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_devtools import stack
from fleet_devtools.dashboards import queries
from fleet_schemas import status_topic
from fleet_schemas.status import DeviceStatus, encode_status
from fleet_testing.cleanup import BrokerCleanup
from fleet_testing.ingest import IngestProcesses, register_devices
from fleet_testing.mqtt import publish_all
from fleet_testing.prometheus import Processes, PrometheusApi, prometheus_config, wait_for_http
from fleet_testing.traffic import mixed_traffic

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
RATE_INTERVAL = "15s"
"""what ``$__rate_interval`` stands for at a 1 s scrape (Grafana makes it at least 4 scrapes)"""
SETTLE_S = 60.0
"""how long the series may take to reach every panel and alert state after the traffic (a timeout)"""
CREATED_ON_FIRST = {"fleet_serve_requests_error_total"}
"""series Litestar creates at the first 5xx, which a healthy run never answers"""
METRIC = re.compile(r"\b((?:fleet|pg|redis|node)_[a-z0-9_]+)")


def _mountpoint(path: Path) -> str:
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return str(path)


def _disk_used(mountpoint: str) -> float:
    stat = os.statvfs(mountpoint)
    return 1 - stat.f_bavail / stat.f_blocks


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.close()


def _http_load(base_url: str, stop: threading.Event) -> None:
    """Requests of a few routes and outcomes (200, 401, 404) until ``stop``."""
    paths = ["/healthz", "/readyz", "/v1/operators/nobody/buses", "/nowhere"]
    while not stop.is_set():
        for path in paths:
            with contextlib.suppress(OSError):  # 4xx answers raise; they are part of the load
                urllib.request.urlopen(f"{base_url}{path}", timeout=5).close()  # noqa: S310 - our http URL
        stop.wait(0.05)


def test_every_panel_query_and_alert_rule_works_on_real_metrics(
    ingest: IngestProcesses,
    processes: Processes,
    broker_cleanup: BrokerCleanup,
    operator_id: str,
    tmp_path: Path,
) -> None:
    urls = ingest.urls
    ports = {
        job: stack.free_port()
        for job in ("fleet-serve", "fleet-broker", "postgres", "redis", "postgres-host")
    }
    ingest.metrics_addr = f"127.0.0.1:{stack.free_port()}"
    buses, keys = asyncio.run(register_devices(ingest.database_url, ingest.kek, operator_id, 10))
    traffic = mixed_traffic(operator_id, keys, buses, 3_000)
    broker_cleanup.retained(urls.mqtt_url, f"fleet/v1/{operator_id}/#")
    status = DeviceStatus(state="online", device=keys[0].device, agent_version="test", backlog=42)
    publish_all(
        urls.mqtt_url, [(status_topic(operator_id, keys[0].device), encode_status(status))], retain=True
    )

    asyncio.run(ingest.open_sessions("1"))
    ingest.start("1", burst_s=None)
    env = {
        "FLEET_MQTT_URL": urls.mqtt_url,
        "FLEET_DATABASE_URL": ingest.database_url,
        "FLEET_REDIS_URL": ingest.redis_url,
        "FLEET_LOG_LEVEL": "WARNING",
    }
    serve_url = f"http://127.0.0.1:{ports['fleet-serve']}"
    processes.start(
        "fleet-serve",
        [sys.executable, "-m", "fleet_cli", "serve"],
        {
            **env,
            "FLEET_SERVE_ADDR": f"127.0.0.1:{ports['fleet-serve']}",
            "FLEET_TOKEN_KEYS": f"k1={base64.b64encode(os.urandom(32)).decode()}",
        },
    )
    processes.start(
        "fleet-broker",
        [
            sys.executable,
            "-m",
            "fleet_cli",
            "broker-exporter",
            "--addr",
            f"127.0.0.1:{ports['fleet-broker']}",
        ],
        env,
    )
    processes.start(
        "postgres",
        [
            "prometheus-postgres-exporter",
            f"--web.listen-address=127.0.0.1:{ports['postgres']}",
            f"--extend.query-path={DASHBOARDS / 'postgres-exporter-queries.yml'}",
            "--log.level=error",
        ],
        {"DATA_SOURCE_NAME": f"{ingest.database_url}?sslmode=disable"},
    )
    processes.start(
        "redis",
        [
            "prometheus-redis-exporter",
            "-redis.addr",
            ingest.redis_url,
            "-web.listen-address",
            f"127.0.0.1:{ports['redis']}",
        ],
    )
    processes.start(
        "postgres-host",
        [
            "prometheus-node-exporter",
            f"--web.listen-address=127.0.0.1:{ports['postgres-host']}",
            "--collector.disable-defaults",
            "--collector.filesystem",
        ],
    )
    mountpoint = _mountpoint(Path(os.environ.get("FLEET_STATE_DIR", ROOT / ".fleet")))
    targets = {
        "fleet-ingest": ingest.metrics_addr,
        **{job: f"127.0.0.1:{port}" for job, port in ports.items()},
    }
    config = prometheus_config(DASHBOARDS / "prometheus.yml", tmp_path, targets, mountpoint)
    prometheus_port = stack.free_port()
    processes.start(
        "prometheus",
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=error",
        ],
    )
    for name, target in targets.items():
        if name in processes.running:
            wait_for_http(f"http://{target}/metrics", processes, name)
    wait_for_http(f"http://127.0.0.1:{prometheus_port}/-/ready", processes, "prometheus")
    api = PrometheusApi(f"http://127.0.0.1:{prometheus_port}")

    stop = threading.Event()
    load = threading.Thread(target=_http_load, args=(serve_url, stop), daemon=True)
    load.start()
    try:
        for start in range(0, len(traffic.messages), 150):  # about 20 s of traffic
            publish_all(urls.mqtt_url, traffic.messages[start : start + 150])
            time.sleep(0.5)
        _every_panel_query_returns_data(api, time.monotonic() + SETTLE_S)
        _every_alert_rule_is_healthy_and_names_real_series(api)
        expected = {"IngestRejectedShareHigh", "IngestLagHigh"}
        expected |= {"PostgresDiskFilling"} if _disk_used(mountpoint) > 0.8 else set()
        expected |= {"PostgresDiskFull"} if _disk_used(mountpoint) > 0.9 else set()
        deadline = time.monotonic() + SETTLE_S
        while api.alert_states() != dict.fromkeys(expected, "pending"):
            assert time.monotonic() < deadline, (expected, api.get("/api/v1/alerts"))
            time.sleep(0.5)

        ingest.running.pop("1").kill()
        deadline = time.monotonic() + 30
        while api.alert_states().get("IngestDown") != "pending":
            assert time.monotonic() < deadline, f"IngestDown never went pending: {api.alert_states()}"
            time.sleep(0.5)
    finally:
        stop.set()
        load.join(10)


def _every_panel_query_returns_data(api: PrometheusApi, deadline: float) -> None:
    panels = [
        (f"{path.stem} / {title}", expr.replace("$__rate_interval", RATE_INTERVAL))
        for path in sorted((DASHBOARDS / "grafana").glob("*.json"))
        for title, expr in queries(json.loads(path.read_text()))
    ]
    while True:  # the rates need two samples inside their window
        panels = [(title, expr) for title, expr in panels if not api.query(expr)]
        if not panels or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert not panels, "panel queries with no data:\n" + "\n".join(f"{t}: {e}" for t, e in panels)


def _every_alert_rule_is_healthy_and_names_real_series(api: PrometheusApi) -> None:
    rules = api.rules()
    assert {r["name"] for r in rules} >= {"IngestDown", "PostgresDown", "RedisDown", "BrokerDown"}
    unhealthy = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    named = {name for r in rules for name in METRIC.findall(r["query"])}
    present = {
        s["metric"]["__name__"] for s in api.query(f'group by (__name__) ({{__name__=~"{"|".join(named)}"}})')
    }
    assert named - present - CREATED_ON_FIRST == set(), (
        f"alert rules name series no exporter serves: {sorted(named - present)}"
    )
