"""The ASGI application: every router of ``fleet serve`` on one Litestar app.

Routers live one per module (``health``, and the API, feed and websocket
modules as they land), each exporting ``ROUTES``; this module only
assembles them, gives handlers the process's :class:`Services`, answers
errors in one shape and serves the OpenAPI document at ``/v1/openapi.json``.

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

from fleet_serve import analyst, booking, gtfsrt, health, live, passenger_tokens
from fleet_serve.auth import SECURITY_SCHEME, request_claims
from fleet_serve.errors import EXCEPTION_HANDLERS
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


ROUTERS: list[Any] = [
    openapi_document,
    *health.ROUTES,
    *passenger_tokens.ROUTES,
    *booking.ROUTES,
    *analyst.ROUTES,
    *gtfsrt.ROUTES,
    *live.ROUTES,
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
