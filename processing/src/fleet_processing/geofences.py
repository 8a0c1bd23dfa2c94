"""Geofences: which fences a bus is in, fix after fix, and the events of entering, leaving and speeding.

Fences are per operator: stations, depots, restricted zones, speed zones,
border checkpoints, as polygons, circles (point + radius) and corridors
(line + buffer), all held as shapely polygons in lon/lat
(``fleet_processing.fence_geojson`` builds them from GeoJSON).

Candidates for a fix come from the H3 cells covering each fence, so the cost
per fix does not grow with the number of fences: one ``latlng_to_cell`` and
one dict lookup find the few fences near the fix, and only those get an exact
(prepared shapely) test. Cells more than one ring inside a fence answer
"inside" with no test at all.

Enter and exit are the set difference between the fences containing the fix
and the stays of the state (as Traccar's ``GeofenceEventHandler``), plus a
crossing check of the segment from the previous fix, so a bus that crosses a
small fence between two sparse fixes still enters and leaves it. Exits come
before crossings and crossings before enters: that is the order a bus moving
from one fence to another meets them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import h3
import msgspec
import shapely
from h3.api import basic_int as h3i

from fleet_processing.detection import DetectorPolicy, Observation, make_event
from fleet_processing.errors import DuplicateFenceIdError
from fleet_schemas.events import Event, EventKind
from fleet_schemas.geo import haversine_m

FenceKind = Literal["station", "depot", "restricted", "speed_zone", "border"]
FENCE_KINDS: tuple[FenceKind, ...] = FenceKind.__args__  # type: ignore[attr-defined]

RESOLUTION = 8
"""H3 resolution of the cover: cells of about 0.74 km² (edge about 460 m). The smallest fences, station
circles of 100-300 m, then touch one to three cells and a town-sized zone of 100 km² about 140, so even
10,000 fences hold a few hundred thousand cells; a fix's cell lists only the fences within about a
kilometre (a handful in a town, none on the open road), and consecutive fixes 10-30 s apart are mostly in
the same or a neighbouring cell, which keeps the crossing check to two lookups. Resolution 9 (edge 175 m)
would multiply the cells of big zones by seven for fewer exact tests only in dense town centres."""

CROSSING_MAX_M = 5_000.0
"""the longest segment between two fixes checked for crossed fences: beyond it (a bus silent for minutes)
the straight line is no longer the road it took, and claiming it crossed a fence would be invented"""


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
    geometry: dict[str, Any] | None = None
    """the GeoJSON geometry it was built from (what the store keeps)"""
    properties: dict[str, Any] | None = None
    """the GeoJSON properties it was built from, as given (what the store keeps)"""


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


_Cell = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
"""what one H3 cell knows: fences surely containing all of it, fences overlapping it (to test exactly),
fences within one cell of it (only a segment leaving the cell may cross them)"""


class FenceIndex:
    """The fences of one operator with their H3 cover, for candidate lookup.

    A fence lists the cells that overlap it (h3 ``overlap`` containment) and, for the crossing check,
    one ring around the cells its boundary crosses, so a point within one cell of a fence finds it.
    Overlapping cells not next to a boundary cell are "sure": every point of them is inside, untested.
    A bounding-box comparison in plain Python turns most candidates away before any shapely call.
    """

    __slots__ = ("_bounds", "_cells", "_last", "by_id", "cells_held", "fences", "resolution")

    def __init__(self, fences: Sequence[Fence], resolution: int = RESOLUTION) -> None:
        self.fences: tuple[Fence, ...] = tuple(fences)
        self.resolution = resolution
        self.by_id: dict[str, int] = {}
        for k, fence in enumerate(self.fences):
            if fence.fence_id in self.by_id:
                raise DuplicateFenceIdError("two fences with this id in one index", fence_id=fence.fence_id)
            self.by_id[fence.fence_id] = k
        self._bounds: tuple[tuple[float, float, float, float], ...] = tuple(
            (float(w), float(s), float(e), float(n)) for w, s, e, n in (f.area.bounds for f in self.fences)
        )
        lists: dict[int, tuple[list[int], list[int], list[int]]] = {}
        for k, fence in enumerate(self.fences):
            shapely.prepare(fence.area)
            for which, cells in enumerate(_cover(fence.area, resolution)):
                for cell in cells:
                    lists.setdefault(cell, ([], [], []))[which].append(k)
        self._cells: dict[int, _Cell] = {
            cell: (tuple(sure), tuple(overlap), tuple(ring)) for cell, (sure, overlap, ring) in lists.items()
        }
        self.cells_held = sum(len(a) + len(b) + len(c) for a, b, c in lists.values())
        """(cell, fence) pairs in the index: its memory grows with this"""
        self._last: tuple[float, float, int] = (math.nan, math.nan, 0)
        """the last point looked up and its cell: a bus's fix is the next one's previous, so half the
        lookups of a bus's run are found here (a cache: it changes no result)"""

    def __len__(self) -> int:
        return len(self.fences)

    def cell_of(self, lat: float, lon: float) -> int:
        last = self._last
        if last[0] == lat and last[1] == lon:
            return last[2]
        cell: int = h3i.latlng_to_cell(lat, lon, self.resolution)
        self._last = (lat, lon, cell)
        return cell

    def overlaps(self, cell: int) -> bool:
        """Whether some fence overlaps ``cell`` (a point of it may be inside one)."""
        entry = self._cells.get(cell)
        return entry is not None and bool(entry[0] or entry[1])

    def holds(self, cell: int) -> bool:
        """Whether some fence is within one cell of ``cell``."""
        return cell in self._cells

    def containing(self, cell: int, lon: float, lat: float) -> set[int]:
        """The fences containing a point of ``cell`` (boundary included)."""
        entry = self._cells.get(cell)
        if entry is None:
            return set()
        sure, overlap, _ = entry
        inside = set(sure)
        for k in overlap:
            west, south, east, north = self._bounds[k]
            if (
                west <= lon <= east
                and south <= lat <= north
                and shapely.intersects_xy(self.fences[k].area, lon, lat)
            ):
                inside.add(k)
        return inside

    def crossable(self, cells: tuple[int, ...], previous: Observation, obs: Observation) -> set[int]:
        """The fences the segment from ``previous`` to ``obs``, through ``cells``, may cross."""
        found: set[int] = set()
        for cell in cells:
            entry = self._cells.get(cell)
            if entry is not None:
                found.update(entry[0])
                found.update(entry[1])
                if len(cells) > 1:  # a segment within one cell meets only the fences overlapping it
                    found.update(entry[2])
        west, east = min(previous.lon, obs.lon), max(previous.lon, obs.lon)
        south, north = min(previous.lat, obs.lat), max(previous.lat, obs.lat)
        bounds = self._bounds
        return {
            k
            for k in found
            if bounds[k][0] <= east
            and west <= bounds[k][2]
            and bounds[k][1] <= north
            and south <= bounds[k][3]
        }


def _cover(
    area: shapely.Polygon | shapely.MultiPolygon, resolution: int
) -> tuple[set[int], set[int], set[int]]:
    """(sure, overlapping, ring) cells of one fence."""
    shape = h3i.geo_to_h3shape(area)
    overlap = set(h3i.h3shape_to_cells_experimental(shape, resolution, "overlap"))
    full = set(h3i.h3shape_to_cells_experimental(shape, resolution, "full"))
    for x, y in _vertices(area):  # belt and braces: h3 and shapely may round a sliver differently
        overlap.add(h3i.latlng_to_cell(y, x, resolution))
    ring: set[int] = set()
    for cell in overlap - full:
        ring.update(h3i.grid_disk(cell, 1))
    sure = full - ring
    return sure, overlap - sure, ring - overlap


def _vertices(area: shapely.Polygon | shapely.MultiPolygon) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in shapely.get_coordinates(area)]


EMPTY_INDEX: FenceIndex = FenceIndex(())
"""an index of no fences (an operator without any)"""


def fence_step(
    state: FenceState,
    previous: Observation | None,
    obs: Observation,
    index: FenceIndex,
    operator: str,
    policy: DetectorPolicy,
) -> tuple[FenceState, list[Event]]:
    """The fence events of ``obs``, given the fix before it (None for the bus's first).

    A stay in a fence the index no longer has (the operator deleted it) ends without an event: the bus
    did not leave it, it ceased to exist.
    """
    if not index.fences:
        return (FenceState(), []) if state.stays else (state, [])
    before = None if previous is None else index.cell_of(previous.lat, previous.lon)  # first: often cached
    cell = index.cell_of(obs.lat, obs.lon)
    overlapping = index.overlaps(cell)
    path = (
        () if previous is None or before is None else _path(previous, before, obs, cell, overlapping, index)
    )
    if not overlapping and not path and not state.stays:
        return state, []
    inside = index.containing(cell, obs.lon, obs.lat)
    events: list[Event] = []
    kept: list[tuple[int, FenceStay]] = []
    stayed: set[int] = set()
    for stay in state.stays:
        k = index.by_id.get(stay.fence_id)
        if k is None:
            continue
        stayed.add(k)
        if k in inside:
            kept.append((k, stay))
        else:
            events.append(_exited(operator, obs, index.fences[k], stay))
    if path and previous is not None:
        for k in sorted(index.crossable(path, previous, obs) - inside - stayed):
            events += _crossed(operator, previous, obs, index.fences[k])
    for k in sorted(inside - stayed):
        events.append(_fence_event(operator, obs, index.fences[k], "geofence_entered"))
        kept.append((k, FenceStay(index.fences[k].fence_id, obs.time_ms)))
    stays: list[FenceStay] = []
    for k, stay in kept:
        stays.append(_inside(operator, obs, index.fences[k], stay, policy, events))
    if (
        not events
        and len(stays) == len(state.stays)
        and all(a is b for a, b in zip(stays, state.stays, strict=True))
    ):
        return state, events
    return FenceState(stays), events


def _path(
    previous: Observation, before: int, obs: Observation, cell: int, overlapping: bool, index: FenceIndex
) -> tuple[int, ...]:
    """The cells the segment from the previous fix (in cell ``before``) runs through, when it may cross
    a fence (else empty); ``overlapping``: whether a fence overlaps ``obs``'s cell."""
    if before == cell:  # within one cell: only the fences overlapping it
        moved = previous.lat != obs.lat or previous.lon != obs.lon
        return (cell,) if overlapping and moved else ()
    cells: tuple[int, ...]
    if h3i.are_neighbor_cells(before, cell):
        if not (index.holds(before) or index.holds(cell)):  # no fence within a cell of either
            return ()
        return (before, cell)
    if haversine_m(previous.lat, previous.lon, obs.lat, obs.lon) > CROSSING_MAX_M:
        return ()
    try:
        cells = tuple(h3i.grid_path_cells(before, cell))
    except h3.H3BaseException:  # across a pentagon's distortion: sample the segment instead
        cells = _sampled(previous, obs, index)
    return cells if any(index.holds(c) for c in cells) else ()


def _sampled(previous: Observation, obs: Observation, index: FenceIndex) -> tuple[int, ...]:
    steps = 1 + int(haversine_m(previous.lat, previous.lon, obs.lat, obs.lon) / 200.0)
    return tuple(
        index.cell_of(
            previous.lat + (obs.lat - previous.lat) * s / steps,
            previous.lon + (obs.lon - previous.lon) * s / steps,
        )
        for s in range(steps + 1)
    )


def _details(fence: Fence, **more: Any) -> dict[str, Any]:
    return {"fence_id": fence.fence_id, "fence_kind": fence.kind, "name": fence.name, **more}


def _fence_event(operator: str, obs: Observation, fence: Fence, kind: EventKind, **more: Any) -> Event:
    return make_event(operator, obs, kind, fence.fence_id, _details(fence, **more))


def _exited(operator: str, obs: Observation, fence: Fence, stay: FenceStay) -> Event:
    return _fence_event(
        operator,
        obs,
        fence,
        "geofence_exited",
        entered_ms=stay.entered_ms,
        dwell_s=(obs.time_ms - stay.entered_ms) / 1000,
    )


def _crossed(operator: str, previous: Observation, obs: Observation, fence: Fence) -> list[Event]:
    """Enter and exit of a fence the segment from ``previous`` to ``obs`` crosses, if it does."""
    segment = shapely.LineString([(previous.lon, previous.lat), (obs.lon, obs.lat)])
    if not shapely.intersects(fence.area, segment):
        return []
    part = shapely.get_coordinates(shapely.intersection(fence.area, segment))
    if not len(part):  # touching within rounding: no crossing to date
        return []
    where = shapely.line_locate_point(segment, shapely.points(part), normalized=True)
    span = obs.time_ms - previous.time_ms
    entered = previous.time_ms + round(float(where.min()) * span)
    left = previous.time_ms + round(float(where.max()) * span)
    return [
        _fence_event(operator, obs, fence, "geofence_entered", crossed=True),
        _fence_event(
            operator,
            obs,
            fence,
            "geofence_exited",
            crossed=True,
            entered_ms=entered,
            dwell_s=(left - entered) / 1000,
        ),
    ]


def _inside(
    operator: str,
    obs: Observation,
    fence: Fence,
    stay: FenceStay,
    policy: DetectorPolicy,
    events: list[Event],
) -> FenceStay:
    """The stay after one more fix inside: its dwell and overspeed, events appended to ``events``."""
    dwell_s = (obs.time_ms - stay.entered_ms) / 1000
    if fence.dwell_s is not None and not stay.dwell_sent and dwell_s > fence.dwell_s:
        events.append(
            _fence_event(
                operator,
                obs,
                fence,
                "geofence_dwell",
                entered_ms=stay.entered_ms,
                dwell_s=dwell_s,
                limit_s=fence.dwell_s,
            )
        )
        stay = msgspec.structs.replace(stay, dwell_sent=True)
    limit = fence.speed_limit_mps
    speed = obs.speed_mps
    if limit is None or speed is None:
        return stay
    if speed <= limit:
        if stay.over_since_ms or stay.over_sent:
            stay = msgspec.structs.replace(stay, over_since_ms=0, over_max_mps=0.0, over_sent=False)
        return stay
    since = stay.over_since_ms or obs.time_ms
    highest = max(stay.over_max_mps, speed)
    sent = stay.over_sent
    duration_s = (obs.time_ms - since) / 1000
    if not sent and duration_s >= policy.overspeed_min_s:
        events.append(
            _fence_event(
                operator, obs, fence, "overspeed", speed_mps=highest, limit_mps=limit, duration_s=duration_s
            )
        )
        sent = True
    return msgspec.structs.replace(stay, over_since_ms=since, over_max_mps=highest, over_sent=sent)
