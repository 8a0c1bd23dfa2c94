"""``/gtfs-rt/{operator}/vehicle-positions`` and ``/trip-updates``: the live state as GTFS-realtime.

Each request reads the operator's live buses and their trips' predictions
from Redis and builds the feed (:mod:`fleet_serve.gtfsrt_build`), so every
node answers the same bytes for the same state. The ids the feeds must agree
with (trips and their routes, stops) are read from PostgreSQL once per static
feed version and kept per process: the active version is looked up on every
request, one indexed query, so an import shows at the next fetch.

Who may fetch: transit apps fetch GTFS-realtime openly, without a token, so
an operator listed in ``FLEET_SERVE_PUBLIC_FEEDS`` (or ``*``) publishes its
feeds to anyone; any other operator's feeds need a ``booking`` (or
``manager``) token covering it, as its positions and ETAs do on ``/v1``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from google.transit import gtfs_realtime_pb2 as rt
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
)
from litestar.params import QueryParameter
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from fleet_schemas.live import LivePosition
from fleet_schemas.trips import TripEtas
from fleet_serve import gtfsrt_build
from fleet_serve.auth import SECURITY, bearer_token, require, verify_token
from fleet_serve.caching import etag_of, matches
from fleet_serve.errors import NotFound, error_responses
from fleet_serve.gtfsrt_build import StaticIds
from fleet_serve.params import OperatorId
from fleet_serve.services import Services, ServicesDep
from fleet_store import gtfs

PROTOBUF = "application/x-protobuf"
MAX_AGE_S = 5
"""how long a client or proxy may reuse an answer (ingest writes about once a second)"""
CACHED_VERSIONS = 16
"""static feed versions whose ids a process keeps (a few per operator across an import)"""

Format = Annotated[
    Literal["protobuf", "json"],
    QueryParameter(name="format", description="`json` for people debugging (protobuf's JSON mapping)"),
]
_RESPONSES = {
    200: ResponseSpec(bytes, generate_examples=False, media_type=PROTOBUF, description="a FeedMessage"),
    **error_responses(400, 401, 403, 404),
}


@dataclass
class _FeedOperation(Operation):
    """Documents the 200 as binary protobuf and its second form, ``?format=json`` (a ResponseSpec has one
    media type)."""

    def __post_init__(self) -> None:
        answer = (self.responses or {}).get("200")
        if isinstance(answer, OpenAPIResponse) and answer.content is not None:
            answer.content[PROTOBUF] = OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
            )
            answer.content["application/json"] = OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.OBJECT, description="the FeedMessage in protobuf's JSON mapping"
                )
            )


_SECURITY = [*SECURITY, {}]
"""a token, or none for an operator whose feeds are public"""

Builder = Callable[[list[LivePosition], list[TripEtas], StaticIds, int], rt.FeedMessage]


_ROUTE: dict[str, Any] = {
    "tags": ["gtfs-realtime"],
    "security": _SECURITY,
    "responses": _RESPONSES,
    "media_type": PROTOBUF,
    "operation_class": _FeedOperation,
}


def _route(kind: str, build: Builder, description: str) -> HTTPRouteHandler:
    """The handler of one feed (both take the same parameters and differ only in the builder)."""

    async def handler(
        request: Request[Any, Any, Any],
        services: ServicesDep,
        state: State,
        operator: OperatorId,
        output: Format = "protobuf",
    ) -> Response[bytes]:
        return await _feed(request, services, state, operator, output, build, kind)

    handler.__name__ = handler.__qualname__ = kind.replace("-", "_")
    return get(f"/gtfs-rt/{{operator:str}}/{kind}", description=description, **_ROUTE)(handler)


def _trip_updates(_: list[LivePosition], etas: list[TripEtas], ids: StaticIds, now_ms: int) -> rt.FeedMessage:
    return gtfsrt_build.trip_updates(etas, ids, now_ms)


vehicle_positions = _route(
    "vehicle-positions",
    gtfsrt_build.vehicle_positions,
    "GTFS-realtime VehiclePositions of the operator's buses heard in the last 65 s.",
)
trip_updates = _route(
    "trip-updates",
    _trip_updates,
    "GTFS-realtime TripUpdates: the upcoming stops, with ETAs and uncertainty, of the trips driven now.",
)


async def _feed(
    request: Request[Any, Any, Any],
    services: Services,
    state: State,
    operator: str,
    output: str,
    build: Builder,
    kind: str,
) -> Response[bytes]:
    public = services.settings.feeds_public(operator)
    if not public:
        require(await verify_token(services, bearer_token(request.scope)), "booking", operator=operator)
    ids = await _static_ids(services, state, operator)
    positions = await services.live.buses(operator)
    trip_ids = [p.calculated.trip_id for p in positions if p.calculated is not None and p.calculated.trip_id]
    etas = await services.boards.trips(operator, trip_ids)
    # in a worker thread: a TripUpdates feed of 2,000 buses takes over 100 ms to build, and the
    # event loop keeps serving the websockets meanwhile (they share the GIL, in slices)
    message = await asyncio.to_thread(build, positions, etas, ids, int(time.time() * 1000))
    digest = gtfsrt_build.content_digest(message)
    candidate_s = int(message.header.timestamp)
    message.header.timestamp = await services.feed_headers.stamp(
        operator, kind, digest, lambda held: gtfsrt_build.stamp(held, digest, candidate_s)
    )
    body, media_type = _encoded(message, output)
    etag = etag_of(body)  # the same on every node for the same state: the header is shared
    headers = {"ETag": etag, "Cache-Control": f"{'public' if public else 'private'}, max-age={MAX_AGE_S}"}
    if matches(request.headers.get("if-none-match"), etag):
        return Response(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers, media_type=media_type)
    return Response(body, media_type=media_type, headers=headers)


def _encoded(message: rt.FeedMessage, output: str) -> tuple[bytes, str]:
    if output == "json":
        return msgspec.json.encode(gtfsrt_build.to_json(message)), "application/json"
    return message.SerializeToString(), PROTOBUF


async def _static_ids(services: Services, state: State, operator: str) -> StaticIds:
    """The active version's ids, from this process's cache once read."""
    cache: OrderedDict[int, StaticIds] = state.setdefault("gtfsrt_ids", OrderedDict())
    async with services.pool.acquire() as conn:
        feed_id = await gtfs.active_feed_id(conn, operator)
        if feed_id is None:
            raise NotFound(f"operator {operator!r} has no active GTFS feed", code="feed_not_found")
        ids = cache.get(feed_id)
        if ids is None:
            routes = await gtfs.trip_routes(conn, feed_id)
            ids = StaticIds(feed_id, routes, await gtfs.stop_ids(conn, feed_id))
    cache[feed_id] = ids
    cache.move_to_end(feed_id)
    while len(cache) > CACHED_VERSIONS:
        cache.popitem(last=False)
    return ids


ROUTES = [vehicle_positions, trip_updates]
