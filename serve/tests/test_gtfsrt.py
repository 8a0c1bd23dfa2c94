"""The GTFS-realtime endpoints against the real Redis and PostgreSQL, with the demo feed imported.

Live state is written with ``fleet_store`` as ingest writes it; the feeds are
read back through HTTP, parsed with ``gtfsrt_build.decode`` (the code path
the real samples are decoded with, in test_gtfsrt_samples.py), held to the
validator's rules and compared with the state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner
from litestar.testing import TestClient

from fleet_cli.cli import main
from fleet_devtools.demo_feed import feed_dir
from fleet_schemas.gtfs import StopTime
from fleet_schemas.live import LivePosition
from fleet_schemas.trips import Calculated, StopEta, TripEtas
from fleet_serve.app import create_app
from fleet_serve.auth import Role, issue_token
from fleet_serve.gtfsrt_build import StaticIds, decode, to_json
from fleet_serve.settings import ServeSettings, TokenKey, load_serve_settings
from fleet_store import gtfs
from fleet_store.etas import EtaBoards, EtaUpdate
from fleet_store.live import LiveState
from fleet_testing.gtfsrt_rules import pairing_violations, violations

pytestmark = pytest.mark.stack

OPERATOR = "sogral"
KEY = TokenKey("k1", b"g" * 32)
PUBLIC = ServeSettings(token_keys=(KEY,), public_feeds=frozenset({OPERATOR}))
PRIVATE = ServeSettings(token_keys=(KEY,))
VEHICLES = f"/gtfs-rt/{OPERATOR}/vehicle-positions"
TRIPS = f"/gtfs-rt/{OPERATOR}/trip-updates"


class Scene(msgspec.Struct, frozen=True):
    """What the test wrote: the static feed's ids and the live records, at ``now_ms``."""

    ids: StaticIds
    positions: list[LivePosition]
    etas: list[TripEtas]
    now_ms: int


@pytest.fixture
def scene(database_url: str, redis_url: str) -> Scene:
    imported = CliRunner().invoke(
        main,
        ["gtfs", "import", str(feed_dir()), "--operator", OPERATOR],
        env={"FLEET_DATABASE_URL": database_url, "FLEET_REDIS_URL": redis_url},
    )
    assert imported.exit_code == 0, imported.output
    return asyncio.run(_write_live_state(database_url, redis_url))


async def _write_live_state(database_url: str, redis_url: str) -> Scene:
    conn = await asyncpg.connect(database_url)
    try:
        feed_id = await gtfs.active_feed_id(conn, OPERATOR)
        assert feed_id is not None
        feed = await gtfs.load_feed(conn, feed_id)
    finally:
        await conn.close()
    now_ms = int(time.time() * 1000)
    trips = feed.trips[:2]
    rows = {t.trip_id: [r for r in feed.stop_times if r.trip_id == t.trip_id] for t in trips}
    positions = [
        _position(f"bus-{n}", trip.trip_id, rows[trip.trip_id], now_ms - 3_000 * n)
        for n, trip in enumerate(trips)
    ]
    positions.append(_parked("bus-idle", now_ms - 1_000))
    positions.append(_parked("bus-stale", now_ms - 70_000))  # heard 70 s ago: not in the feeds (W008)
    etas = [
        _etas(p, trip.route_id, rows[trip.trip_id], feed_id, now_ms)
        for p, trip in zip(positions, trips, strict=False)
    ]
    client = aioredis.Redis.from_url(redis_url)
    try:
        await LiveState(client).update(positions, now_ms)
        await EtaBoards(client).publish([EtaUpdate(e) for e in etas], now_ms)
    finally:
        await client.aclose()
    ids = StaticIds.from_feed(feed_id, feed)
    return Scene(ids, positions, etas, now_ms)


def _parked(bus: str, time_ms: int) -> LivePosition:
    """A bus with no trip."""
    return LivePosition(
        operator=OPERATOR, bus=bus, device=f"d-{bus}", seq=1, time_ms=time_ms, lat=36.7, lon=3.1
    )


def _position(bus: str, trip_id: str, rows: list[StopTime], time_ms: int) -> LivePosition:
    return LivePosition(
        operator=OPERATOR,
        bus=bus,
        device=f"d-{bus}",
        seq=7,
        time_ms=time_ms,
        lat=36.5,
        lon=3.2,
        speed_mps=31.5,  # a coach on the motorway: over W004's 26 m/s, published as it is
        heading_deg=271.0,
        received_ms=time_ms + 400,
        calculated=Calculated(
            state="assigned",
            trip_id=trip_id,
            start_date="20261201",
            start_time="08:00:00",
            off_route_m=12.0,
            delay_s=90.0,
            next_stop_id=rows[1].stop_id,
            next_stop_sequence=rows[1].stop_sequence,
        ),
    )


def _etas(position: LivePosition, route_id: str, rows: list[StopTime], feed_id: int, now_ms: int) -> TripEtas:
    assert position.calculated is not None
    assert position.calculated.trip_id is not None
    stops = [
        StopEta(
            stop_sequence=row.stop_sequence,
            stop_id=row.stop_id,
            scheduled_arrival_ms=now_ms + k * 600_000,
            scheduled_departure_ms=now_ms + k * 600_000 + 60_000,
            arrival_ms=now_ms + k * 600_000 + 90_000,
            departure_ms=now_ms + k * 600_000 + 150_000,
            arrival_early_ms=now_ms + k * 600_000 + 30_000,
            arrival_late_ms=now_ms + k * 600_000 + 210_000,
        )
        for k, row in enumerate(rows[1:], start=1)
    ]
    return TripEtas(
        operator=OPERATOR,
        trip_id=position.calculated.trip_id,
        route_id=route_id,
        start_date="20261201",
        start_time="08:00:00",
        bus=position.bus,
        feed_id=feed_id,
        time_ms=position.time_ms,
        updated_ms=position.time_ms + 500,
        delay_s=90.0,
        stops=stops,
    )


@pytest.fixture
def client(scene: Scene, redis_url: str, database_url: str) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(PUBLIC, redis_url, database_url)) as test_client:
        yield test_client


def test_vehicle_positions_parse_pass_the_rules_and_match_the_live_state(
    client: TestClient[Any], scene: Scene
) -> None:
    answer = client.get(VEHICLES)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-protobuf"
    message = decode(answer.content)
    assert violations(message, scene.ids, int(time.time() * 1000)) == []
    vehicles = {e.vehicle.vehicle.id: e.vehicle for e in message.entity}
    assert set(vehicles) == {"bus-0", "bus-1", "bus-idle"}  # bus-stale left out
    for position in scene.positions[:2]:
        vehicle = vehicles[position.bus]
        assert position.calculated is not None
        assert (vehicle.trip.trip_id, vehicle.trip.start_date, vehicle.trip.start_time) == (
            position.calculated.trip_id,
            "20261201",
            "08:00:00",
        )
        assert vehicle.trip.route_id == scene.ids.route_of_trip[vehicle.trip.trip_id]
        assert vehicle.timestamp == position.time_ms // 1000
        assert vehicle.position.latitude == pytest.approx(position.lat, abs=1e-5)
        assert vehicle.position.longitude == pytest.approx(position.lon, abs=1e-5)
        assert vehicle.position.speed == pytest.approx(31.5)
        assert vehicle.position.bearing == pytest.approx(271.0)
        assert (vehicle.stop_id, vehicle.current_stop_sequence) == (
            position.calculated.next_stop_id,
            position.calculated.next_stop_sequence,
        )
    assert not vehicles["bus-idle"].HasField("trip")
    # A trip update may change a vehicle's trip, so its update time moves this header too (E017).
    newest = max(
        *(p.received_ms or p.time_ms for p in scene.positions[:3]), *(e.updated_ms for e in scene.etas)
    )
    assert message.header.timestamp == newest // 1000  # derived from the content


def test_trip_updates_parse_pass_the_rules_and_match_the_etas(client: TestClient[Any], scene: Scene) -> None:
    message = decode(client.get(TRIPS).content)
    assert violations(message, scene.ids, int(time.time() * 1000)) == []
    assert pairing_violations(decode(client.get(VEHICLES).content), message) == []
    updates = {e.trip_update.trip.trip_id: e.trip_update for e in message.entity}
    assert set(updates) == {e.trip_id for e in scene.etas}
    for etas in scene.etas:
        update = updates[etas.trip_id]
        assert update.vehicle.id == etas.bus
        assert update.timestamp == etas.time_ms // 1000
        published = [
            (s.stop_sequence, s.stop_id, s.arrival.time, s.departure.time) for s in update.stop_time_update
        ]
        assert published == [
            (s.stop_sequence, s.stop_id, s.arrival_ms // 1000, s.departure_ms // 1000) for s in etas.stops
        ]
        for stu in update.stop_time_update:
            assert (stu.arrival.delay, stu.arrival.uncertainty) == (90, 90)


def test_the_json_format_is_the_protobuf_json_mapping_of_the_same_feed(client: TestClient[Any]) -> None:
    protobuf = decode(client.get(VEHICLES).content)
    answer = client.get(VEHICLES, params={"format": "json"})
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == to_json(protobuf)


def test_two_serve_nodes_answer_the_same_bytes_for_the_same_state(
    scene: Scene, redis_url: str, database_url: str
) -> None:
    """E017/E018 across nodes: the header comes from the content, so a load balancer may pick either."""
    with (
        TestClient(create_app(PUBLIC, redis_url, database_url)) as one,
        TestClient(create_app(PUBLIC, redis_url, database_url)) as other,
    ):
        for path in (VEHICLES, TRIPS):
            first = one.get(path).content
            time.sleep(1.1)
            assert other.get(path).content == first


def _bearer(role: Role, operators: tuple[str, ...]) -> dict[str, str]:
    token, _ = issue_token(PRIVATE, role=role, operators=operators, ttl_s=600, sub="test")
    return {"Authorization": f"Bearer {token}"}


def test_feeds_not_public_need_a_booking_token_of_their_operator(
    scene: Scene, redis_url: str, database_url: str
) -> None:
    with TestClient(create_app(PRIVATE, redis_url, database_url)) as client:
        assert client.get(VEHICLES).status_code == 401
        assert client.get(TRIPS).json()["error"]["code"] == "token_missing"
        assert client.get(VEHICLES, headers=_bearer("booking", ("other",))).status_code == 403
        assert client.get(VEHICLES, headers=_bearer("analyst", (OPERATOR,))).status_code == 403
        for role in ("booking", "manager"):
            answer = client.get(TRIPS, headers=_bearer(role, (OPERATOR,)))
            assert answer.status_code == 200
            assert answer.headers["cache-control"] == "private, max-age=5"
            assert len(decode(answer.content).entity) == 2


def test_an_operator_without_a_feed_answers_404_in_the_error_shape(
    scene: Scene, redis_url: str, database_url: str
) -> None:
    everyone = ServeSettings(public_feeds=frozenset({"*"}))
    with TestClient(create_app(everyone, redis_url, database_url)) as client:
        assert client.get(VEHICLES).status_code == 200
        answer = client.get("/gtfs-rt/nobody/trip-updates")
    assert answer.status_code == 404
    assert answer.json() == {
        "error": {"code": "feed_not_found", "message": "operator 'nobody' has no active GTFS feed"}
    }


def test_a_bad_format_answers_400_in_the_error_shape(client: TestClient[Any]) -> None:
    answer = client.get(VEHICLES, params={"format": "xml"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_request"


def test_a_client_holding_the_current_feed_gets_304(client: TestClient[Any]) -> None:
    first = client.get(TRIPS)
    assert first.headers["cache-control"] == "public, max-age=5"
    again = client.get(TRIPS, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert client.get(TRIPS, params={"format": "json"}).headers["etag"] != first.headers["etag"]


def test_public_feeds_are_read_from_the_environment() -> None:
    assert not load_serve_settings({}).feeds_public(OPERATOR)
    listed = load_serve_settings({"FLEET_SERVE_PUBLIC_FEEDS": " sogral, tassili ,"})
    assert listed.public_feeds == {"sogral", "tassili"}
    assert listed.feeds_public("tassili")
    assert not listed.feeds_public("other")
    assert load_serve_settings({"FLEET_SERVE_PUBLIC_FEEDS": "*"}).feeds_public("other")
