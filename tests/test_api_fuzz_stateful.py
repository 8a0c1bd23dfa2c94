"""Schemathesis walks the HTTP API of a real ``fleet serve`` along its links: never a 5xx, always its schema.

The server is the real command in its own process, on the test Redis and
PostgreSQL, with the demo feed imported, buses live (frames through the real
broker and ``fleet ingest``) and trip predictions on the board. Schemathesis
builds a state machine from ``serve/openapi.json`` plus the links written
here (Litestar emits none): from the buses near a point to one bus and its
track, from a trip's ETAs to a stop's arrivals and one stop's ETA, from an
events page to the next. Every request carries a manager token of the feed's
operator, so the walk gets past the token check into Redis and PostgreSQL.

``FLEET_FUZZ_API_STEPS`` sets the number of scenarios (``make fuzz`` runs a
long walk); the default keeps this test well under a minute.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from fleet_cli.cli import main
from fleet_devtools.demo_feed import feed_dir
from fleet_devtools.stack import free_port
from fleet_schemas import Frame, frames_topic, seal
from fleet_serve.auth import issue_token
from fleet_serve.settings import ServeSettings, TokenKey
from fleet_store.settings import ServiceUrls
from fleet_testing.ingest import IngestProcesses, register_devices
from fleet_testing.mqtt import publish_all
from fleet_testing.records import trip_etas

pytestmark = pytest.mark.stack

DOCUMENT = Path(__file__).resolve().parents[1] / "serve" / "openapi.json"
SCENARIOS = int(os.environ.get("FLEET_FUZZ_API_STEPS", "25"))
ALGIERS = "36.7347,3.0866"
TRIP = "ALG-ORN-out-0600"
OPERATIONS = "/v1/operators/{operator}"


def _link(operation: str, **parameters: str) -> dict[str, Any]:
    return {"operationRef": f"#/paths/{operation.replace('/', '~1')}/get", "parameters": parameters}


LINKS: dict[str, dict[str, dict[str, Any]]] = {
    f"{OPERATIONS}/buses": {
        "ToBus": _link(f"{OPERATIONS}/buses/{{bus}}", bus="$response.body#/buses/0/position/bus"),
        "ToTrack": _link(f"{OPERATIONS}/buses/{{bus}}/track", bus="$response.body#/buses/0/position/bus"),
    },
    f"{OPERATIONS}/trips/{{trip_id}}/etas": {
        "ToArrivals": _link(
            f"{OPERATIONS}/stops/{{stop_id}}/arrivals", stop_id="$response.body#/instances/0/stops/0/stop_id"
        ),
        "ToStopEta": _link(
            f"{OPERATIONS}/trips/{{trip_id}}/stops/{{stop_id}}/eta",
            trip_id="$request.path.trip_id",
            stop_id="$response.body#/instances/0/stops/0/stop_id",
        ),
    },
    f"{OPERATIONS}/events": {
        "NextPage": _link(f"{OPERATIONS}/events", cursor="$response.body#/next_cursor"),
    },
}


def _document_with_links() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT.read_text())
    for path, links in LINKS.items():
        document["paths"][path]["get"]["responses"]["200"]["links"] = links
    return document


def _live_buses(ingest: IngestProcesses, operator: str) -> None:
    """Three buses moving near Algiers, through the broker and a real ingest."""
    buses, keys = asyncio.run(register_devices(ingest.database_url, ingest.kek, operator, 3))
    now_ms = int(time.time() * 1000)
    messages = [
        (
            frames_topic(operator, key.device),
            seal(
                [
                    Frame(
                        device=key.device,
                        bus=buses[key.device],
                        seq=seq,
                        time_ms=now_ms - (10 - seq) * 1_000,
                        lat=36.7347 + lane * 0.001 + seq * 0.0001,
                        lon=3.0866,
                        accuracy_m=5.0,
                    )
                ],
                key,
            ),
        )
        for lane, key in enumerate(keys)
        for seq in range(1, 10)
    ]
    asyncio.run(ingest.open_sessions("1"))
    publish_all(ingest.urls.mqtt_url, messages)
    ingest.start("1")
    ingest.wait("1")


def _predictions(redis_url: str, operator: str) -> None:
    """Two running instances of the demo feed's first trip on the ETA board, as ingest writes them."""
    import redis.asyncio as aioredis

    from fleet_store.etas import EtaBoards, EtaUpdate

    async def publish() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            now_ms = int(time.time() * 1000)
            updates = [
                EtaUpdate(trip_etas(operator, TRIP, bus, now_ms + 600_000, start_time=start))
                for bus, start in (("B1", "06:00:00"), ("B2", "09:30:00"))
            ]
            await EtaBoards(client).publish(updates, now_ms=now_ms)
        finally:
            await client.aclose()

    asyncio.run(publish())


@pytest.fixture
def served(
    stack_urls: ServiceUrls, database_url: str, redis_url: str, ingest: IngestProcesses, operator_id: str
) -> Iterator[tuple[str, str]]:
    """A real ``fleet serve`` over the seeded test stores; yields its base URL and a manager token."""
    imported = CliRunner().invoke(
        main,
        ["gtfs", "import", str(feed_dir()), "--operator", operator_id],
        env={"FLEET_DATABASE_URL": database_url},
    )
    assert imported.exit_code == 0, imported.output
    _live_buses(ingest, operator_id)
    _predictions(redis_url, operator_id)
    secret = secrets.token_bytes(32)
    token, _ = issue_token(
        ServeSettings(token_keys=(TokenKey("fuzz", secret),)),
        role="manager",
        operators=(operator_id,),
        ttl_s=3_600,
        sub="api fuzz",
    )
    port = free_port()
    env = {
        **os.environ,
        "FLEET_SERVE_ADDR": f"127.0.0.1:{port}",
        "FLEET_TOKEN_KEYS": f"fuzz={base64.b64encode(secret).decode()}",
        "FLEET_DATABASE_URL": database_url,
        "FLEET_REDIS_URL": redis_url,
        "FLEET_MQTT_URL": stack_urls.mqtt_url,
        "FLEET_LOG_LEVEL": "WARNING",
    }
    env.pop("FLEET_TOKEN_ISSUER", None)
    server = subprocess.Popen([sys.executable, "-m", "fleet_cli", "serve"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, server)
        yield base, token
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, f"fleet serve exited with {server.returncode}"
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:  # noqa: S310 - our own URL
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("fleet serve did not become ready within 60 s")


def test_walks_along_the_api_links_never_meet_a_5xx_or_an_answer_outside_the_schema(
    served: tuple[str, str], operator_id: str
) -> None:
    base, token = served
    schema = schemathesis.openapi.from_dict(_document_with_links())
    schema.config.update(base_url=base, headers={"Authorization": f"Bearer {token}"})
    calls: list[tuple[str, int]] = []

    class Walk(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            if "operator" in (case.path_parameters or {}):
                case.path_parameters["operator"] = operator_id
            if case.operation.path.endswith("/buses") and case.query is not None:
                case.query["near"] = ALGIERS  # where the live buses are: the links need one
            if case.operation.path.endswith("/etas"):
                case.path_parameters["trip_id"] = TRIP  # the trip on the board

        def after_call(self, response: Any, case: Any) -> None:
            calls.append((case.operation.path, response.status_code))

        def validate_response(self, response: Any, case: Any, *_: Any, **kwargs: Any) -> None:
            # Only these two: a 400 for a range the schema cannot express (from < to, 48 h) is right.
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance], transport_kwargs=kwargs
            )

    Walk.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )

    linked = {path for path, status in calls if status == 200}
    assert f"{OPERATIONS}/buses/{{bus}}" in linked, f"the walk never reached a bus: {sorted(set(calls))}"
    assert f"{OPERATIONS}/stops/{{stop_id}}/arrivals" in linked, "the walk never followed a trip to a stop"
