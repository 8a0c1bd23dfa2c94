"""Typed errors of the pure processing code, each with a stable ``code``.

Ingest maps them to a reason code and a metric label, so codes never change
once released.
"""

from __future__ import annotations

from typing import ClassVar


class FleetProcessingError(Exception):
    """Base of every error fleet_processing raises on bad input; ``code`` is stable."""

    code: ClassVar[str] = "processing_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class UnusableFeedError(FleetProcessingError):
    """A feed handed to ``build_network`` breaks the normalized-feed contract (a trip with no shape, …)."""

    code = "unusable_feed"


class UnknownTimezoneError(FleetProcessingError):
    """An agency's timezone is not an IANA name this machine's tz database knows."""

    code = "unknown_timezone"


class FixOrderError(FleetProcessingError):
    """The fixes of one bus in a batch are not in time order."""

    code = "fix_order"


class InvalidFenceError(FleetProcessingError):
    """A geofence file cannot be used; ``feature`` is the feature's index (None: the file as a whole).

    Every way a fence can be bad has its own subclass and ``code``; the message says why.
    """

    code = "invalid_fence"

    def __init__(self, message: str, feature: int | None = None, fence_id: str | None = None) -> None:
        super().__init__(message)
        self.feature = feature
        self.fence_id = fence_id

    @property
    def located(self) -> str:
        """The message after where it is: ``feature 3 ('alger-depot'): …``."""
        where = "" if self.feature is None else f"feature {self.feature}"
        if self.fence_id is not None:
            where += f" ({self.fence_id!r})" if where else f"fence {self.fence_id!r}"
        return f"{where}: {self.message}" if where else self.message

    def __str__(self) -> str:
        return f"{self.code}: {self.located}"


class BadGeoJsonError(InvalidFenceError):
    """Not JSON, or not a GeoJSON FeatureCollection of Features."""

    code = "bad_geojson"


class MissingFenceIdError(InvalidFenceError):
    """A feature has no ``id`` property."""

    code = "missing_fence_id"


class BadFenceIdError(InvalidFenceError):
    """A fence id breaks the identifier rules (``fleet_schemas.topics.IDENTIFIER_PATTERN``)."""

    code = "bad_fence_id"


class DuplicateFenceIdError(InvalidFenceError):
    """Two features of one file (or one index) have the same id."""

    code = "duplicate_fence_id"


class UnknownFenceKindError(InvalidFenceError):
    """A fence's ``kind`` is missing or not one of ``fleet_processing.geofences.FENCE_KINDS``."""

    code = "unknown_fence_kind"


class BadFencePropertyError(InvalidFenceError):
    """``name``, ``dwell_s`` or ``speed_limit_kmh`` is of the wrong type or range, or unstorable."""

    code = "bad_fence_property"


class BadFenceRadiusError(InvalidFenceError):
    """A Point's ``radius_m`` is missing or out of (0, limit], or given for another geometry."""

    code = "bad_fence_radius"


class BadFenceBufferError(InvalidFenceError):
    """A LineString's ``buffer_m`` is missing or out of (0, limit], or given for another geometry."""

    code = "bad_fence_buffer"


class UnsupportedGeometryError(InvalidFenceError):
    """The geometry is not a Point, LineString, Polygon or MultiPolygon."""

    code = "unsupported_geometry"


class BadCoordinatesError(InvalidFenceError):
    """Coordinates not nested as the geometry requires (positions of 2 or 3 numbers, closed rings)."""

    code = "bad_coordinates"


class CoordinatesOutOfRangeError(InvalidFenceError):
    """A longitude outside [-180, 180] or a latitude outside [-90, 90]."""

    code = "coordinates_out_of_range"


class InvalidPolygonError(InvalidFenceError):
    """A polygon shapely finds invalid (self-intersection, …; the message has its reason) or without area."""

    code = "invalid_polygon"


class FenceTooLargeError(InvalidFenceError):
    """A fence wider than the index's limit (its H3 cover would hold too many cells)."""

    code = "fence_too_large"
