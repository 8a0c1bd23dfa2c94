"""Who reads what on the booking and analyst API: the roles of the auth contract, over real HTTP handlers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from litestar import Litestar
from litestar.testing import TestClient

pytestmark = pytest.mark.stack

Client = TestClient[Litestar]

TRIP = "ALG-ORN-out-0600"
BOOKING = [
    f"/trips/{TRIP}/etas",
    f"/trips/{TRIP}/stops/REL/eta",
    "/stops/REL/arrivals",
    "/buses/b1",
    "/buses?near=36.2,1.8",
]
ANALYST = [
    "/buses/b1/track?from=1795478400000&to=1795482000000",
    "/events",
    "/distance?day=2026-11-24",
    "/travel-times?from_stop=ALG-CAR&to_stop=BLI",
]


@pytest.mark.parametrize("path", BOOKING + ANALYST)
def test_every_endpoint_refuses_a_request_without_a_token_with_401(
    client: Client, feed_operator: str, path: str
) -> None:
    answer = client.get(f"/v1/operators/{feed_operator}{path}")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "token_missing"


@pytest.mark.parametrize("path", BOOKING + ANALYST)
def test_a_wrongly_signed_token_is_refused_with_401(client: Client, feed_operator: str, path: str) -> None:
    answer = client.get(f"/v1/operators/{feed_operator}{path}", headers={"Authorization": "Bearer a.b.c"})
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("path", "role"), [(p, "analyst") for p in BOOKING] + [(p, "booking") for p in ANALYST]
)
def test_the_wrong_role_is_refused_with_403(
    client: Client, feed_operator: str, token_for: Callable[..., str], path: str, role: str
) -> None:
    headers = {"Authorization": "Bearer " + token_for(role, feed_operator)}
    answer = client.get(f"/v1/operators/{feed_operator}{path}", headers=headers)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "wrong_role"


@pytest.mark.parametrize(
    ("path", "role"), [(p, "booking") for p in BOOKING] + [(p, "analyst") for p in ANALYST]
)
def test_a_token_of_another_operator_is_refused_with_403(
    client: Client, feed_operator: str, token_for: Callable[..., str], path: str, role: str
) -> None:
    headers = {"Authorization": "Bearer " + token_for(role, "someone-else")}
    answer = client.get(f"/v1/operators/{feed_operator}{path}", headers=headers)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "other_operator"


@pytest.mark.parametrize("path", BOOKING + ANALYST)
def test_a_manager_reads_everything_of_its_operator(
    client: Client, feed_operator: str, token_for: Callable[..., str], path: str
) -> None:
    headers = {"Authorization": "Bearer " + token_for("manager", feed_operator)}
    answer = client.get(f"/v1/operators/{feed_operator}{path}", headers=headers)
    assert answer.status_code in (200, 404)  # b1 has no live position here: 404, past the token check
    assert answer.json().get("error", {}).get("code") in (None, "bus_not_found")


def test_a_passenger_reads_its_trip_and_nothing_else(
    client: Client, feed_operator: str, token_for: Callable[..., str]
) -> None:
    url = f"/v1/operators/{feed_operator}"
    own = {"Authorization": "Bearer " + token_for("passenger", feed_operator, trip_id=TRIP)}
    assert client.get(f"{url}/trips/{TRIP}/etas", headers=own).status_code == 200
    assert client.get(f"{url}/trips/{TRIP}/stops/REL/eta", headers=own).status_code == 200
    for path in ["/trips/ALG-ORN-out-0930/etas", "/stops/REL/arrivals", "/buses?near=36.2,1.8", "/events"]:
        answer = client.get(url + path, headers=own)
        assert answer.status_code == 403, path
    bus = {"Authorization": "Bearer " + token_for("passenger", feed_operator, bus="b1")}
    assert client.get(f"{url}/buses/b1", headers=bus).json()["error"]["code"] == "bus_not_found"
    assert client.get(f"{url}/buses/b2", headers=bus).status_code == 403
