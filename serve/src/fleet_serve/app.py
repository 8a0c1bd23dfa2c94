"""The ASGI application: every router of ``fleet serve`` on one Litestar app.

Routers live one per module (``health``, and the API, feed and websocket
modules as they land), each exporting ``ROUTES``; this module only
assembles them, gives handlers the process's :class:`Services`, answers
errors in one shape and serves the OpenAPI document at ``/v1/openapi.json``
and Prometheus metrics at ``/metrics``: requests by route template (never
the raw path: ids would make the labels unbounded), method and status, their
latency histogram, and the websocket fan-out's own (``fleet_ws_*``).

Litestar over the alternatives: msgspec-native (our records are msgspec
structs, encoded once, no pydantic layer), OpenAPI from the handlers' types,
websockets and a dependency system in the box.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components
from litestar.plugins.prometheus import PrometheusController

from fleet_serve import analyst, booking, gtfsrt, health, live, passenger_tokens
from fleet_serve.auth import SECURITY_SCHEME, request_claims
from fleet_serve.errors import EXCEPTION_HANDLERS
from fleet_serve.http_metrics import RequestMetrics
from fleet_serve.map import layers as map_layers
from fleet_serve.map import page as map_page
from fleet_serve.services import Services, close_services, open_services
from fleet_serve.settings import ServeSettings

API_VERSION = "1.0.0"
OPENAPI_DIR = "/v1/schema"
"""Litestar serves the document under this folder; ``/v1/openapi.json`` answers the same document"""


@get("/v1/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_document(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The OpenAPI document (committed as ``serve/openapi.json``; a test compares)."""
    document: dict[str, Any] = request.app.openapi_schema.to_schema()
    return document


class Metrics(PrometheusController):
    """``/metrics`` in Prometheus' text format, outside the OpenAPI document."""

    include_in_schema = False


LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

ROUTERS: list[Any] = [
    openapi_document,
    Metrics,
    *health.ROUTES,
    *passenger_tokens.ROUTES,
    *booking.ROUTES,
    *analyst.ROUTES,
    *gtfsrt.ROUTES,
    *live.ROUTES,
    *map_layers.ROUTES,
    *map_page.ROUTES,
]
"""every module's ``ROUTES``: one line per module"""


def create_app(
    settings: ServeSettings, redis_url: str, database_url: str, routes: Sequence[Any] = ()
) -> Litestar:
    """The app; its connections open with its lifespan; ``routes`` adds routers (the modules' ``ROUTES``)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.services = await open_services(settings, redis_url, database_url)
        try:
            yield
        finally:
            await close_services(app.state.services)

    return Litestar(
        route_handlers=[*ROUTERS, *routes],
        dependencies={
            "services": Provide(_services, sync_to_thread=False),
            "claims": Provide(request_claims),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="fleet",
            version=API_VERSION,
            path=OPENAPI_DIR,
            render_plugins=[JsonRenderPlugin(path="/openapi.json")],
            components=Components(security_schemes={"bearer": SECURITY_SCHEME}),
        ),
        lifespan=[lifespan],
        middleware=[
            RequestMetrics(
                app_name="fleet_serve",
                prefix="fleet_serve",
                buckets=LATENCY_BUCKETS_S,
                exclude=("^/metrics$",),
            )
        ],
    )


def _services(state: State) -> Services:
    services: Services = state.services
    return services


def openapi_text() -> str:
    """The OpenAPI document as committed in ``serve/openapi.json`` (keys sorted, so diffs stay small).

    Built without connecting anywhere: the document depends on the routes alone.
    """
    document = create_app(ServeSettings(), "redis://unused", "postgresql://unused").openapi_schema.to_schema()
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
