"""The OpenAPI document: the committed one is the served one, and the API keeps to it under Schemathesis.

Schemathesis generates requests for every operation from the document and
checks each answer: never a 5xx, and a body that matches the documented
schema of its status. Three kinds of caller: no token, the token
Schemathesis makes up, and a manager token of an operator with the demo
feed imported (the generated operator replaced by it, so the calls reach
past the token check into Redis and PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from fleet_serve.app import openapi_text

Client = TestClient[Litestar]

COMMITTED = Path(__file__).resolve().parents[1] / "openapi.json"
REGENERATE = "uv run fleet serve --openapi serve/openapi.json"
EXAMPLES = 12
"""examples per operation and kind of caller: bounded so the whole run stays well under a minute"""

SCHEMA = schemathesis.openapi.from_dict(json.loads(openapi_text()))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]  # type: ignore[union-attr]
"""(an operation Schemathesis cannot read fails here, at collection)"""
Caller = Literal["no token", "made-up token", "manager"]


def test_the_committed_openapi_document_is_the_served_one() -> None:
    with TestClient(create_unconnected_app()) as client:
        served = client.get("/v1/openapi.json").json()
    committed = json.loads(COMMITTED.read_text())
    assert served == committed, f"serve/openapi.json is out of date: run `{REGENERATE}` and commit it"


def create_unconnected_app() -> Litestar:
    from fleet_serve.app import create_app
    from fleet_serve.settings import ServeSettings

    return create_app(ServeSettings(), "redis://127.0.0.1:9", "postgresql://x@127.0.0.1:9/x")


@pytest.mark.stack
@pytest.mark.parametrize("caller", ["no token", "made-up token", "manager"])
@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_every_operation_answers_within_its_schema_and_never_5xx(
    client: Client,
    feed_operator: str,
    token_for: Callable[..., str],
    operation: Any,
    caller: Caller,
) -> None:
    manager = "Bearer " + token_for("manager", feed_operator)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        if caller == "manager" and "operator" in (case.path_parameters or {}):
            case.path_parameters["operator"] = feed_operator
        request = case.as_transport_kwargs(base_url="http://testserver.local")
        headers = dict(request.pop("headers"))
        if caller == "no token":
            headers.pop("Authorization", None)
        elif caller == "manager":
            headers["Authorization"] = manager
        request.pop("cookies", None)
        response = client.request(headers=headers, **request)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    check()
