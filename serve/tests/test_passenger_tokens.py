"""POST /v1/passenger-tokens with the real Redis and PostgreSQL: who may ask, what the token reaches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from fleet_serve.app import create_app
from fleet_serve.auth import Role, decode_token, issue_token, require
from fleet_serve.errors import Forbidden
from fleet_serve.settings import ServeSettings, TokenKey

pytestmark = pytest.mark.stack

SETTINGS = ServeSettings(token_keys=(TokenKey("k1", b"s" * 32),), issuer="fleet-test")


@pytest.fixture
def client(redis_url: str, database_url: str) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(SETTINGS, redis_url, database_url)) as test_client:
        yield test_client


def _ask(
    client: TestClient[Any], body: dict[str, Any], role: Role = "booking", trip_id: str | None = None
) -> Any:
    token, _ = issue_token(
        SETTINGS, role=role, operators=("sogral",), ttl_s=600, sub="booking-site", trip_id=trip_id
    )
    return client.post("/v1/passenger-tokens", json=body, headers={"Authorization": f"Bearer {token}"})


def test_a_booking_token_gets_a_passenger_token_for_one_trip(client: TestClient[Any]) -> None:
    answer = _ask(client, {"operator": "sogral", "trip_id": "T42", "ttl_s": 3600})
    assert answer.status_code == 201
    body = answer.json()
    claims = decode_token(SETTINGS, body["token"])
    assert (claims.role, claims.operators, claims.trip_id, claims.bus) == (
        "passenger",
        ("sogral",),
        "T42",
        None,
    )
    assert claims.exp - claims.iat == 3600
    assert body["jti"] == claims.jti
    assert body["expires_at_ms"] == claims.exp * 1000
    assert claims.sub.startswith("booking-site via ")
    require(claims, "passenger", operator="sogral", trip_id="T42")
    with pytest.raises(Forbidden):
        require(claims, "passenger", operator="sogral", trip_id="T43")


def test_a_passenger_token_for_one_bus(client: TestClient[Any]) -> None:
    answer = _ask(client, {"operator": "sogral", "bus": "bus-7", "ttl_s": 60})
    assert answer.status_code == 201
    assert decode_token(SETTINGS, answer.json()["token"]).bus == "bus-7"


def test_only_booking_and_managers_of_the_operator_may_ask(client: TestClient[Any]) -> None:
    body = {"operator": "sogral", "trip_id": "T42", "ttl_s": 60}
    assert _ask(client, body, role="manager").status_code == 201
    assert _ask(client, body, role="analyst").json()["error"]["code"] == "wrong_role"
    passenger = _ask(client, body, role="passenger", trip_id="T42")
    assert (passenger.status_code, passenger.json()["error"]["code"]) == (403, "wrong_role")
    other = _ask(client, {**body, "operator": "tahkout"})
    assert (other.status_code, other.json()["error"]["code"]) == (403, "other_operator")
    anonymous = client.post("/v1/passenger-tokens", json=body)
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "token_missing")


@pytest.mark.parametrize(
    "body",
    [
        {"operator": "sogral", "ttl_s": 60},
        {"operator": "sogral", "trip_id": "T42", "bus": "bus-7", "ttl_s": 60},
        {"operator": "sogral", "trip_id": "T42", "ttl_s": 86_401},
        {"operator": "sogral", "trip_id": "T42", "ttl_s": 0},
        {"operator": "", "trip_id": "T42", "ttl_s": 60},
        {"operator": "sogral", "trip_id": "T42", "ttl_s": 60, "role": "manager"},
        {"operator": "sogral", "trip_id": "T42"},
    ],
)
def test_a_request_outside_the_contract_is_a_400(client: TestClient[Any], body: dict[str, Any]) -> None:
    answer = _ask(client, body)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_request"


def test_the_openapi_document_says_the_route_takes_a_bearer_token(client: TestClient[Any]) -> None:
    document = client.get("/v1/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/v1/passenger-tokens"]["post"]["security"] == [{"bearer": []}]
