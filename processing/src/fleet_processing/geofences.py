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
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from typing import Any, Literal

import h3
import msgspec
import numpy as np
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
circles of 100-300 m, then touch one to three cells and a town-sized zone of 100 km² about 140; a fix's
cell lists only the fences within about a kilometre (a handful in a town, none on the open road), and
consecutive fixes 10-30 s apart are mostly in the same or a neighbouring cell, which keeps the crossing
check to two lookups. Measured with 10,000 synthetic fences over northern Algeria and coaches on the demo
lines (``fleet_devtools.synthetic_fences``): resolution 9 (edge 175 m) costs about 40 % more per fix, as
a coach changes cell at nearly every fix, and holds twice the cells; resolution 7 (edge 1.2 km) about 10
to 20 % more, as each cell lists more fences to test."""

METRES_PER_DEGREE = 111_320.0
"""of latitude (and of longitude at the equator)"""

SEEN_POINTS = 20_000
"""at most this many points looked up one by one (without ``FenceIndex.prefetch``) are remembered"""

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


_NONE: frozenset[int] = frozenset()
_Bounds = tuple[float, float, float, float]
"""west, south, east, north"""
_Cell = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], _Bounds]
"""what one H3 cell knows: fences surely containing all of it, fences overlapping it (to test exactly),
fences within one cell of it (only a segment leaving the cell may cross them), and the bounds of all
those fences (a segment outside them crosses none)"""


class FenceIndex:
    """The fences of one operator with their H3 cover, for candidate lookup.

    A fence lists the cells that overlap it (``h3shape_to_cells_experimental`` with ``overlap``
    containment: ``polygon_to_cells``/``geo_to_cells`` keep only cells whose centre is inside, and miss a
    station circle smaller than a cell or a corridor thinner than one) and, for the crossing check, one
    ring (``grid_disk(c, 1)``) around the cells its boundary crosses, so a point within one cell of a
    fence finds it.
    Overlapping cells not next to a boundary cell are "sure": every point of them is inside, untested.
    A bounding-box comparison in plain Python turns most candidates away before any shapely call.

    The index remembers the cell and containing fences of the points it looked up, and ``prefetch``
    looks up a whole batch's fixes at once, with one vectorized shapely call: a fix is the next fix's
    previous, and one shapely call per fix cost 30 times the test itself. Both are caches: a point gives
    the same answer either way.
    """

    __slots__ = (
        "_areas",
        "_bounds",
        "_cells",
        "_last",
        "_older",
        "_seen",
        "by_id",
        "cells_held",
        "fences",
        "resolution",
    )

    def __init__(self, fences: Sequence[Fence], resolution: int = RESOLUTION) -> None:
        self.fences: tuple[Fence, ...] = tuple(fences)
        self.resolution = resolution
        self.by_id: dict[str, int] = {}
        for k, fence in enumerate(self.fences):
            if fence.fence_id in self.by_id:
                raise DuplicateFenceIdError("two fences with this id in one index", fence_id=fence.fence_id)
            self.by_id[fence.fence_id] = k
        self._bounds: tuple[_Bounds, ...] = tuple(
            (float(w), float(s), float(e), float(n)) for w, s, e, n in (f.area.bounds for f in self.fences)
        )
        lists: dict[int, tuple[list[int], list[int], list[int]]] = {}
        for k, fence in enumerate(self.fences):
            shapely.prepare(fence.area)
            for which, cells in enumerate(_cover(fence.area, resolution)):
                for cell in cells:
                    lists.setdefault(cell, ([], [], []))[which].append(k)
        self._cells: dict[int, _Cell] = {
            cell: (tuple(sure), tuple(overlap), tuple(ring), self._union(sure + overlap + ring))
            for cell, (sure, overlap, ring) in lists.items()
        }
        self.cells_held = sum(len(a) + len(b) + len(c) for a, b, c in lists.values())
        """(cell, fence) pairs in the index: its memory grows with this"""
        self._last: tuple[float, float, int] = (math.nan, math.nan, 0)
        """the last point looked up and its cell: a bus's fix is the next one's previous, so half the
        lookups of a bus's run are found here (a cache: it changes no result)"""
        self._areas = np.empty(len(self.fences), dtype=object)
        self._areas[:] = [f.area for f in self.fences]
        self._seen: dict[tuple[float, float], tuple[int, tuple[int, ...]]] = {}
        """(lat, lon) -> (cell, fences containing the point) of the points looked up since the last
        prefetch; held as tuples of ints, which the garbage collector stops tracking"""
        self._older: dict[tuple[float, float], tuple[int, tuple[int, ...]]] = {}
        """the same, from before the last prefetch"""

    def __len__(self) -> int:
        return len(self.fences)

    def cell_of(self, lat: float, lon: float) -> int:
        """The H3 cell of a point at the index's resolution."""
        last = self._last
        if last[0] == lat and last[1] == lon:
            return last[2]
        cell: int = h3i.latlng_to_cell(lat, lon, self.resolution)
        self._last = (lat, lon, cell)
        return cell

    def holds(self, cell: int) -> bool:
        """Whether some fence is within one cell of ``cell``."""
        return cell in self._cells

    def prefetch(self, points: Iterable[tuple[float, float]]) -> None:
        """Look up many (lat, lon) points at once, a batch's fixes: what ``candidates`` then finds remembered.

        The exact tests of all the points go to shapely in one call. The points of the batch before stay
        remembered (they are the previous fixes of this one's), older ones are forgotten.
        """
        if not self.fences:
            return
        older = self._older = self._seen
        seen: dict[tuple[float, float], tuple[int, tuple[int, ...]]] = {}
        self._seen = seen
        cells, bounds, resolution = self._cells, self._bounds, self.resolution
        pending: list[tuple[tuple[float, float], int, tuple[int, ...], list[int]]] = []
        tested: list[int] = []
        xs: list[float] = []
        ys: list[float] = []
        for point in points:
            if point in seen:
                continue
            known = older.get(point)
            if known is not None:
                seen[point] = known
                continue
            lat, lon = point
            cell: int = h3i.latlng_to_cell(lat, lon, resolution)
            entry = cells.get(cell)
            if entry is None or not (entry[0] or entry[1]):
                seen[point] = (cell, ())
                continue
            near = [
                k
                for k in entry[1]
                if bounds[k][0] <= lon <= bounds[k][2] and bounds[k][1] <= lat <= bounds[k][3]
            ]
            if not near:
                seen[point] = (cell, entry[0])
                continue
            pending.append((point, cell, entry[0], near))
            tested += near
            xs += [lon] * len(near)
            ys += [lat] * len(near)
        if not pending:
            return
        hits = iter(shapely.intersects_xy(self._areas[tested], xs, ys).tolist())
        for point, cell, sure, near in pending:
            seen[point] = (cell, (*sure, *(k for k in near if next(hits))))

    def _known(self, point: tuple[float, float]) -> tuple[int, tuple[int, ...]] | None:
        """A point's cell and containing fences, if remembered."""
        known = self._seen.get(point)
        return self._older.get(point) if known is None else known

    def candidates(self, previous: Observation | None, obs: Observation) -> tuple[Set[int], Set[int]]:
        """(the fences containing ``obs``, the others the segment from ``previous`` may cross).

        The second are only candidates (bounding boxes meet); ``_crossed`` tests them exactly.
        """
        cells = self._cells
        last = self._last  # cell_of, inlined: this runs on every fix
        before = None
        if previous is not None:
            known = self._known((previous.lat, previous.lon))
            if known is not None:
                before = known[0]
            elif last[0] == previous.lat and last[1] == previous.lon:
                before = last[2]
            else:
                before = h3i.latlng_to_cell(previous.lat, previous.lon, self.resolution)
        point = (obs.lat, obs.lon)
        known = self._known(point)
        inside: Set[int]
        if known is None:
            cell: int = h3i.latlng_to_cell(obs.lat, obs.lon, self.resolution)
            entry = cells.get(cell)
            overlapped = entry is not None and bool(entry[0] or entry[1])
            inside = self._containing(entry, obs.lon, obs.lat) if entry is not None and overlapped else _NONE
            seen = self._seen
            if len(seen) >= SEEN_POINTS:  # looked up one by one, without prefetch: keep it bounded
                seen.clear()
            seen[point] = (cell, tuple(inside))
        else:
            cell, held = known
            inside = frozenset(held) if held else _NONE
            entry = cells.get(cell)
            overlapped = entry is not None and bool(entry[0] or entry[1])
        self._last = (obs.lat, obs.lon, cell)
        if previous is None or before is None or (previous.lat == obs.lat and previous.lon == obs.lon):
            return inside, _NONE
        if before == cell:  # within one cell: only the fences overlapping it
            if entry is None or not overlapped:
                return inside, _NONE
            return inside, self._crossable((entry,), False, previous, obs) - inside
        if h3i.are_neighbor_cells(before, cell):
            near = [e for e in (cells.get(before), entry) if e is not None]
        elif haversine_m(previous.lat, previous.lon, obs.lat, obs.lon) > CROSSING_MAX_M:
            return inside, _NONE
        else:
            near = [e for c in self._path(before, cell, previous, obs) if (e := cells.get(c)) is not None]
        if not near:
            return inside, _NONE
        return inside, self._crossable(near, True, previous, obs) - inside

    def _containing(self, entry: _Cell, lon: float, lat: float) -> Set[int]:
        sure, overlap, _, _ = entry
        inside = set(sure)
        bounds = self._bounds
        for k in overlap:
            west, south, east, north = bounds[k]
            if (
                west <= lon <= east
                and south <= lat <= north
                and shapely.intersects_xy(self.fences[k].area, lon, lat)
            ):
                inside.add(k)
        return inside

    def _crossable(
        self, entries: Sequence[_Cell], ring: bool, previous: Observation, obs: Observation
    ) -> set[int]:
        """The fences listed by ``entries`` (their ring too if ``ring``) whose bounds the segment meets."""
        x0, y0, x1, y1 = previous.lon, previous.lat, obs.lon, obs.lat
        west, east = min(x0, x1), max(x0, x1)
        south, north = min(y0, y1), max(y0, y1)
        bounds = self._bounds
        found: set[int] = set()
        for entry in entries:
            w, s, e, n = entry[3]
            if w > east or west > e or s > north or south > n:
                continue
            for group in (entry[0], entry[1], entry[2]) if ring else (entry[0], entry[1]):
                for k in group:
                    w, s, e, n = bounds[k]
                    if (
                        w <= east
                        and west <= e
                        and s <= north
                        and south <= n
                        and _meets(x0, y0, x1, y1, bounds[k])
                    ):
                        found.add(k)
        return found

    def _path(self, before: int, cell: int, previous: Observation, obs: Observation) -> list[int]:
        try:
            return list(h3i.grid_path_cells(before, cell))
        except h3.H3BaseException:  # across a pentagon's distortion: sample the segment instead
            steps = 1 + int(haversine_m(previous.lat, previous.lon, obs.lat, obs.lon) / 200.0)
            return [
                self.cell_of(
                    previous.lat + (obs.lat - previous.lat) * s / steps,
                    previous.lon + (obs.lon - previous.lon) * s / steps,
                )
                for s in range(steps + 1)
            ]

    def _union(self, fences: list[int]) -> _Bounds:
        boxes = [self._bounds[k] for k in fences]
        return (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )


def _meets(x0: float, y0: float, x1: float, y1: float, box: _Bounds) -> bool:
    """Whether the segment (x0, y0)-(x1, y1) meets the box (Liang-Barsky clipping): a diagonal segment
    whose bounds overlap a fence's may still pass beside it, and this is far cheaper than shapely."""
    west, south, east, north = box
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for p, q in ((-dx, x0 - west), (dx, east - x0), (-dy, y0 - south), (dy, north - y0)):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return False
    return True


def _cover(
    area: shapely.Polygon | shapely.MultiPolygon, resolution: int
) -> tuple[set[int], set[int], set[int]]:
    """(sure, overlapping, ring) cells of one fence."""
    shape = h3i.geo_to_h3shape(area)
    overlap = set(h3i.h3shape_to_cells_experimental(shape, resolution, "overlap"))
    full: set[int] = set()
    if _square_metres(area) > h3.average_hexagon_area(resolution, "m^2") / 3:  # else no cell fits inside
        full = set(h3i.h3shape_to_cells_experimental(shape, resolution, "full"))
    for x, y in _vertices(area):  # belt and braces: h3 and shapely may round a sliver differently
        overlap.add(h3i.latlng_to_cell(y, x, resolution))
    ring: set[int] = set()
    for cell in overlap - full:
        ring.update(h3i.grid_disk(cell, 1))
    sure = full - ring
    return sure, overlap - sure, ring - overlap


def _square_metres(area: shapely.Polygon | shapely.MultiPolygon) -> float:
    """Roughly (planar, in degrees scaled at the centroid): only to skip covers that cannot exist."""
    scale = METRES_PER_DEGREE**2 * math.cos(math.radians(area.centroid.y))
    return float(area.area) * scale


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

    A stay in a fence the index does not have is kept as it is, without an event: the operator deleted
    the fence (the bus did not leave it), or this process has not loaded it yet while another has (the
    bus's next fix, in a process that has it, must not enter it again).
    """
    if not index.fences:
        return state, []
    inside, crossed = index.candidates(previous, obs)
    if not inside and not crossed and not state.stays:  # the usual: near no fence, or in none, crossing none
        return state, []
    events: list[Event] = []
    kept: list[tuple[int | None, FenceStay]] = []
    stayed: set[int] = set()
    for stay in state.stays:
        k = index.by_id.get(stay.fence_id)
        if k is None:
            kept.append((None, stay))
            continue
        stayed.add(k)
        if k in inside:
            kept.append((k, stay))
        else:
            events.append(_exited(operator, obs, index.fences[k], stay))
    if crossed and previous is not None:
        segment = shapely.linestrings([(previous.lon, previous.lat), (obs.lon, obs.lat)])
        for k in sorted(crossed - stayed):
            events += _crossed(operator, previous, obs, segment, index.fences[k])
    for k in sorted(inside - stayed):
        events.append(_fence_event(operator, obs, index.fences[k], "geofence_entered"))
        kept.append((k, FenceStay(index.fences[k].fence_id, obs.time_ms)))
    stays = [
        stay if k is None else _inside(operator, obs, index.fences[k], stay, policy, events)
        for k, stay in kept
    ]
    if (
        not events
        and len(stays) == len(state.stays)
        and all(a is b for a, b in zip(stays, state.stays, strict=True))
    ):
        return state, events
    return FenceState(stays), events


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


def _crossed(
    operator: str, previous: Observation, obs: Observation, segment: shapely.LineString, fence: Fence
) -> list[Event]:
    """Enter and exit of a fence the ``segment`` from ``previous`` to ``obs`` crosses, if it does."""
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
