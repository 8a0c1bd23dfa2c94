"""The analyst API: history out of PostgreSQL, tracks, events, distances and the travel times ETAs learn from.

A track comes as a GeoJSON ``Feature`` (its ``LineString`` and the fix
times alongside, RFC 7946 has no place for them in the geometry) or as CSV
streamed from a server-side cursor, so a day of 1 Hz fixes never sits in
memory. Events are paged newest first by an opaque cursor: the key of the
last event served (base64url JSON), so a page never repeats or skips an
event while new ones arrive.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated, Any, Literal, cast

import msgspec
from litestar import Request, Response, get
from litestar.params import QueryParameter
from litestar.response import Stream

from fleet_schemas.events import Event, EventKind
from fleet_schemas.frames import EARLIEST_FIX_MS, LATEST_FIX_MS, TEXT_PATTERN
from fleet_serve.auth import SECURITY, ClaimsDep, require
from fleet_serve.caching import HISTORY_MAX_AGE_S, cached
from fleet_serve.errors import ApiError, NotFound, error_responses
from fleet_serve.params import BusFilter, BusId, OperatorId, RouteFilter, StopQuery
from fleet_serve.services import Services, ServicesDep
from fleet_store import gtfs
from fleet_store.events import EventKey, read_events
from fleet_store.history import SegmentTime, segment_times_between
from fleet_store.tracks import BusDistance, TrackPoint, distance_per_bus, track, track_rows

MAX_TRACK_MS = 2 * 86_400_000
"""a track covers at most two days (a day of 1 Hz fixes is 86,400 rows)"""
CSV_CHUNK_ROWS = 500
"""rows per chunk written to the socket while streaming CSV"""
CSV_HEADER = "time_ms,lat,lon,speed_mps,heading_deg\n"

_TAGS = ["analyst"]
_ERRORS = error_responses(400, 401, 403, 404)


class LineString(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["LineString"] = "LineString"
    coordinates: list[tuple[float, float]]
    """[lon, lat] in degrees (WGS84), oldest first"""


class TrackProperties(msgspec.Struct, frozen=True, kw_only=True):
    operator: str
    bus: str
    from_ms: int
    to_ms: int
    times_ms: list[int]
    """the fix time of each coordinate"""
    speeds_mps: list[float | None]


class TrackFeature(msgspec.Struct, frozen=True, kw_only=True):
    """A bus's track; ``geometry`` is null below two fixes (a LineString needs two positions)."""

    type: Literal["Feature"] = "Feature"
    geometry: LineString | None
    properties: TrackProperties


class EventsPage(msgspec.Struct, frozen=True, kw_only=True):
    events: list[Event]
    """newest first"""
    next_cursor: str | None
    """pass as ``cursor`` for the next page; null on the last page"""


class DistanceDay(msgspec.Struct, frozen=True, kw_only=True):
    operator: str
    day: date
    buses: list[BusDistance]


class TravelTimes(msgspec.Struct, frozen=True, kw_only=True):
    operator: str
    from_stop_id: str
    to_stop_id: str
    hours: list[SegmentTime]
    """the hours of week (0: Monday 00:00 UTC) with observations, in order"""


@get("/v1/operators/{operator:str}/buses/{bus:str}/track", tags=_TAGS, responses=_ERRORS, security=SECURITY)
async def bus_track(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    claims: ClaimsDep,
    operator: OperatorId,
    bus: BusId,
    from_ms: Annotated[int, QueryParameter(name="from", ge=EARLIEST_FIX_MS, le=LATEST_FIX_MS)],
    to_ms: Annotated[int, QueryParameter(name="to", ge=EARLIEST_FIX_MS, le=LATEST_FIX_MS)],
    format: Annotated[Literal["geojson", "csv"], QueryParameter(description="geojson or csv")] = "geojson",
) -> Response[TrackFeature]:
    """A bus's fixes from ``from`` to ``to`` (epoch ms, at most two days): GeoJSON, or CSV streamed.

    ``format=csv`` answers ``text/csv``, a header ``time_ms,lat,lon,speed_mps,heading_deg`` and one
    row per fix, oldest first, streamed as they are read.
    """
    require(claims, "analyst", operator=operator)
    if not from_ms < to_ms <= from_ms + MAX_TRACK_MS:
        raise ApiError(
            f"from={from_ms}, to={to_ms}: expected from < to, at most {MAX_TRACK_MS // 3_600_000} h apart",
            code="invalid_range",
        )
    if format == "csv":
        name = f"{bus}-{from_ms}-{to_ms}.csv"
        stream = Stream(
            _csv(services, operator, bus, from_ms, to_ms),
            media_type="text/csv; charset=utf-8",
            headers={
                "Cache-Control": f"private, max-age={HISTORY_MAX_AGE_S}",
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )
        # OpenAPI documents the GeoJSON answer (one schema per status); the CSV one is in this docstring
        return cast("Response[TrackFeature]", stream)
    async with services.pool.acquire() as conn:
        points = await track(conn, operator, bus, from_ms, to_ms)
    return cached(request, _feature(operator, bus, from_ms, to_ms, points), HISTORY_MAX_AGE_S)


def _feature(operator: str, bus: str, from_ms: int, to_ms: int, points: list[TrackPoint]) -> TrackFeature:
    line = LineString(coordinates=[(p.lon, p.lat) for p in points]) if len(points) >= 2 else None
    properties = TrackProperties(
        operator=operator,
        bus=bus,
        from_ms=from_ms,
        to_ms=to_ms,
        times_ms=[p.time_ms for p in points],
        speeds_mps=[p.speed_mps for p in points],
    )
    return TrackFeature(geometry=line, properties=properties)


async def _csv(services: Services, operator: str, bus: str, from_ms: int, to_ms: int) -> AsyncIterator[str]:
    yield CSV_HEADER
    rows: list[str] = []
    async with services.pool.acquire() as conn:
        async for p in track_rows(conn, operator, bus, from_ms, to_ms):
            rows.append(f"{p.time_ms},{p.lat!r},{p.lon!r},{_cell(p.speed_mps)},{_cell(p.heading_deg)}\n")
            if len(rows) == CSV_CHUNK_ROWS:
                yield "".join(rows)
                rows.clear()
    if rows:
        yield "".join(rows)


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)


@get("/v1/operators/{operator:str}/events", tags=_TAGS, responses=_ERRORS, security=SECURITY)
async def events(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    claims: ClaimsDep,
    operator: OperatorId,
    bus: BusFilter = None,
    route: RouteFilter = None,
    kind: Annotated[list[EventKind] | None, QueryParameter(description="one or more kinds")] = None,
    from_ms: Annotated[int | None, QueryParameter(name="from", ge=EARLIEST_FIX_MS, le=LATEST_FIX_MS)] = None,
    to_ms: Annotated[int | None, QueryParameter(name="to", ge=EARLIEST_FIX_MS, le=LATEST_FIX_MS)] = None,
    cursor: Annotated[
        str | None, QueryParameter(max_length=2_048, description="next_cursor of a page")
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1_000)] = 100,
) -> Response[EventsPage]:
    """Events of an operator by bus, route, kind and time range (``from`` ≤ time < ``to``), newest first."""
    require(claims, "analyst", operator=operator)
    after = decode_cursor(cursor, operator) if cursor is not None else None
    async with services.pool.acquire() as conn:
        found = await read_events(
            conn,
            operator,
            since_ms=from_ms,
            until_ms=to_ms,
            bus=bus,
            kinds=kind,
            route_id=route,
            after=after,
            limit=limit + 1,
        )
    page, more = found[:limit], len(found) > limit
    next_cursor = encode_cursor(page[-1].key) if more else None
    return cached(request, EventsPage(events=page, next_cursor=next_cursor), HISTORY_MAX_AGE_S)


_CursorText = Annotated[str, msgspec.Meta(max_length=256, pattern=TEXT_PATTERN)]
_CursorMs = Annotated[int, msgspec.Meta(ge=EARLIEST_FIX_MS, le=LATEST_FIX_MS)]
_CURSOR_DECODER = msgspec.json.Decoder(
    tuple[_CursorText, _CursorText, EventKind, _CursorText, _CursorMs, _CursorMs, int]
)


def encode_cursor(key: EventKey) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def decode_cursor(cursor: str, operator: str) -> EventKey:
    """The key a cursor stands for; ApiError ``invalid_cursor`` if it is not one of this operator's."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key: EventKey = _CURSOR_DECODER.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ApiError("cursor: not a cursor this API gave", code="invalid_cursor") from None
    if key[0] != operator:
        raise ApiError(f"cursor: not a cursor of operator {operator!r}", code="invalid_cursor")
    return key


@get("/v1/operators/{operator:str}/distance", tags=_TAGS, responses=_ERRORS, security=SECURITY)
async def distance(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    claims: ClaimsDep,
    operator: OperatorId,
    day: Annotated[date, QueryParameter(description="UTC day, YYYY-MM-DD")],
) -> Response[DistanceDay]:
    """The distance each bus drove on a UTC day (sum of great-circle steps between its fixes)."""
    require(claims, "analyst", operator=operator)
    if not date(2000, 1, 1) <= day < date(2100, 1, 1):
        raise ApiError(f"day={day.isoformat()}: expected a day from 2000 to 2099", code="invalid_day")
    async with services.pool.acquire() as conn:
        buses = await distance_per_bus(conn, operator, day)
    return cached(request, DistanceDay(operator=operator, day=day, buses=buses), HISTORY_MAX_AGE_S)


@get("/v1/operators/{operator:str}/travel-times", tags=_TAGS, responses=_ERRORS, security=SECURITY)
async def travel_times(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    claims: ClaimsDep,
    operator: OperatorId,
    from_stop: StopQuery,
    to_stop: StopQuery,
) -> Response[TravelTimes]:
    """Stop-to-stop travel times by hour of week (count, mean, variance, latest): what the ETA learns."""
    require(claims, "analyst", operator=operator)
    async with services.pool.acquire() as conn:
        hours = await segment_times_between(conn, operator, from_stop, to_stop)
        for stop_id in () if hours else (from_stop, to_stop):
            if not await gtfs.has_stop(conn, operator, stop_id):
                raise NotFound(f"no stop {stop_id!r} in {operator!r}'s active feed", code="stop_not_found")
    answer = TravelTimes(operator=operator, from_stop_id=from_stop, to_stop_id=to_stop, hours=hours)
    return cached(request, answer, HISTORY_MAX_AGE_S)


ROUTES = [bus_track, events, distance, travel_times]
