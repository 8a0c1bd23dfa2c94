"""What the serve tests share: an operator with the demo feed, and a serve app over the test stores."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from litestar import Litestar
from litestar.testing import TestClient

from fleet_cli.cli import main
from fleet_devtools.demo_feed import feed_dir
from fleet_serve.app import create_app
from fleet_serve.auth import Role, issue_token
from fleet_serve.settings import ServeSettings, TokenKey

Client = TestClient[Litestar]
"""(each test module names it too: with importlib imports, tests cannot import conftest)"""


@pytest.fixture
def feed_operator(database_url: str, operator_id: str) -> str:
    """An operator whose active feed is the demo feed, imported with ``fleet gtfs import``."""
    imported = CliRunner().invoke(
        main,
        ["gtfs", "import", str(feed_dir()), "--operator", operator_id],
        env={"FLEET_DATABASE_URL": database_url},
    )
    assert imported.exit_code == 0, imported.output
    return operator_id


SETTINGS = ServeSettings(token_keys=(TokenKey("test", b"t" * 32),), issuer="fleet-test")

IssueToken = Callable[..., str]


@pytest.fixture
def serve_settings() -> ServeSettings:
    """The settings :func:`token_for` signs for, for tests that build their own app or tokens."""
    return SETTINGS


@pytest.fixture
def token_for() -> IssueToken:
    """Sign a token with the test key: ``token_for("booking", "op", trip_id=…)``."""

    def issue(role: Role, *operators: str, trip_id: str | None = None, bus: str | None = None) -> str:
        token, _ = issue_token(
            SETTINGS, role=role, operators=operators, ttl_s=600, sub="test", trip_id=trip_id, bus=bus
        )
        return token

    return issue


@pytest.fixture
def client(redis_url: str, database_url: str) -> Iterator[Client]:
    """A serve app over the test Redis and PostgreSQL, verifying tokens of :func:`token_for`."""
    with TestClient(create_app(SETTINGS, redis_url, database_url)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def map_bundle() -> Path:
    """The live map's bundle as ``make bundle`` builds it (nothing to do when it is up to date)."""
    subprocess.run(["make", "-s", "bundle"], cwd=Path(__file__).resolve().parents[2], check=True)
    return Path(__file__).resolve().parents[1] / "src" / "fleet_serve" / "map" / "static"
