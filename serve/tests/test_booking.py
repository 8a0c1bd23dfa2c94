"""The booking API against real Redis and PostgreSQL: state written through ``fleet_store``, read by HTTP.

The demo feed is imported with ``fleet gtfs import``, so "unknown trip" and
"known trip with nothing running" are told apart by the real active feed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from litestar import Litestar
from litestar.testing import TestClient

from fleet_schemas.live import LivePosition
from fleet_schemas.trips import Calculated, StopEta, TripEtas
from fleet_store.etas import EtaBoards, EtaUpdate
from fleet_store.live import LiveState

pytestmark = pytest.mark.stack

Client = TestClient[Litestar]


@pytest.fixture(autouse=True)
def _booking_token(client: Client, operator_id: str, token_for: Callable[..., str]) -> None:
    """Every request here carries a booking token of the test's operator, unless it says otherwise."""
    client.headers["Authorization"] = "Bearer " + token_for("booking", operator_id)


TRIP = "ALG-ORN-out-0600"
"""a demo trip: ALG-CAR(1) BLI(2) CHL(3) REL(4) ORN(5)"""
NOW_MS = int(time.time() * 1000)
MINUTE_MS = 60_000


def _stop(sequence: int, stop_id: str, in_min: int) -> StopEta:
    at = NOW_MS + in_min * MINUTE_MS
    return StopEta(
        stop_sequence=sequence,
        stop_id=stop_id,
        scheduled_arrival_ms=at - MINUTE_MS,
        scheduled_departure_ms=at,
        arrival_ms=at,
        departure_ms=at + MINUTE_MS,
        arrival_early_ms=at - 2 * MINUTE_MS,
        arrival_late_ms=at + 3 * MINUTE_MS,
    )


def _etas(operator: str, bus: str, start_date: str, stops: list[StopEta]) -> TripEtas:
    return TripEtas(
        operator=operator,
        trip_id=TRIP,
        route_id="ALG-ORN",
        start_date=start_date,
        start_time="06:00:00",
        bus=bus,
        feed_id=1,
        time_ms=NOW_MS,
        updated_ms=NOW_MS,
        delay_s=60.0,
        stops=stops,
    )


def _position(operator: str, bus: str, lat: float, lon: float) -> LivePosition:
    return LivePosition(
        operator=operator,
        bus=bus,
        device=f"dev-{bus}",
        seq=1,
        time_ms=NOW_MS,
        lat=lat,
        lon=lon,
        speed_mps=22.0,
        trip_id=TRIP,
        calculated=Calculated(state="assigned", trip_id=TRIP, delay_s=60.0, next_stop_id="CHL"),
    )


async def _write(redis_url: str, positions: list[LivePosition], updates: list[EtaUpdate]) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await LiveState(client).update(positions, now_ms=NOW_MS)
        await EtaBoards(client).publish(updates, now_ms=NOW_MS)
    finally:
        await client.aclose()


@pytest.fixture
def operator_id(feed_operator: str, redis_url: str) -> str:
    """The demo feed's operator with two buses on the trip and one elsewhere, written to Redis."""
    first = _etas(feed_operator, "b1", "20261201", [_stop(3, "CHL", 10), _stop(4, "REL", 50)])
    second = _etas(feed_operator, "b2", "20261130", [_stop(4, "REL", 5), _stop(5, "ORN", 90)])
    positions = [
        _position(feed_operator, "b1", 36.20, 1.80),  # near Chlef
        _position(feed_operator, "b2", 35.74, 0.56),  # near Relizane
        _position(feed_operator, "b3", 36.21, 1.81),  # about 1.4 km from b1
    ]
    asyncio.run(_write(redis_url, positions, [EtaUpdate(first), EtaUpdate(second)]))
    return feed_operator


def test_a_trip_answers_every_upcoming_stop_of_each_running_instance(
    client: Client,
    operator_id: str,
) -> None:
    answer = client.get(f"/v1/operators/{operator_id}/trips/{TRIP}/etas")
    assert answer.status_code == 200
    body = answer.json()
    assert body["trip_id"] == TRIP
    by_bus = {i["bus"]: [s["stop_id"] for s in i["stops"]] for i in body["instances"]}
    assert by_bus == {"b1": ["CHL", "REL"], "b2": ["REL", "ORN"]}
    chl = body["instances"][[i["bus"] for i in body["instances"]].index("b1")]["stops"][0]
    assert chl["arrival_early_ms"] < chl["arrival_ms"] < chl["arrival_late_ms"]


def test_a_trip_stop_eta_gives_each_instance_still_coming_to_it(
    client: Client,
    operator_id: str,
) -> None:
    rel = client.get(f"/v1/operators/{operator_id}/trips/{TRIP}/stops/REL/eta").json()
    assert sorted((e["bus"], e["eta"]["stop_sequence"]) for e in rel["etas"]) == [("b1", 4), ("b2", 4)]
    passed = client.get(f"/v1/operators/{operator_id}/trips/{TRIP}/stops/BLI/eta")
    assert passed.status_code == 200
    assert passed.json()["etas"] == []


def test_a_stop_board_lists_the_next_arrivals_soonest_first(
    client: Client,
    operator_id: str,
) -> None:
    board = client.get(f"/v1/operators/{operator_id}/stops/REL/arrivals").json()
    lines = [(a["bus"], a["start_date"]) for a in board["arrivals"]]
    assert lines == [("b2", "20261130"), ("b1", "20261201")]
    one = client.get(f"/v1/operators/{operator_id}/stops/REL/arrivals", params={"limit": 1}).json()
    assert [a["bus"] for a in one["arrivals"]] == ["b2"]
    quiet = client.get(f"/v1/operators/{operator_id}/stops/ALG-CAR/arrivals")
    assert quiet.status_code == 200
    assert quiet.json()["arrivals"] == []


def test_a_bus_answers_its_live_state_with_its_calculated_block(
    client: Client,
    operator_id: str,
) -> None:
    bus = client.get(f"/v1/operators/{operator_id}/buses/b1").json()
    assert (bus["lat"], bus["lon"], bus["device"]) == (36.20, 1.80, "dev-b1")
    assert bus["calculated"]["state"] == "assigned"
    assert bus["calculated"]["next_stop_id"] == "CHL"


def test_buses_near_a_point_come_nearest_first_within_the_radius(
    client: Client,
    operator_id: str,
) -> None:
    url = f"/v1/operators/{operator_id}/buses"
    near = client.get(url, params={"near": "36.2001,1.8001", "radius_m": 5_000}).json()
    assert [b["position"]["bus"] for b in near["buses"]] == ["b1", "b3"]
    assert near["buses"][0]["distance_m"] < 50 < 1_000 < near["buses"][1]["distance_m"] < 2_000
    tight = client.get(url, params={"near": "36.2001,1.8001", "radius_m": 100}).json()
    assert [b["position"]["bus"] for b in tight["buses"]] == ["b1"]


def test_answers_carry_cache_control_and_an_etag_that_gives_304(
    client: Client,
    operator_id: str,
) -> None:
    url = f"/v1/operators/{operator_id}/trips/{TRIP}/etas"
    first = client.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert len(etag) == 34
    assert first.headers["cache-control"] == "private, max-age=2"
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    other = client.get(url, headers={"If-None-Match": '"0123"'})
    assert other.status_code == 200
    assert other.content == first.content


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/trips/NO-SUCH-TRIP/etas", "trip_not_found"),
        ("/trips/NO-SUCH-TRIP/stops/REL/eta", "trip_not_found"),
        (f"/trips/{TRIP}/stops/NO-SUCH-STOP/eta", "stop_not_found"),
        (f"/trips/{TRIP}/stops/SET/eta", "stop_not_found"),
        ("/stops/NO-SUCH-STOP/arrivals", "stop_not_found"),
        ("/buses/nobody", "bus_not_found"),
    ],
)
def test_unknown_trips_stops_and_buses_answer_404_in_the_error_shape(
    client: Client,
    operator_id: str,
    path: str,
    code: str,
) -> None:
    answer = client.get(f"/v1/operators/{operator_id}{path}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "query",
    [
        {"near": "36.2"},
        {"near": "north,east"},
        {"near": "91,3"},
        {"near": "86,3"},
        {"near": "36,181"},
        {"near": "nan,nan"},
        {"near": "36,3", "radius_m": "0"},
        {"near": "36,3", "radius_m": "1e9"},
        {"near": "36,3", "limit": "many"},
        {},
    ],
)
def test_bad_near_parameters_answer_400_in_the_error_shape(
    client: Client,
    operator_id: str,
    query: dict[str, str],
) -> None:
    answer = client.get(f"/v1/operators/{operator_id}/buses", params=query)
    assert answer.status_code == 400
    assert set(answer.json()["error"]) == {"code", "message"}


def test_ids_with_control_characters_answer_400_not_500(
    client: Client,
    operator_id: str,
) -> None:
    assert client.get(f"/v1/operators/{operator_id}/stops/a%00b/arrivals").status_code == 400
    assert client.get("/v1/operators/-bad-/buses/b1").status_code == 400
