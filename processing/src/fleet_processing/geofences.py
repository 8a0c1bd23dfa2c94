"""Geofences: which fences a bus is in, fix after fix, and the events of entering, leaving and speeding.

CONTRACT (implementation pending: helper "geofences").

Fences are per operator: stations, depots, restricted zones, speed zones,
border checkpoints, as polygons, circles (point + radius) and corridors
(line + buffer), all held as shapely polygons in lon/lat. Candidates for a
fix come from H3 cells covering each fence (polyfill with a buffer of one
ring), so the cost per fix does not grow with the number of fences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
import shapely

from fleet_processing.detection import DetectorPolicy, Observation
from fleet_schemas.events import Event

FenceKind = Literal["station", "depot", "restricted", "speed_zone", "border"]
FENCE_KINDS: tuple[FenceKind, ...] = FenceKind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True, eq=False)
class Fence:
    """One fence of one operator, ready for containment tests."""

    fence_id: str
    operator: str
    name: str
    kind: FenceKind
    area: shapely.Polygon | shapely.MultiPolygon
    """in lon/lat (circles and corridors buffered in metres, then unprojected)"""
    dwell_s: float | None = None
    """inside longer than this raises ``geofence_dwell`` (None: never)"""
    speed_limit_mps: float | None = None
    """above this inside, for the policy's ``overspeed_min_s``, raises ``overspeed`` (None: no limit)"""


class FenceStay(msgspec.Struct, array_like=True, gc=False):
    """A bus inside one fence."""

    fence_id: str
    entered_ms: int
    dwell_sent: bool = False
    over_since_ms: int = 0
    """first fix above the fence's speed limit of the current overspeed (0: not over)"""
    over_max_mps: float = 0.0
    over_sent: bool = False


class FenceState(msgspec.Struct, array_like=True, gc=False):
    """The fences a bus is in (part of ``fleet_processing.detect.BusState``)."""

    stays: list[FenceStay] = msgspec.field(default_factory=list)


class FenceIndex:
    """The fences of one operator with their H3 cover, for candidate lookup."""

    def __init__(self, fences: Sequence[Fence], resolution: int = 8) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


EMPTY_INDEX: FenceIndex
"""an index of no fences (an operator without any)"""


def fence_step(
    state: FenceState,
    previous: Observation | None,
    obs: Observation,
    index: FenceIndex,
    operator: str,
    policy: DetectorPolicy,
) -> tuple[FenceState, list[Event]]:
    """The fence events of ``obs``, given the fix before it (None for the bus's first)."""
    raise NotImplementedError
