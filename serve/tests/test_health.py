"""Liveness and readiness against the real Redis and PostgreSQL, and the one error shape."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from fleet_serve.app import create_app
from fleet_serve.settings import ServeSettings

pytestmark = pytest.mark.stack


def test_a_node_with_its_stores_up_is_ready(redis_url: str, database_url: str) -> None:
    with TestClient(create_app(ServeSettings(), redis_url, database_url)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "redis": "ok", "postgresql": "ok"}


def test_a_node_whose_stores_are_away_is_alive_and_not_ready() -> None:
    unreachable = create_app(ServeSettings(), "redis://127.0.0.1:9", "postgresql://fleet@127.0.0.1:9/fleet")
    with TestClient(unreachable) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "redis": "unreachable", "postgresql": "unreachable"}


def test_an_unknown_path_answers_the_error_shape() -> None:
    with TestClient(
        create_app(ServeSettings(), "redis://127.0.0.1:9", "postgresql://x@127.0.0.1:9/x")
    ) as client:
        answer = client.get("/v1/no-such-thing")
    assert answer.status_code == 404
    assert answer.json() == {"error": {"code": "not_found", "message": "Not Found"}}
