"""``fleet tokens issue`` and ``revoke`` against the real Redis and PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from litestar import get
from litestar.testing import TestClient

from fleet_cli.cli import main
from fleet_serve.app import create_app
from fleet_serve.auth import ClaimsDep, decode_token
from fleet_serve.settings import ServeSettings, TokenKey
from fleet_store.settings import ServiceUrls
from fleet_testing.ingest import fleet_env

pytestmark = pytest.mark.stack

KEY = TokenKey("k2026", b"k" * 32)
SETTINGS = ServeSettings(token_keys=(KEY,), issuer="fleet")


Fleet = Callable[..., Result]


@pytest.fixture
def fleet(stack_urls: ServiceUrls, database_url: str, redis_url: str, tmp_path: Path) -> Fleet:
    """``fleet ARGS…`` on the test database and Redis, with the test's signing key."""
    env = fleet_env(stack_urls, database_url, tmp_path / "broker")
    env |= {
        "FLEET_REDIS_URL": redis_url,
        "FLEET_TOKEN_KEYS": f"{KEY.kid}={base64.b64encode(KEY.secret).decode()}",
    }

    def run(*args: str) -> Result:
        return CliRunner(env=env).invoke(main, list(args))

    return run


@get("/test/whoami", sync_to_thread=False)
def _whoami(claims: ClaimsDep) -> dict[str, str]:
    return {"sub": claims.sub}


def test_an_issued_token_verifies_and_a_revoked_one_is_refused_by_serve(
    fleet: Fleet, database_url: str, redis_url: str
) -> None:
    issued = fleet(
        "tokens",
        "issue",
        "--role",
        "manager",
        "--operator",
        "sogral",
        "--operator",
        "tahkout",
        "--ttl",
        "12h",
    )
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip()
    claims = decode_token(SETTINGS, token)
    assert (claims.role, claims.operators, claims.sub) == ("manager", ("sogral", "tahkout"), "manager@sogral")
    assert claims.exp - claims.iat == 12 * 3600
    assert f"jti {claims.jti}" in issued.stderr
    with TestClient(create_app(SETTINGS, redis_url, database_url, routes=[_whoami])) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/test/whoami", headers=headers).json() == {"sub": "manager@sogral"}
        revoked = fleet("tokens", "revoke", "--token", token)
        assert revoked.exit_code == 0, revoked.output
        assert token not in revoked.output
        assert client.get("/test/whoami", headers=headers).json()["error"]["code"] == "token_revoked"
    again = fleet("tokens", "revoke", claims.jti)
    assert again.exit_code == 0, again.output
    assert "was revoked already" in again.output


def test_an_older_jti_that_starts_with_a_dash_is_revoked_after_a_double_dash(fleet: Fleet) -> None:
    """Before jtis were hex, one in 64 began with '-' (urlsafe base64): the help says how to revoke it."""
    revoked = fleet("tokens", "revoke", "--", "-lq2-7wJ0kYh9VhXb4Zr1Tg")
    assert revoked.exit_code == 0, revoked.output


def test_issue_as_json_gives_the_token_its_jti_and_expiry(fleet: Fleet) -> None:
    issued = fleet(
        "tokens",
        "issue",
        "--role",
        "passenger",
        "--operator",
        "sogral",
        "--bus",
        "bus-7",
        "--ttl",
        "6h",
        "--json",
    )
    assert issued.exit_code == 0, issued.output
    body: dict[str, Any] = json.loads(issued.stdout)
    claims = decode_token(SETTINGS, body["token"])
    assert body["jti"] == claims.jti
    assert body["expires_at_ms"] == claims.exp * 1000
    assert (body["role"], body["bus"], body["trip_id"]) == ("passenger", "bus-7", None)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--role", "passenger", "--operator", "sogral", "--ttl", "1h"], "one trip_id or one bus"),
        (["--role", "passenger", "--operator", "sogral", "--bus", "b", "--ttl", "25h"], "86400"),
        (
            ["--role", "passenger", "--operator", "sogral", "--bus", "b", "--trip", "t", "--ttl", "1h"],
            "not both",
        ),
        (["--role", "booking", "--operator", "sogral", "--trip", "t", "--ttl", "1h"], "for passenger tokens"),
        (["--role", "manager", "--operator", "sog ral", "--ttl", "1h"], "operator"),
        (["--role", "manager", "--operator", "sogral", "--ttl", "soon"], "not a duration"),
    ],
)
def test_issue_refuses_a_token_outside_the_rules(fleet: Fleet, args: list[str], why: str) -> None:
    refused = fleet("tokens", "issue", *args)
    assert refused.exit_code != 0
    assert why in refused.output


def test_revoke_refuses_a_token_it_cannot_verify_without_echoing_it(fleet: Fleet) -> None:
    forged = "eyJhbGciOiJIUzI1NiIsImtpZCI6Im90aGVyIn0.eyJqdGkiOiJ4In0.c2lnbmF0dXJl"
    refused = fleet("tokens", "revoke", "--token", forged)
    assert refused.exit_code == 2
    assert "key id is not known" in refused.output
    assert forged not in refused.output
    neither = fleet("tokens", "revoke")
    assert neither.exit_code == 2
