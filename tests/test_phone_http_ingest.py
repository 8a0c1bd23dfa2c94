"""Drivers' phones over HTTP: the apps' request shapes through a real ``fleet ingest http`` into PostgreSQL.

Each test registers a phone (``--kind phone``), starts the HTTP front on the
test's database and Redis, sends what Traccar Client (its query POST and its
JSON body), OsmAnd (its URL template) or a fleet app (``/v1/ingest/frames``)
sends, and reads what was stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

import asyncpg
import pytest
import redis.asyncio as aioredis

from fleet_devtools import stack
from fleet_schemas import Frame, encode_batch, seal
from fleet_schemas.live import LivePosition
from fleet_store import devices, stackfile
from fleet_store.live import LiveState
from fleet_store.settings import ServiceUrls, load_settings
from fleet_testing.database import empty_tables
from fleet_testing.ingest import IngestProcesses, stored
from fleet_testing.phones import Answer, add_phone, http_ingest, request

pytestmark = pytest.mark.stack

KNOT_MPS = 1852 / 3600
BUS = "DZ-16-0007"
BURST = 6
MAX_BODY = 65_536


@pytest.fixture(scope="module")
def phones(stack_urls: ServiceUrls, migrated_database_url: str, test_redis_url: str) -> Iterator[Front]:
    """One ``fleet ingest http`` for the module's tests (each test has its own operator and phone).

    Its key cache refuses to start while usable keys are sealed under another
    key-encryption key, as an earlier test's are: the database is emptied first.
    """
    asyncio.run(empty_tables(migrated_database_url))
    ingest = IngestProcesses(stack_urls, migrated_database_url, test_redis_url)
    settings = {
        "FLEET_HTTP_INGEST_BURST": str(BURST),
        "FLEET_HTTP_INGEST_RATE_PER_S": "0.1",
        "FLEET_HTTP_INGEST_MAX_BODY_BYTES": str(MAX_BODY),
    }
    with http_ingest(ingest, **settings) as base:
        yield Front(ingest, base)


@pytest.fixture
def front(phones: Front, database_url: str, redis_url: str) -> Front:
    """The module's HTTP front, on a database and Redis emptied for the test."""
    assert (database_url, redis_url) == (phones.ingest.database_url, phones.ingest.redis_url)
    return phones


@dataclass(frozen=True)
class Front:
    ingest: IngestProcesses
    base: str


def _now_s() -> int:
    return int(time.time()) - 60


def _traccar_client(base: str, token: str, t_s: int, **more: str) -> Answer:
    """Traccar Client for Android: POST with every value in the query, speed in knots, time in seconds."""
    params = {
        "id": token,
        "timestamp": str(t_s),
        "lat": "36.7525",
        "lon": "3.04197",
        "speed": "27.0",
        "bearing": "271.5",
        "altitude": "112.0",
        "accuracy": "6.0",
        "batt": "81.0",
        **more,
    }
    return request(f"{base}/?{urlencode(params)}", method="POST")


def _traccar_client_json(base: str, token: str, t_s: int) -> Answer:
    """The Flutter Traccar Client: its location template as a JSON body, speed in m/s, ISO time."""
    stamp = datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.250Z")
    body = {
        "location": {
            "timestamp": stamp,
            "coords": {
                "latitude": 36.7535,
                "longitude": 3.0430,
                "accuracy": 4.2,
                "speed": 12.5,
                "heading": -1,
                "altitude": 98.0,
            },
            "is_moving": True,
            "odometer": 1520.4,
            "event": "",
            "battery": {"level": 0.79, "is_charging": False},
            "activity": {"type": "in_vehicle"},
            "extras": {},
            "_": f"&id={token}&lat=36.7535&lon=3.0430&timestamp={stamp}&",
        },
        "device_id": token,
    }
    headers = {"Content-Type": "application/json"}
    return request(f"{base}/", method="POST", body=json.dumps(body).encode(), headers=headers)


def _osmand(base: str, token: str, t_ms: int) -> Answer:
    """OsmAnd's online tracking with fleet's URL template: time in ms, {5} as speed_mps, {3} as accuracy."""
    url = (
        f"{base}/?id={token}&lat=36.7545&lon=3.0440&timestamp={t_ms}&accuracy=3.5"
        "&altitude=87.5&speed_mps=16.4&bearing=12.0"
    )
    return request(url)


async def _live_position(redis_url: str, operator: str) -> LivePosition | None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await LiveState(client).position(operator, BUS)
    finally:
        await client.aclose()


def _rows(database_url: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _positions(database_url: str, device: str) -> list[asyncpg.Record]:
    return _rows(
        database_url,
        "SELECT seq, time, lat, lon, speed_mps, heading_deg, altitude_m, accuracy_m, source, key_id, bus,"
        " battery_pct, charging"
        " FROM positions WHERE device = $1 ORDER BY time",
        device,
    )


def _phone(front: Front, operator: str) -> tuple[str, str]:
    """A phone of its own for the test: (device, token)."""
    device = f"{operator}-ph"
    issued = add_phone(front.ingest, operator, device, BUS)
    assert issued.token is not None
    return device, issued.token


def test_traccar_client_and_osmand_requests_are_stored_in_si_units(front: Front, operator_id: str) -> None:
    device, token = _phone(front, operator_id)
    t0 = _now_s()
    form = urlencode(
        {
            "id": token,
            "timestamp": str(t0 + 30),
            "lat": "36.7550",
            "lon": "3.0445",
            "speed": "0",
            "batt": "64",
            "charge": "true",
        }
    )
    answers = [
        _traccar_client(front.base, token, t0),
        _traccar_client_json(front.base, token, t0 + 10),
        _osmand(front.base, token, (t0 + 20) * 1000 + 125),
        request(
            f"{front.base}/",
            method="POST",
            body=form.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ]
    assert [(a.status, a.body["accepted"], a.body["stored"]) for a in answers] == [(200, 1, 1)] * 4, answers
    query, body, osmand, posted = _positions(front.ingest.database_url, device)
    assert (posted["seq"], posted["lat"], posted["speed_mps"]) == ((t0 + 30) * 1000, 36.7550, 0.0)
    assert (query["seq"], query["time"].timestamp()) == (t0 * 1000, t0)
    assert query["speed_mps"] == pytest.approx(27.0 * KNOT_MPS, rel=1e-6)
    assert (query["heading_deg"], query["altitude_m"], query["accuracy_m"]) == (271.5, 112.0, 6.0)
    assert (body["seq"], body["speed_mps"], body["heading_deg"]) == ((t0 + 10) * 1000 + 250, 12.5, None)
    assert body["accuracy_m"] == pytest.approx(4.2, rel=1e-6)
    assert (body["lat"], body["lon"]) == (36.7535, 3.0430)
    assert (query["battery_pct"], query["charging"]) == (81.0, None)
    assert body["battery_pct"] == pytest.approx(79.0, rel=1e-6)
    assert body["charging"] is False
    assert (osmand["battery_pct"], osmand["charging"]) == (None, None)
    assert (osmand["seq"], osmand["accuracy_m"], osmand["heading_deg"]) == ((t0 + 20) * 1000 + 125, 3.5, 12.0)
    assert osmand["speed_mps"] == pytest.approx(16.4, rel=1e-6)
    assert {(r["source"], r["key_id"], r["bus"]) for r in (query, body, osmand)} == {
        ("phone", f"{device}-t1", BUS)
    }
    assert (posted["battery_pct"], posted["charging"]) == (64.0, True)
    live = stored(front.ingest.database_url, front.ingest.redis_url, operator_id, {device: BUS}).live
    assert live == {BUS: (device, (t0 + 30) * 1000)}
    position = asyncio.run(_live_position(front.ingest.redis_url, operator_id))
    assert position is not None
    assert (position.battery_pct, position.charging) == (64.0, True), "the manager sees the phone's battery"


def test_a_retried_request_is_stored_once(front: Front, operator_id: str) -> None:
    device, token = _phone(front, operator_id)
    t0 = _now_s()
    first, again = _traccar_client(front.base, token, t0), _traccar_client(front.base, token, t0)
    json_first = _traccar_client_json(front.base, token, t0 + 5)
    json_again = _traccar_client_json(front.base, token, t0 + 5)
    assert [
        (a.status, a.body["accepted"], a.body["stored"]) for a in (first, again, json_first, json_again)
    ] == [
        (200, 1, 1),
        (200, 1, 0),
        (200, 1, 1),
        (200, 1, 0),
    ]
    assert [r["seq"] for r in _positions(front.ingest.database_url, device)] == [
        t0 * 1000,
        (t0 + 5) * 1000 + 250,
    ]


def test_a_bad_missing_or_revoked_token_gets_401_and_nothing_is_stored(
    front: Front, operator_id: str
) -> None:
    device, token = _phone(front, operator_id)
    secret = token.partition(":")[2]
    t0 = _now_s()
    wrong = _traccar_client(front.base, f"{device}:not-the-secret", t0)
    other = _traccar_client(front.base, f"{operator_id}-other:{secret}", t0)
    shapeless = _traccar_client(front.base, "48241179", t0)
    missing = request(f"{front.base}/?lat=36.7&lon=3.0&timestamp={t0}")
    assert _traccar_client(front.base, token, t0).status == 200
    _revoke(front.ingest.database_url, device)
    revoked = _until(lambda: _traccar_client(front.base, token, t0 + 1), 401)
    for answer in (wrong, other, shapeless, missing, revoked):
        assert answer.status == 401, answer
        assert answer.headers["www-authenticate"] == "Bearer"
    assert (wrong.body["error"]["code"], missing.body["error"]["code"]) == ("token_invalid", "token_missing")
    assert [r["seq"] for r in _positions(front.ingest.database_url, device)] == [t0 * 1000]
    assert _rows(front.ingest.database_url, "SELECT 1 FROM rejected_frames") == []


def _revoke(database_url: str, device: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await devices.revoke_device(conn, device)
        finally:
            await conn.close()

    asyncio.run(run())


def _until(send: Callable[[], Answer], status: int, timeout_s: float = 60) -> Answer:
    """Send until the answer has ``status`` (a revocation reaches the cache within seconds; an app
    retries until the database is back); the last answer if it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = send()
        if answer.status == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.3)


def test_a_malformed_value_gets_400_naming_the_field_and_is_kept_without_the_token(
    front: Front, operator_id: str
) -> None:
    device, token = _phone(front, operator_id)
    secret = token.partition(":")[2]
    t0 = _now_s()
    bad_lat = _traccar_client(front.base, token, t0, lat="36,75")
    bad_speed = _traccar_client(front.base, token, t0, speed="-3")
    no_time = request(f"{front.base}/?id={token}&lat=36.7&lon=3.0")
    bad_json = request(
        f"{front.base}/",
        method="POST",
        body=json.dumps({"device_id": token, "location": {"timestamp": "x", "coords": {}}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert [a.status for a in (bad_lat, bad_speed, no_time, bad_json)] == [400] * 4
    assert (bad_lat.body["error"]["code"], bad_lat.body["error"]["message"][:4]) == ("invalid_field", "lat:")
    assert bad_speed.body["error"]["code"] == "out_of_range"
    assert bad_speed.body["error"]["message"].startswith("speed:")
    assert no_time.body["error"]["message"] == "timestamp: required"
    assert "location.coords" in bad_json.body["error"]["message"]
    assert _positions(front.ingest.database_url, device) == []
    kept = _rows(
        front.ingest.database_url, "SELECT reason, device, raw FROM rejected_frames ORDER BY received_at"
    )
    assert [(r["reason"], r["device"]) for r in kept] == [
        ("invalid_field", device),
        ("out_of_range", device),
        ("invalid_field", device),
        ("invalid_field", device),
    ]
    assert all(secret.encode() not in bytes(r["raw"]) for r in kept)
    assert bytes(kept[0]["raw"]).startswith(f"id={device}:[token]&timestamp=".encode())


def test_v1_ingest_frames_takes_batches_unsigned_or_signed(front: Front, operator_id: str) -> None:
    device = f"{operator_id}-ph"
    issued = add_phone(front.ingest, operator_id, device, BUS)
    t0_ms = _now_s() * 1000

    def frame(seq: int, who: str = device) -> Frame:
        return Frame(
            device=who, bus=BUS, seq=seq, time_ms=t0_ms + seq * 5000, lat=36.75 + seq * 1e-4, lon=3.04
        )

    url = f"{front.base}/v1/ingest/frames"
    bearer = {"Authorization": f"Bearer {issued.token}", "Content-Type": "application/json"}
    batch = encode_batch([frame(1), frame(2), frame(3)], device, "json")
    unsigned = request(url, method="POST", body=batch, headers=bearer)
    signed = request(url, method="POST", body=seal([frame(4)], issued.key, "json"), headers=bearer)
    stranger = f"{operator_id}-x"
    forged = request(
        url, method="POST", body=encode_batch([frame(9, stranger)], stranger, "json"), headers=bearer
    )
    garbage = request(url, method="POST", body=f'["{device}", [[1, 2]]]'.encode(), headers=bearer)
    anonymous = request(url, method="POST", body=batch)
    assert (unsigned.status, unsigned.body["stored"], signed.status, signed.body["stored"]) == (
        200,
        3,
        200,
        1,
    )
    assert (forged.status, forged.body["error"]["code"]) == (400, "device_mismatch")
    assert (garbage.status, garbage.body["error"]["code"]) == (400, "invalid_field")
    assert anonymous.status == 401
    rows = _positions(front.ingest.database_url, device)
    assert [(r["seq"], r["source"], r["key_id"]) for r in rows] == [
        (1, "phone", f"{device}-t1"),
        (2, "phone", f"{device}-t1"),
        (3, "phone", f"{device}-t1"),
        (4, "gps", f"{device}-k1"),
    ]


def test_a_device_over_its_rate_gets_429_and_a_big_body_413(front: Front, operator_id: str) -> None:
    device, token = _phone(front, operator_id)
    t0 = _now_s()
    answers = [_traccar_client(front.base, token, t0 + n) for n in range(BURST + 1)]
    big = request(
        f"{front.base}/v1/ingest/frames",
        method="POST",
        body=b"[" + b" " * MAX_BODY + b"]",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert [a.status for a in answers] == [200] * BURST + [429]
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert answers[-1].body["error"]["code"] == "rate_limited"
    assert (big.status, big.body["error"]["code"]) == (413, "too_large")
    assert len(_positions(front.ingest.database_url, device)) == BURST


def test_postgresql_down_gets_503_and_nothing_is_lost_once_the_app_retries(
    ingest: IngestProcesses, operator_id: str
) -> None:
    settings = load_settings()
    if settings.external or stackfile.read_state(settings.state_dir) is None:
        pytest.skip("stopping PostgreSQL needs the local stack, not FLEET_*_URL servers")
    device = f"{operator_id}-ph"
    token = add_phone(ingest, operator_id, device, BUS).token
    assert token is not None
    t0 = _now_s()
    with http_ingest(ingest, FLEET_HTTP_INGEST_GIVE_UP_S="1") as base:
        assert _traccar_client(base, token, t0).status == 200  # the token is verified and cached
        stack.down(settings.state_dir, only=("postgres",))
        try:
            during = [_traccar_client(base, token, t0 + n) for n in (1, 2)]
        finally:
            stack.up(settings.state_dir)
        retried = [_until(lambda n=n: _traccar_client(base, token, t0 + n), 200) for n in (1, 2)]  # type: ignore[misc]
    assert [a.status for a in during] == [503, 503]
    assert all(int(a.headers["retry-after"]) >= 1 for a in during)
    assert during[0].body["error"]["code"] == "unavailable"
    assert [a.status for a in retried] == [200, 200]
    stored_seqs = [r["seq"] for r in _positions(ingest.database_url, device)]
    assert stored_seqs == [t0 * 1000, (t0 + 1) * 1000, (t0 + 2) * 1000]
