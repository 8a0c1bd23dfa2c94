"""The path and query parameters the API shares, typed so that bad ones answer 400 before a handler runs.

Operator and bus ids follow the wire's identifier rule; GTFS ids are
free text without control characters (PostgreSQL text cannot hold NUL).
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

from fleet_schemas.frames import TEXT_PATTERN
from fleet_schemas.topics import IDENTIFIER_PATTERN

OperatorId = Annotated[str, Parameter(pattern=IDENTIFIER_PATTERN, description="operator id")]
BusId = Annotated[str, Parameter(pattern=IDENTIFIER_PATTERN, description="bus id, as the operator names it")]
TripId = Annotated[
    str, Parameter(min_length=1, max_length=128, pattern=TEXT_PATTERN, description="GTFS trip_id")
]
StopId = Annotated[
    str, Parameter(min_length=1, max_length=128, pattern=TEXT_PATTERN, description="GTFS stop_id")
]
