"""The live map's layers as GeoJSON (RFC 7946): route shapes, stops and geofences of an operator.

Manager-only: they are the map's, not the booking platform's. Geofences come
as the areas the detectors test (circles and corridors already buffered by
``fleet_processing.fence_geojson``), so what the map draws is what raises the
events. Answers carry a strong ``ETag`` and are cacheable for a minute: they
change only when a feed or a fence file is imported.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import shapely
from litestar import Request, Response, get

from fleet_processing.fence_geojson import fence_from_feature
from fleet_serve.analyst import LineString
from fleet_serve.auth import SECURITY, ClaimsDep, require
from fleet_serve.caching import HISTORY_MAX_AGE_S, cached
from fleet_serve.errors import error_responses
from fleet_serve.params import OperatorId
from fleet_serve.services import ServicesDep
from fleet_store import geofences, map_layers

_TAGS = ["map"]
_ERRORS = error_responses(400, 401, 403)


class Point(msgspec.Struct, frozen=True, tag="Point", tag_field="type"):
    coordinates: tuple[float, float]
    """[lon, lat] in degrees"""


class RouteProperties(msgspec.Struct, frozen=True, kw_only=True):
    route_id: str
    shape_id: str
    name: str
    """short name, else long name, else route_id"""
    color: str
    """``#rrggbb``: the feed's route_color, or a blue when it gives none"""
    trip_ids: list[str]


class RouteFeature(msgspec.Struct, frozen=True, tag="Feature", tag_field="type"):
    geometry: LineString
    properties: RouteProperties


class StopProperties(msgspec.Struct, frozen=True, kw_only=True):
    stop_id: str
    name: str


class StopFeature(msgspec.Struct, frozen=True, tag="Feature", tag_field="type"):
    geometry: Point
    properties: StopProperties


class FenceProperties(msgspec.Struct, frozen=True, kw_only=True):
    fence_id: str
    kind: str
    name: str
    speed_limit_mps: float | None
    dwell_s: float | None


class FenceFeature(msgspec.Struct, frozen=True, tag="Feature", tag_field="type"):
    geometry: dict[str, Any]
    """a Polygon or MultiPolygon in lon/lat"""
    properties: FenceProperties


class RouteCollection(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[RouteFeature]


class StopCollection(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[StopFeature]


class FenceCollection(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[FenceFeature]


DEFAULT_ROUTE_COLOR = "#3366cc"


@get("/v1/operators/{operator:str}/map/routes", tags=_TAGS, responses=_ERRORS, security=SECURITY)
async def map_routes(
    request: Request[Any, Any, Any], services: ServicesDep, claims: ClaimsDep, operator: OperatorId
) -> Response[RouteCollection]:
    """Each route's shapes in the active feed, one Feature per (route, shape) with its trips."""
    require(claims, operator=operator)
    async with services.pool.acquire() as conn:
        shapes = await map_layers.route_shapes(conn, operator)
    features = [
        RouteFeature(
            geometry=LineString(coordinates=list(zip(s.lons, s.lats, strict=True))),
            properties=RouteProperties(
                route_id=s.route_id,
                shape_id=s.shape_id,
                name=s.short_name or s.long_name or s.route_id,
                color=f"#{s.color}" if s.color else DEFAULT_ROUTE_COLOR,
                trip_ids=s.trip_ids,
            ),
        )
        for s in shapes
    ]
    return cached(request, RouteCollection(features=features), HISTORY_MAX_AGE_S)


@get("/v1/operators/{operator:str}/map/stops", tags=_TAGS, responses=_ERRORS, security=SECURITY)
async def map_stops(
    request: Request[Any, Any, Any], services: ServicesDep, claims: ClaimsDep, operator: OperatorId
) -> Response[StopCollection]:
    """The active feed's stops (location type 0) as Points."""
    require(claims, operator=operator)
    async with services.pool.acquire() as conn:
        found = await map_layers.stops(conn, operator)
    features = [
        StopFeature(
            geometry=Point((s.lon, s.lat)),
            properties=StopProperties(stop_id=s.stop_id, name=s.name or s.stop_id),
        )
        for s in found
    ]
    return cached(request, StopCollection(features=features), HISTORY_MAX_AGE_S)


@get("/v1/operators/{operator:str}/map/geofences", tags=_TAGS, responses=_ERRORS, security=SECURITY)
async def map_geofences(
    request: Request[Any, Any, Any], services: ServicesDep, claims: ClaimsDep, operator: OperatorId
) -> Response[FenceCollection]:
    """The operator's geofences as the areas the detectors test (circles and corridors buffered)."""
    require(claims, operator=operator)
    async with services.pool.acquire() as conn:
        stored = await geofences.list_fences(conn, operator)
    features = []
    for s in stored:
        fence = fence_from_feature(operator, s.feature())
        features.append(
            FenceFeature(
                geometry=shapely.geometry.mapping(fence.area),
                properties=FenceProperties(
                    fence_id=s.fence_id,
                    kind=s.kind,
                    name=s.name,
                    speed_limit_mps=s.speed_limit_mps,
                    dwell_s=s.dwell_s,
                ),
            )
        )
    return cached(request, FenceCollection(features=features), HISTORY_MAX_AGE_S)


ROUTES = [map_routes, map_stops, map_geofences]
