"""The booking API: when a trip reaches its stops, what is coming to a stop, where a bus is.

Every answer is read from Redis as ingest left it (``fleet_store.etas``,
``fleet_store.live``), with a short ``Cache-Control`` and a strong ``ETag``
(:mod:`fleet_serve.caching`); a trip's predictions are held a quarter second
per process (:mod:`fleet_serve.hot`), the hot read. PostgreSQL is asked only when Redis has
nothing, to tell a trip or stop that exists but has no running instance
(200, empty) from one the active feed does not know (404).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, cast

import msgspec
from litestar import Request, Response, get
from litestar.params import QueryParameter

from fleet_schemas.live import LivePosition
from fleet_schemas.trips import StopArrival, StopEta, TripEtas
from fleet_serve.auth import SECURITY, ClaimsDep, require
from fleet_serve.caching import Encoded, cached, encode, respond
from fleet_serve.errors import ApiError, NotFound, error_responses
from fleet_serve.params import BusId, OperatorId, StopId, TripId
from fleet_serve.services import Services, ServicesDep
from fleet_store import gtfs
from fleet_store.live import GEO_MAX_LAT, geo_key

MAX_RADIUS_M = 100_000.0
"""a GEOSEARCH wider than this is a map query, not a booking one"""

_TAGS = ["booking"]
_ERRORS = error_responses(400, 401, 403, 404)


class TripEtasAnswer(msgspec.Struct, frozen=True, kw_only=True):
    operator: str
    trip_id: str
    instances: list[TripEtas]
    """every running instance of the trip, most recently updated first (empty: none running)"""


class InstanceStopEta(msgspec.Struct, frozen=True, kw_only=True):
    """One running instance's prediction at the stop asked for."""

    start_date: str
    start_time: str
    bus: str
    delay_s: float
    updated_ms: int
    eta: StopEta


class StopEtaAnswer(msgspec.Struct, frozen=True, kw_only=True):
    operator: str
    trip_id: str
    stop_id: str
    etas: list[InstanceStopEta]
    """each running instance still coming to the stop (a loop trip may come twice)"""


class BoardAnswer(msgspec.Struct, frozen=True, kw_only=True):
    operator: str
    stop_id: str
    arrivals: list[StopArrival]
    """the next instances coming to the stop, soonest first"""


class NearbyBus(msgspec.Struct, frozen=True, kw_only=True):
    distance_m: float
    position: LivePosition


class NearbyAnswer(msgspec.Struct, frozen=True, kw_only=True):
    operator: str
    lat: float
    lon: float
    radius_m: float
    buses: list[NearbyBus]
    """live buses within the radius, nearest first"""


@get(
    "/v1/operators/{operator:str}/trips/{trip_id:str}/etas", tags=_TAGS, responses=_ERRORS, security=SECURITY
)
async def trip_etas(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    claims: ClaimsDep,
    operator: OperatorId,
    trip_id: TripId,
) -> Response[TripEtasAnswer]:
    """Every upcoming stop of each running instance of a trip: ETA, p10 and p90 of the arrival."""
    require(claims, "booking", "passenger", operator=operator, trip_id=trip_id)
    answer = await services.answers.get(
        ("trip-etas", operator, trip_id), lambda: _trip_etas_answer(services, operator, trip_id)
    )
    return cast("Response[TripEtasAnswer]", respond(request, answer))


@get(
    "/v1/operators/{operator:str}/trips/{trip_id:str}/stops/{stop_id:str}/eta",
    tags=_TAGS,
    responses=_ERRORS,
    security=SECURITY,
)
async def trip_stop_eta(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    claims: ClaimsDep,
    operator: OperatorId,
    trip_id: TripId,
    stop_id: StopId,
) -> Response[StopEtaAnswer]:
    """When each running instance of a trip reaches one of its stops (empty: none is still coming)."""
    require(claims, "booking", "passenger", operator=operator, trip_id=trip_id)
    etas = [
        InstanceStopEta(
            start_date=instance.start_date,
            start_time=instance.start_time,
            bus=instance.bus,
            delay_s=instance.delay_s,
            updated_ms=instance.updated_ms,
            eta=stop,
        )
        for instance in await _trip(services, operator, trip_id)
        for stop in instance.stops
        if stop.stop_id == stop_id
    ]
    if not etas:
        await _known_trip(services, operator, trip_id)
        async with services.pool.acquire() as conn:
            if not await gtfs.has_stop(conn, operator, stop_id, trip_id):
                raise NotFound(f"trip {trip_id!r} does not serve stop {stop_id!r}", code="stop_not_found")
    answer = StopEtaAnswer(operator=operator, trip_id=trip_id, stop_id=stop_id, etas=etas)
    return cached(request, answer)


@get(
    "/v1/operators/{operator:str}/stops/{stop_id:str}/arrivals",
    tags=_TAGS,
    responses=_ERRORS,
    security=SECURITY,
)
async def stop_arrivals(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    claims: ClaimsDep,
    operator: OperatorId,
    stop_id: StopId,
    limit: Annotated[int, QueryParameter(ge=1, le=100, description="at most this many arrivals")] = 20,
) -> Response[BoardAnswer]:
    """The arrivals board of a stop: the next buses coming, with their ETA and its p10/p90."""
    require(claims, "booking", operator=operator)
    arrivals = await services.boards.board(operator, stop_id, limit)
    if not arrivals:
        async with services.pool.acquire() as conn:
            if not await gtfs.has_stop(conn, operator, stop_id):
                raise NotFound(f"no stop {stop_id!r} in {operator!r}'s active feed", code="stop_not_found")
    return cached(request, BoardAnswer(operator=operator, stop_id=stop_id, arrivals=arrivals))


@get("/v1/operators/{operator:str}/buses/{bus:str}", tags=_TAGS, responses=_ERRORS, security=SECURITY)
async def bus_state(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    claims: ClaimsDep,
    operator: OperatorId,
    bus: BusId,
) -> Response[LivePosition]:
    """A bus's live position and its ``calculated`` block (trip, progress, delay, next stop).

    A passenger reads it with a token for this bus, or for the trip the bus is driving now.
    """
    position = await services.live.position(operator, bus)
    driving = position.calculated.trip_id if position is not None and position.calculated else None
    require(claims, "booking", "passenger", operator=operator, bus=bus, trip_id=driving)
    if position is None:
        raise NotFound(f"bus {bus!r} of {operator!r} has no live position", code="bus_not_found")
    return cached(request, position)


@get("/v1/operators/{operator:str}/buses", tags=_TAGS, responses=_ERRORS, security=SECURITY)
async def buses_near(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    claims: ClaimsDep,
    operator: OperatorId,
    near: Annotated[str, QueryParameter(description="the point, as lat,lon in degrees (WGS84)")],
    radius_m: Annotated[
        float, QueryParameter(gt=0, le=MAX_RADIUS_M, description="search radius, m")
    ] = 1_000.0,
    limit: Annotated[int, QueryParameter(ge=1, le=500, description="at most this many buses")] = 50,
) -> Response[NearbyAnswer]:
    """Live buses within ``radius_m`` of a point, nearest first (Redis GEOSEARCH)."""
    require(claims, "booking", operator=operator)
    lat, lon = parse_point(near)
    buses = await _nearby(services, operator, lat, lon, radius_m, limit)
    answer = NearbyAnswer(operator=operator, lat=lat, lon=lon, radius_m=radius_m, buses=buses)
    return cached(request, answer)


def parse_point(text: str) -> tuple[float, float]:
    """``lat,lon`` in degrees, within what a Redis GEO set holds; ApiError ``invalid_near`` otherwise."""
    parts = text.split(",")
    try:
        lat, lon = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        lat = lon = math.nan
    if not (abs(lat) <= GEO_MAX_LAT and abs(lon) <= 180.0):
        raise ApiError(
            f"near={text!r}: expected lat,lon in degrees, |lat| <= {GEO_MAX_LAT}, |lon| <= 180",
            code="invalid_near",
        )
    return lat, lon


async def _nearby(
    services: Services, operator: str, lat: float, lon: float, radius_m: float, limit: int
) -> list[NearbyBus]:
    found: list[tuple[bytes, float]] = await services.redis.geosearch(  # type: ignore[assignment]
        geo_key(operator),
        longitude=lon,
        latitude=lat,
        radius=radius_m,
        unit="m",
        sort="ASC",
        count=limit,
        withdist=True,
    )
    names = [(operator, name.decode()) for name, _ in found]
    states = await services.live.states(names)
    return [
        NearbyBus(distance_m=float(distance), position=state)
        for (_, distance), state in zip(found, states, strict=True)
        if state is not None  # its hash expired; the GEO set is pruned of it later
    ]


async def _trip(services: Services, operator: str, trip_id: str) -> list[TripEtas]:
    return await services.trips.get((operator, trip_id), lambda: services.boards.trip(operator, trip_id))


async def _trip_etas_answer(services: Services, operator: str, trip_id: str) -> Encoded:
    """The hottest answer, held encoded for a quarter second (all riders of a coach ask it)."""
    instances = await _trip(services, operator, trip_id)
    if not instances:
        await _known_trip(services, operator, trip_id)
    return encode(TripEtasAnswer(operator=operator, trip_id=trip_id, instances=instances))


async def _known_trip(services: Services, operator: str, trip_id: str) -> None:
    async with services.pool.acquire() as conn:
        if not await gtfs.has_trip(conn, operator, trip_id):
            raise NotFound(f"no trip {trip_id!r} in {operator!r}'s active feed", code="trip_not_found")


ROUTES = [trip_etas, trip_stop_eta, stop_arrivals, bus_state, buses_near]
