"""Tokens: every refusal of the verifier, and the same over HTTP with the real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import jwt
import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from litestar import WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath, FromQuery
from litestar.testing import TestClient

from fleet_serve.app import create_app
from fleet_serve.auth import (
    LEEWAY_S,
    ROLES,
    Claims,
    ClaimsDep,
    Role,
    decode_token,
    issue_token,
    require,
)
from fleet_serve.errors import Forbidden, Unauthorized
from fleet_serve.settings import ServeSettings, TokenKey
from fleet_store import tokens
from fleet_store.maintain import maintain

OLD = TokenKey("k2025", b"o" * 32)
NEW = TokenKey("k2026", b"n" * 32)
SETTINGS = ServeSettings(token_keys=(NEW, OLD), issuer="fleet-test")


def _forge(payload: dict[str, Any], *, key: TokenKey = NEW, kid: str | None = None) -> str:
    """A token signed by hand, for the claims issue_token would never write."""
    return jwt.encode(payload, key.secret, algorithm="HS256", headers={"kid": kid or key.kid})


def _body(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": "fleet-test",
        "sub": "ops",
        "role": "manager",
        "operators": ["sonelgaz"],
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _code(token: str) -> str:
    with pytest.raises(Unauthorized) as refused:
        decode_token(SETTINGS, token)
    return refused.value.code


def test_an_issued_token_verifies_with_its_claims() -> None:
    token, issued = issue_token(
        SETTINGS, role="booking", operators=("sonelgaz", "tahkout"), ttl_s=60, sub="b"
    )
    claims = decode_token(SETTINGS, token)
    assert claims == issued
    assert claims.kid == NEW.kid
    assert claims.exp - claims.iat == 60


def test_issued_jtis_are_hex_so_a_command_line_never_reads_one_as_an_option() -> None:
    issued = [issue_token(SETTINGS, role="booking", operators=("s",), ttl_s=60, sub="b") for _ in range(200)]
    jtis = {claims.jti for _, claims in issued}
    assert len(jtis) == 200
    assert all(len(jti) == 32 and set(jti) <= set("0123456789abcdef") for jti in jtis)


def test_a_token_signed_by_an_older_key_still_verifies() -> None:
    token = _forge(_body(), key=OLD)
    assert decode_token(SETTINGS, token).kid == OLD.kid


def test_an_expired_token_is_refused_past_the_leeway() -> None:
    now = int(time.time())
    assert _code(_forge(_body(iat=now - 3600, exp=now - LEEWAY_S - 5))) == "token_expired"
    assert decode_token(SETTINGS, _forge(_body(iat=now - 3600, exp=now - 1))).jti == "j1"


def test_a_token_verified_once_is_still_refused_once_it_expires() -> None:
    token, claims = issue_token(SETTINGS, role="booking", operators=("sonelgaz",), ttl_s=60, sub="b")
    assert decode_token(SETTINGS, token) == claims
    assert decode_token(SETTINGS, token, now_s=claims.exp + LEEWAY_S - 1) == claims
    with pytest.raises(Unauthorized) as refused:
        decode_token(SETTINGS, token, now_s=claims.exp + LEEWAY_S)
    assert refused.value.code == "token_expired"


def test_a_token_issued_in_the_future_is_not_valid_yet() -> None:
    now = int(time.time())
    assert _code(_forge(_body(iat=now + 600, exp=now + 1200))) == "token_not_yet_valid"
    assert _code(_forge(_body(nbf=now + 600))) == "token_not_yet_valid"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    assert _code(_forge(_body(), key=TokenKey(NEW.kid, b"x" * 32))) == "token_bad_signature"


def test_a_token_with_an_unknown_key_id_is_refused() -> None:
    assert _code(_forge(_body(), kid="k1999")) == "token_unknown_key"


def test_a_token_whose_header_asks_for_no_signature_is_refused() -> None:
    unsigned = jwt.encode(_body(), key="", algorithm="none", headers={"kid": NEW.kid})
    assert _code(unsigned) == "token_malformed"


def test_a_token_of_another_issuer_is_refused() -> None:
    assert _code(_forge(_body(iss="someone-else"))) == "token_wrong_issuer"


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "jti", "role", "operators"])
def test_a_token_missing_a_required_claim_is_refused(claim: str) -> None:
    assert _code(_forge(_body(**{claim: None}))) == "token_missing_claim"


@pytest.mark.parametrize(
    "changes",
    [
        {"role": "admin"},
        {"operators": []},
        {"operators": "sonelgaz"},
        {"role": "passenger"},
        {"role": "passenger", "trip_id": "t1", "bus": "b1"},
        {"role": "passenger", "trip_id": "t1", "operators": ["a", "b"]},
    ],
)
def test_a_token_with_claims_outside_the_contract_is_refused(changes: dict[str, Any]) -> None:
    assert _code(_forge(_body(**changes))) == "token_invalid_claims"


def test_garbage_is_refused_as_malformed() -> None:
    assert _code("not-a-token") == "token_malformed"


def test_a_passenger_token_needs_a_trip_or_a_bus_and_a_short_life() -> None:
    with pytest.raises(ValueError, match="one trip_id or one bus"):
        issue_token(SETTINGS, role="passenger", operators=("sonelgaz",), ttl_s=60, sub="p")
    with pytest.raises(ValueError, match="86400"):
        issue_token(SETTINGS, role="passenger", operators=("sonelgaz",), ttl_s=86_401, sub="p", bus="b1")


def _claims(role: Role, operators: tuple[str, ...] = ("sonelgaz",), **scope: str) -> Claims:
    return Claims(sub="s", role=role, operators=operators, exp=2, iat=1, jti="j", kid="k", **scope)


def test_a_role_not_among_the_allowed_is_forbidden() -> None:
    with pytest.raises(Forbidden) as refused:
        require(_claims("analyst"), "booking", operator="sonelgaz")
    assert refused.value.code == "wrong_role"
    require(_claims("manager"), "booking", operator="sonelgaz")


def test_a_token_for_another_operator_is_forbidden() -> None:
    with pytest.raises(Forbidden) as refused:
        require(_claims("manager"), "manager", operator="tahkout")
    assert refused.value.code == "other_operator"


def test_a_passenger_reads_only_their_own_trip_or_bus() -> None:
    passenger = _claims("passenger", trip_id="t1")
    require(passenger, "passenger", operator="sonelgaz", trip_id="t1", bus="b9")
    for scope in ({"trip_id": "t2"}, {"bus": "b9"}, {}):
        with pytest.raises(Forbidden) as refused:
            require(passenger, "passenger", operator="sonelgaz", **scope)
        assert refused.value.code == "other_trip"


@given(
    role=st.sampled_from(ROLES),
    allowed=st.sets(st.sampled_from(ROLES)),
    own=st.sets(st.sampled_from("abc"), min_size=1),
    asked=st.sampled_from("abcd"),
)
def test_require_never_reaches_past_the_role_or_the_operators(
    role: Role, allowed: set[Role], own: set[str], asked: str
) -> None:
    scope = {"trip_id": "t"} if role == "passenger" else {}
    claims = _claims(role, tuple(sorted(own))[: 1 if role == "passenger" else None], **scope)
    reaches = (role in allowed or role == "manager") and asked in claims.operators
    try:
        require(claims, *allowed, operator=asked, trip_id="t")
    except Forbidden:
        assert not reaches
    else:
        assert reaches


# over HTTP, against the real stores


@get("/test/secret/{operator:str}", sync_to_thread=False)
def _secret(
    claims: ClaimsDep, operator: FromPath[str], trip_id: FromQuery[str | None] = None
) -> dict[str, str]:
    require(claims, "booking", "passenger", operator=operator, trip_id=trip_id)
    return {"sub": claims.sub}


@pytest.fixture
def client(redis_url: str, database_url: str) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(SETTINGS, redis_url, database_url, routes=[_secret])) as test_client:
        yield test_client


def _get(client: TestClient[Any], token: str | None, path: str = "/test/secret/sonelgaz") -> Any:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return client.get(path, headers=headers)


def _refusal(answer: Any) -> tuple[int, str]:
    assert set(answer.json()) == {"error"}
    return answer.status_code, answer.json()["error"]["code"]


@pytest.mark.stack
def test_http_answers_a_valid_token(client: TestClient[Any]) -> None:
    token, _ = issue_token(SETTINGS, role="booking", operators=("sonelgaz",), ttl_s=60, sub="booker")
    answer = _get(client, token)
    assert answer.status_code == 200
    assert answer.json() == {"sub": "booker"}
    assert client.get(f"/test/secret/sonelgaz?token={token}").status_code == 200


@pytest.mark.stack
def test_http_refuses_a_missing_token_with_401(client: TestClient[Any]) -> None:
    answer = _get(client, None)
    assert _refusal(answer) == (401, "token_missing")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert _refusal(client.get("/test/secret/sonelgaz", headers={"Authorization": "Basic eDp5"})) == (
        401,
        "token_missing",
    )


@pytest.mark.stack
@pytest.mark.parametrize(
    ("token", "code"),
    [
        (_forge(_body(iat=1_000, exp=2_000)), "token_expired"),
        (_forge(_body(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200)), "token_not_yet_valid"),
        (_forge(_body(), key=TokenKey(NEW.kid, b"x" * 32)), "token_bad_signature"),
        (_forge(_body(), kid="k1999"), "token_unknown_key"),
        (_forge(_body(iss="someone-else")), "token_wrong_issuer"),
        (_forge(_body(jti=None)), "token_missing_claim"),
        ("garbage", "token_malformed"),
    ],
)
def test_http_refuses_a_bad_token_with_401(client: TestClient[Any], token: str, code: str) -> None:
    answer = _get(client, token)
    assert _refusal(answer) == (401, code)
    assert token not in answer.text


@pytest.mark.stack
def test_http_refuses_a_revoked_token_on_every_node(redis_url: str, database_url: str) -> None:
    token, claims = issue_token(SETTINGS, role="booking", operators=("sonelgaz",), ttl_s=600, sub="b")
    app_a = create_app(SETTINGS, redis_url, database_url, routes=[_secret])
    app_b = create_app(SETTINGS, redis_url, database_url, routes=[_secret])
    with TestClient(app_a) as node_a, TestClient(app_b) as node_b:
        assert _get(node_b, token).status_code == 200
        node_a.blocking_portal.call(_revoke, node_a, claims)
        for node in (node_a, node_b):  # each learns it from the channel, within milliseconds
            node.blocking_portal.call(_learned, node, claims.jti)
            assert _refusal(_get(node, token)) == (401, "token_revoked")


async def _learned(node: TestClient[Any], jti: str) -> None:
    """Wait (bounded) until the node's watcher holds the revocation."""
    watcher = node.app.state.services.revocations
    for _ in range(3_000):
        if watcher.live and await watcher.is_revoked(jti):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"node never learned of {jti}")


async def _revoke(node: TestClient[Any], claims: Claims) -> None:
    services = node.app.state.services
    assert await tokens.revoke(services.pool, services.redis, claims.jti, claims.exp * 1000)


@pytest.mark.stack
def test_a_revocation_survives_redis_losing_its_copy(client: TestClient[Any], redis_url: str) -> None:
    token, claims = issue_token(SETTINGS, role="booking", operators=("sonelgaz",), ttl_s=600, sub="b")
    client.blocking_portal.call(_revoke, client, claims)
    client.blocking_portal.call(_learned, client, claims.jti)
    client.blocking_portal.call(_flush, redis_url)
    assert _refusal(_get(client, token)) == (401, "token_revoked")
    other, _ = issue_token(SETTINGS, role="booking", operators=("sonelgaz",), ttl_s=600, sub="b")
    assert _get(client, other).status_code == 200


async def _flush(redis_url: str) -> None:
    async with aioredis.Redis.from_url(redis_url) as redis:
        await redis.flushdb()


@pytest.mark.stack
def test_http_refuses_a_wrong_role_another_operator_and_another_trip_with_403(
    client: TestClient[Any],
) -> None:
    analyst, _ = issue_token(SETTINGS, role="analyst", operators=("sonelgaz",), ttl_s=60, sub="a")
    booking, _ = issue_token(SETTINGS, role="booking", operators=("tahkout",), ttl_s=60, sub="b")
    passenger, _ = issue_token(
        SETTINGS, role="passenger", operators=("sonelgaz",), ttl_s=60, sub="p", trip_id="t1"
    )
    assert _refusal(_get(client, analyst)) == (403, "wrong_role")
    assert _refusal(_get(client, booking)) == (403, "other_operator")
    assert _refusal(_get(client, passenger, "/test/secret/sonelgaz?trip_id=t2")) == (403, "other_trip")
    assert _get(client, passenger, "/test/secret/sonelgaz?trip_id=t1").status_code == 200


@pytest.mark.stack
def test_http_answers_503_not_500_when_revocations_cannot_be_read(database_url: str) -> None:
    token, _ = issue_token(SETTINGS, role="booking", operators=("sonelgaz",), ttl_s=60, sub="b")
    with TestClient(create_app(SETTINGS, "redis://127.0.0.1:9", database_url, routes=[_secret])) as client:
        assert _refusal(_get(client, token)) == (503, "auth_unavailable")


async def _rows(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM revoked_tokens")
        return count
    finally:
        await connection.close()


@pytest.mark.stack
def test_maintenance_drops_only_revocations_of_expired_tokens(
    client: TestClient[Any], database_url: str
) -> None:
    live = issue_token(SETTINGS, role="booking", operators=("sonelgaz",), ttl_s=600, sub="b")[1]
    gone = msgspec.structs.replace(live, jti="gone", exp=int(time.time()) - 10)
    client.blocking_portal.call(_revoke, client, live)
    client.blocking_portal.call(_revoke, client, gone)
    assert client.blocking_portal.call(_rows, database_url) == 2
    client.blocking_portal.call(maintain, database_url)
    assert client.blocking_portal.call(_rows, database_url) == 1


@websocket("/test/socket")
async def _socket(socket: WebSocket[Any, Any, Any], claims: ClaimsDep) -> None:
    await socket.accept()
    await socket.send_json({"sub": claims.sub})
    await socket.close()


@pytest.mark.stack
def test_a_websocket_takes_the_same_claims_and_closes_on_a_refused_token_with_4401(
    redis_url: str, database_url: str
) -> None:
    token, claims = issue_token(SETTINGS, role="passenger", operators=("sogral",), ttl_s=60, sub="p", bus="b")
    expired = _forge(_body(iat=1_000, exp=2_000))
    with TestClient(create_app(SETTINGS, redis_url, database_url, routes=[_socket])) as client:
        with client.websocket_connect(f"/test/socket?token={token}") as socket:
            assert socket.receive_json() == {"sub": "p"}
        client.blocking_portal.call(_revoke, client, claims)
        client.blocking_portal.call(_learned, client, claims.jti)
        for refused, code in ((expired, "token_expired"), (token, "token_revoked"), ("", "token_missing")):
            with (
                pytest.raises(WebSocketDisconnect) as closed,
                client.websocket_connect(f"/test/socket?token={refused}") as socket,
            ):
                socket.receive_json()
            assert closed.value.code == 4401
            assert closed.value.detail.startswith(f"{code}: ")
            assert not refused or refused not in closed.value.detail
