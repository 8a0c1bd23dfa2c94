"""The path and query parameters the API shares, typed so that bad ones answer 400 before a handler runs.

Operator and bus ids follow the wire's identifier rule; GTFS ids are
free text without control characters (PostgreSQL text cannot hold NUL).
The hot path's few headers are read from the scope's raw list (``raw_header``).
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter
from litestar.types import Scope

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""``fleet_schemas.topics.IDENTIFIER_PATTERN`` written for ECMA-262 regexes (OpenAPI clients):
``$`` where Python wants ``\\Z``; the trailing newline Python's ``$`` lets through is harmless here"""
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""``fleet_schemas.frames.TEXT_PATTERN`` likewise: no control character, so no NUL for PostgreSQL"""
_GTFS_ID = {"min_length": 1, "max_length": 128, "pattern": TEXT_PATTERN}

OperatorId = Annotated[str, PathParameter(pattern=IDENTIFIER_PATTERN, description="operator id")]
BusId = Annotated[
    str, PathParameter(pattern=IDENTIFIER_PATTERN, description="bus id, as the operator names it")
]
TripId = Annotated[str, PathParameter(**_GTFS_ID, description="GTFS trip_id")]
StopId = Annotated[str, PathParameter(**_GTFS_ID, description="GTFS stop_id")]

BusFilter = Annotated[str | None, QueryParameter(pattern=IDENTIFIER_PATTERN, description="only this bus")]
RouteFilter = Annotated[str | None, QueryParameter(**_GTFS_ID, description="only this GTFS route_id")]
StopQuery = Annotated[str, QueryParameter(**_GTFS_ID, description="GTFS stop_id")]


def raw_header(scope: Scope, name: bytes) -> str | None:
    """One header's value from the scope's raw list (ASGI lower-cases the names), or None.

    On the hot path this skips building a ``Headers`` mapping to read one header.
    """
    return next((value.decode("latin-1") for key, value in scope["headers"] if key == name), None)
