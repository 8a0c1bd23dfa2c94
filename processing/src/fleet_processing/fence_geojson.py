"""Geofences from GeoJSON: operators draw them in any GIS tool and import a FeatureCollection.

Each Feature is one fence. Properties: ``id`` (required; the identifier rules of
``fleet_schemas.topics``; the Feature's own ``id`` member when the property is
absent), ``kind`` (required, one of ``FENCE_KINDS``), ``name`` (default: the id),
``dwell_s``, ``speed_limit_kmh`` (converted to m/s here, at the boundary),
``radius_m`` for a Point (a circle) and ``buffer_m`` for a LineString (a
corridor). Polygons and MultiPolygons are taken as drawn, once shapely finds
them valid (a self-intersection is refused with shapely's reason). Other
properties are kept as given, for the operator's own use.

Circles and corridors are buffered in metres in a local azimuthal equidistant
projection centred on the geometry (distances from the centre are true, and
over a corridor's length the distortion stays far below a metre), then
unprojected to lon/lat. The document is walked by hand rather than decoded
into Structs because each failure must name its feature and fence id, and
arbitrary JSON must fail only with an ``InvalidFenceError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

import msgspec
import numpy as np
import numpy.typing as npt
import pyproj
import shapely

from fleet_processing.errors import (
    BadCoordinatesError,
    BadFenceBufferError,
    BadFenceIdError,
    BadFencePropertyError,
    BadFenceRadiusError,
    BadGeoJsonError,
    CoordinatesOutOfRangeError,
    DuplicateFenceIdError,
    FenceTooLargeError,
    InvalidFenceError,
    InvalidPolygonError,
    MissingFenceIdError,
    UnknownFenceKindError,
    UnsupportedGeometryError,
)
from fleet_processing.geofences import FENCE_KINDS, Fence, FenceKind
from fleet_schemas.topics import IDENTIFIER_PATTERN

MAX_RADIUS_M = 50_000.0
"""the largest circle or corridor half-width (a border zone is drawn as a polygon)"""
MAX_SPAN_DEG = 5.0
"""a fence may span at most this many degrees of latitude and longitude (about 550 km), and"""
MAX_AREA_M2 = 20_000e6
"""at most this area (20,000 km², about 27,000 H3 cells of the index's resolution)"""
MAX_SPEED_KMH = 300.0
MAX_NAME = 200
CIRCLE_QUAD_SEGS = 16
"""a circle is a polygon of 64 sides: its area is 0.16 % short of the circle's"""

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_GEOD = pyproj.Geod(ellps="WGS84")
_JSON = msgspec.json.Encoder()


def fences_from_geojson(operator: str, data: bytes | str | Mapping[str, Any]) -> list[Fence]:
    """The fences of a GeoJSON FeatureCollection (bytes, text or decoded), or an ``InvalidFenceError``."""
    document = read_geojson(data)
    if not isinstance(document, Mapping) or document.get("type") != "FeatureCollection":
        raise BadGeoJsonError("the document is not a GeoJSON FeatureCollection")
    features = document.get("features")
    if not isinstance(features, list):
        raise BadGeoJsonError("the FeatureCollection has no 'features' list")
    fences: list[Fence] = []
    seen: dict[str, int] = {}
    for number, feature in enumerate(features):
        fence = fence_from_feature(operator, feature, number)
        if fence.fence_id in seen:
            raise DuplicateFenceIdError(
                f"the id of feature {seen[fence.fence_id]} again", number, fence.fence_id
            )
        seen[fence.fence_id] = number
        fences.append(fence)
    return fences


def fence_from_feature(operator: str, feature: Any, number: int = 0) -> Fence:
    """One fence from one GeoJSON Feature (``number``: its place in the file, for errors)."""
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise BadGeoJsonError("not a GeoJSON Feature", number)
    properties = feature.get("properties")
    if properties is None:
        properties = {}
    if not isinstance(properties, Mapping):
        raise BadGeoJsonError("'properties' is not an object", number)
    fence_id = _fence_id(properties.get("id", feature.get("id")), number)
    checked = _Checked(number, fence_id)
    kind = properties.get("kind")
    if kind not in FENCE_KINDS:
        raise UnknownFenceKindError(f"kind {kind!r} is not one of {', '.join(FENCE_KINDS)}", number, fence_id)
    name = properties.get("name", fence_id)
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or "\x00" in name:
        raise BadFencePropertyError(f"name must be text of 1 to {MAX_NAME} characters", number, fence_id)
    dwell_s = checked.positive(properties, "dwell_s", 7 * 86_400.0, BadFencePropertyError)
    limit_kmh = checked.positive(properties, "speed_limit_kmh", MAX_SPEED_KMH, BadFencePropertyError)
    geometry = feature.get("geometry")
    area = checked.area(geometry, properties)
    drawn = cast(Mapping[str, Any], geometry)  # checked by area()
    return Fence(
        fence_id=fence_id,
        operator=operator,
        name=name,
        kind=cast(FenceKind, kind),
        area=area,
        dwell_s=dwell_s,
        speed_limit_mps=None if limit_kmh is None else limit_kmh / 3.6,
        geometry={"type": drawn["type"], "coordinates": drawn["coordinates"]},
        properties=checked.storable(properties),
    )


def read_geojson(data: bytes | str | Mapping[str, Any]) -> Any:
    """The JSON document in ``data`` (a mapping is taken as decoded), or a BadGeoJsonError."""
    if isinstance(data, Mapping):
        return data
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError) as error:
        raise BadGeoJsonError(f"not JSON: {error}") from None


def _fence_id(value: Any, number: int) -> str:
    if value is None:
        raise MissingFenceIdError("the feature has no 'id' property", number)
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise BadFenceIdError(f"id {value!r} must be text matching {IDENTIFIER_PATTERN}", number)
    return value


class _Checked:
    """The checks of one feature, each raising with its number and fence id."""

    def __init__(self, feature: int, fence_id: str) -> None:
        self.feature = feature
        self.fence_id = fence_id

    def fail(self, error: type[InvalidFenceError], message: str) -> InvalidFenceError:
        return error(message, self.feature, self.fence_id)

    def positive(
        self, properties: Mapping[str, Any], key: str, highest: float, error: type[InvalidFenceError]
    ) -> float | None:
        """An optional positive number property, at most ``highest``."""
        value = properties.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= highest:
            raise self.fail(error, f"{key} must be a number in (0, {highest:g}], not {value!r}")
        return float(value)

    def storable(self, properties: Mapping[str, Any]) -> dict[str, Any]:
        """The properties as JSON the store can keep (PostgreSQL text and JSONB hold no NUL)."""
        try:
            encoded = _JSON.encode(properties)
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            raise self.fail(BadFencePropertyError, f"properties are not plain JSON: {error}") from None
        if b"\\u0000" in encoded:
            raise self.fail(BadFencePropertyError, "a property holds a NUL character")
        decoded: dict[str, Any] = msgspec.json.decode(encoded)
        return decoded

    def area(self, geometry: Any, properties: Mapping[str, Any]) -> shapely.Polygon | shapely.MultiPolygon:
        if not isinstance(geometry, Mapping):
            raise self.fail(UnsupportedGeometryError, "the feature has no geometry")
        kind = geometry.get("type")
        coordinates = geometry.get("coordinates")
        radius = self.positive(properties, "radius_m", MAX_RADIUS_M, BadFenceRadiusError)
        buffer = self.positive(properties, "buffer_m", MAX_RADIUS_M, BadFenceBufferError)
        if radius is not None and kind != "Point":
            raise self.fail(BadFenceRadiusError, f"radius_m is for a Point, not a {kind}")
        if buffer is not None and kind != "LineString":
            raise self.fail(BadFenceBufferError, f"buffer_m is for a LineString, not a {kind}")
        area: shapely.Polygon | shapely.MultiPolygon
        if kind == "Point":
            if radius is None:
                raise self.fail(BadFenceRadiusError, "a Point fence needs radius_m (a circle)")
            area = self.unwrapped(_buffered(shapely.Point(self.position(coordinates)), radius))
        elif kind == "LineString":
            if buffer is None:
                raise self.fail(BadFenceBufferError, "a LineString fence needs buffer_m (a corridor)")
            line = shapely.LineString(self.positions(coordinates, 2))
            if line.length == 0:
                raise self.fail(BadCoordinatesError, "the LineString has no length")
            self.not_too_wide(line)
            area = self.unwrapped(_buffered(line, buffer))
        elif kind == "Polygon":
            area = self.polygon(coordinates)
        elif kind == "MultiPolygon":
            if not isinstance(coordinates, list) or not coordinates:
                raise self.fail(BadCoordinatesError, "a MultiPolygon needs a list of polygons")
            area = shapely.MultiPolygon([self.polygon(part) for part in coordinates])
        else:
            raise self.fail(
                UnsupportedGeometryError, f"{kind!r} is not a Point, LineString, Polygon or MultiPolygon"
            )
        self.valid(area)
        return area

    def position(self, value: Any) -> tuple[float, float]:
        if (
            not isinstance(value, list)
            or not 2 <= len(value) <= 3
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise self.fail(
                BadCoordinatesError, f"a position is [lon, lat] or [lon, lat, alt], not {value!r}"
            )
        if not (-180 <= value[0] <= 180 and -90 <= value[1] <= 90):  # before float(): NaN and 1e400 fail here
            raise self.fail(CoordinatesOutOfRangeError, f"[{value[0]}, {value[1]}] is not a lon/lat")
        return float(value[0]), float(value[1])

    def positions(self, value: Any, least: int) -> list[tuple[float, float]]:
        if not isinstance(value, list) or len(value) < least:
            raise self.fail(BadCoordinatesError, f"expected a list of at least {least} positions")
        return [self.position(v) for v in value]

    def polygon(self, value: Any) -> shapely.Polygon:
        if not isinstance(value, list) or not value:
            raise self.fail(BadCoordinatesError, "a Polygon needs a list of rings")
        rings = [self.positions(ring, 4) for ring in value]
        for ring in rings:
            if ring[0] != ring[-1]:
                raise self.fail(BadCoordinatesError, "a ring must end where it starts (RFC 7946)")
        return shapely.Polygon(rings[0], rings[1:])

    def valid(self, area: shapely.Polygon | shapely.MultiPolygon) -> None:
        if not shapely.is_valid(area):
            raise self.fail(InvalidPolygonError, f"invalid polygon: {shapely.is_valid_reason(area)}")
        if area.is_empty or area.area == 0:
            raise self.fail(InvalidPolygonError, "the polygon has no area")
        self.not_too_wide(area)
        surface = abs(_GEOD.geometry_area_perimeter(area)[0])
        if surface > MAX_AREA_M2:
            raise self.fail(
                FenceTooLargeError, f"{surface / 1e6:.0f} km² is more than {MAX_AREA_M2 / 1e6:.0f} km²"
            )

    def unwrapped(
        self, area: shapely.Polygon | shapely.MultiPolygon
    ) -> shapely.Polygon | shapely.MultiPolygon:
        """A buffered fence, unless it came back wrapped across the antimeridian or over a pole."""
        west, _, east, _ = area.bounds
        if east - west > 180:
            raise self.fail(
                CoordinatesOutOfRangeError, "the circle or corridor crosses the antimeridian or a pole"
            )
        return area

    def not_too_wide(self, geometry: shapely.Geometry) -> None:
        west, south, east, north = geometry.bounds
        if east - west > MAX_SPAN_DEG or north - south > MAX_SPAN_DEG:
            raise self.fail(FenceTooLargeError, f"the fence spans more than {MAX_SPAN_DEG:g} degrees")


def _buffered(
    geometry: shapely.Point | shapely.LineString, distance_m: float
) -> shapely.Polygon | shapely.MultiPolygon:
    """``geometry`` grown by ``distance_m`` metres, in a projection centred on it."""
    centre = geometry.centroid
    local = pyproj.Transformer.from_pipeline(
        "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad"
        f" +step +proj=aeqd +lat_0={centre.y!r} +lon_0={centre.x!r} +ellps=WGS84"
    )
    inverse = pyproj.enums.TransformDirection.INVERSE

    def there(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.column_stack(local.transform(xy[:, 0], xy[:, 1]))

    def back_again(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.column_stack(local.transform(xy[:, 0], xy[:, 1], direction=inverse))

    grown = shapely.buffer(shapely.transform(geometry, there), distance_m, quad_segs=CIRCLE_QUAD_SEGS)
    back = shapely.transform(grown, back_again)
    if not isinstance(back, shapely.Polygon | shapely.MultiPolygon):
        raise AssertionError(back.geom_type)  # a buffer by a positive distance is areal
    return back
