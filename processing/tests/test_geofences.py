"""Geofences: GeoJSON parsing and its errors, the H3 candidate index, the enter/exit/dwell/overspeed step."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pyproj
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_devtools.synthetic_feed import METRES_PER_DEGREE
from fleet_processing.detection import DetectorPolicy, Observation
from fleet_processing.errors import InvalidFenceError
from fleet_processing.fence_geojson import fences_from_geojson
from fleet_processing.geofences import CROSSING_MAX_M, EMPTY_INDEX, Fence, FenceIndex, FenceState, fence_step
from fleet_schemas.events import Event
from fleet_schemas.geo import haversine_m

LAT0, LON0 = 36.75, 3.05
"""Algiers"""
POLICY = DetectorPolicy(overspeed_min_s=5.0)
T0 = 1_780_000_000_000


def at(east: float, north: float, lat0: float = LAT0, lon0: float = LON0) -> tuple[float, float]:
    """(lon, lat) of a point ``east``/``north`` metres from (lat0, lon0)."""
    return (
        lon0 + east / (METRES_PER_DEGREE * math.cos(math.radians(lat0))),
        lat0 + north / METRES_PER_DEGREE,
    )


def feature(fence_id: str, geometry: dict[str, Any], kind: str = "station", **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"id": fence_id, "kind": kind, **props}, "geometry": geometry}


def circle(fence_id: str, east: float, north: float, radius_m: float, **props: Any) -> dict[str, Any]:
    return feature(
        fence_id, {"type": "Point", "coordinates": list(at(east, north))}, radius_m=radius_m, **props
    )


def box(fence_id: str, west: float, south: float, east: float, north: float, **props: Any) -> dict[str, Any]:
    ring = [at(west, south), at(east, south), at(east, north), at(west, north), at(west, south)]
    return feature(fence_id, {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}, **props)


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def index_of(*features: dict[str, Any]) -> FenceIndex:
    return FenceIndex(fences_from_geojson("op", collection(*features)))


def fix(k: int, east: float, north: float, dt_ms: int = 10_000, speed: float | None = None) -> Observation:
    lon, lat = at(east, north)
    return Observation("bus-1", T0 + k * dt_ms, k, lat, lon, speed)


def fold(
    fixes: list[Observation],
    index: FenceIndex,
    policy: DetectorPolicy = POLICY,
    splits: set[int] | None = None,
) -> tuple[FenceState, list[Event]]:
    """Every fix through ``fence_step``; the state through msgpack before each fix in ``splits``."""
    state, previous, events = FenceState(), None, []
    for k, obs in enumerate(fixes):
        if splits is not None and k in splits:
            state = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=FenceState)
        state, found = fence_step(state, previous, obs, index, "op", policy)
        events += found
        previous = obs
    return state, events


def kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.kind, e.subject) for e in events]


# --- the detector -------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    radius=st.floats(50, 2_000),
    inside=st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 1), st.integers(1, 60_000)), min_size=1, max_size=30
    ),
    as_box=st.booleans(),
)
def test_a_bus_that_stays_inside_a_fence_never_gets_a_second_enter(
    radius: float, inside: list[tuple[float, float, int]], as_box: bool
) -> None:
    drawn = box("f", -radius, -radius, radius, radius) if as_box else circle("f", 0, 0, radius)
    index = index_of({**drawn, "properties": {**drawn["properties"], "dwell_s": 60, "speed_limit_kmh": 50}})
    fixes = [fix(0, -3 * radius, 0)]
    time_ms = fixes[0].time_ms
    for k, (angle, r, dt) in enumerate(inside, start=1):
        time_ms += dt
        d = 0.95 * radius * math.sqrt(r)
        lon, lat = at(d * math.cos(2 * math.pi * angle), d * math.sin(2 * math.pi * angle))
        fixes.append(Observation("bus-1", time_ms, k, lat, lon, 10.0 + 20 * angle))
    state, events = fold(fixes, index)
    assert [e.kind for e in events].count("geofence_entered") == 1
    assert not [e for e in events if e.kind == "geofence_exited"]
    assert [s.fence_id for s in state.stays] == ["f"]
    assert [e.kind for e in events].count("geofence_dwell") <= 1


WALK = st.lists(
    st.tuples(st.floats(-3_000, 3_000), st.floats(-3_000, 3_000), st.integers(1_000, 120_000)),
    min_size=2,
    max_size=40,
)
FENCES = st.lists(
    st.tuples(
        st.booleans(),
        st.floats(-2_500, 2_500),
        st.floats(-2_500, 2_500),
        st.floats(10, 1_500),
        st.floats(0.1, 3),
    ),
    min_size=1,
    max_size=8,
)


def fences_of(drawn: list[tuple[bool, float, float, float, float]]) -> FenceIndex:
    features = []
    for k, (is_circle, east, north, size, aspect) in enumerate(drawn):
        if is_circle:
            features.append(circle(f"c{k}", east, north, size, dwell_s=120, speed_limit_kmh=40))
        else:
            features.append(box(f"b{k}", east, north, east + size, north + size * aspect, dwell_s=60))
    return index_of(*features)


def walk_of(steps: list[tuple[float, float, int]]) -> list[Observation]:
    fixes, time_ms = [], T0
    for k, (east, north, dt) in enumerate(steps):
        time_ms += dt
        lon, lat = at(east, north)
        fixes.append(Observation("bus-1", time_ms, k, lat, lon, (dt % 37) * 1.0))
    return fixes


@settings(max_examples=80, deadline=None)
@given(drawn=FENCES, steps=WALK)
def test_enter_and_exit_alternate_per_fence_and_the_stays_are_the_fences_containing_the_fix(
    drawn: list[tuple[bool, float, float, float, float]], steps: list[tuple[float, float, int]]
) -> None:
    index = fences_of(drawn)
    state, previous = FenceState(), None
    seen: dict[str, list[str]] = {}
    for obs in walk_of(steps):
        state, events = fence_step(state, previous, obs, index, "op", POLICY)
        previous = obs
        for e in events:
            if e.kind in ("geofence_entered", "geofence_exited"):
                seen.setdefault(e.subject, []).append(e.kind)
        truth = {f.fence_id for f in index.fences if f.area.intersects(_point(obs))}
        assert {s.fence_id for s in state.stays} == truth
    for fence_id, sequence in seen.items():
        assert sequence[0::2] == ["geofence_entered"] * len(sequence[0::2]), fence_id
        assert sequence[1::2] == ["geofence_exited"] * len(sequence[1::2]), fence_id
        assert (sequence[-1] == "geofence_entered") == (fence_id in {s.fence_id for s in state.stays})


def _point(obs: Observation) -> shapely.Point:
    return shapely.Point(obs.lon, obs.lat)


POINT = st.tuples(st.floats(-3_000, 3_000), st.floats(-3_000, 3_000))


@settings(max_examples=150, deadline=None)
@given(drawn=FENCES, a=POINT, b=POINT)
def test_the_crossing_check_finds_every_fence_the_segment_crosses_and_no_other(
    drawn: list[tuple[bool, float, float, float, float]], a: tuple[float, float], b: tuple[float, float]
) -> None:
    """Against every fence tested by shapely: the H3 candidates miss none, near or far (up to 5 km)."""
    index = fences_of(drawn)
    first, second = fix(0, *a), fix(1, *b)
    _, events = fold([first, second], index)
    found = {e.subject for e in events if e.details.get("crossed")}
    segment = shapely.LineString([(first.lon, first.lat), (second.lon, second.lat)])
    truth = {
        f.fence_id
        for f in index.fences
        if f.area.intersects(segment)
        and not f.area.intersects(_point(first))
        and not f.area.intersects(_point(second))
    }
    if haversine_m(first.lat, first.lon, second.lat, second.lon) > CROSSING_MAX_M:
        truth = set()
    assert found == truth


@settings(max_examples=100, deadline=None)
@given(
    radius=st.floats(15, 300),
    before=st.floats(1.2, 8),
    after=st.floats(1.2, 8),
    offset=st.floats(-0.8, 0.8),
    heading=st.floats(0, 2 * math.pi),
    dt=st.integers(2_000, 300_000),
)
def test_a_bus_crossing_a_fence_between_two_fixes_gets_one_enter_and_one_exit(
    radius: float, before: float, after: float, offset: float, heading: float, dt: int
) -> None:
    """Both fixes outside a small fence, on either side of it, up to 2.4 km away (not neighbouring cells)."""
    index = index_of(circle("small", 0, 0, radius, kind="border"))
    cos, sin = math.cos(heading), math.sin(heading)
    side = (-sin * offset * radius, cos * offset * radius)
    a = fix(0, side[0] - cos * before * radius, side[1] - sin * before * radius, dt)
    b = fix(1, side[0] + cos * after * radius, side[1] + sin * after * radius, dt)
    state, events = fold([a, b], index)
    assert kinds(events) == [("geofence_entered", "small"), ("geofence_exited", "small")]
    assert all(e.details["crossed"] is True and e.time_ms == b.time_ms for e in events)
    exited = events[1].details
    assert a.time_ms < exited["entered_ms"] < exited["entered_ms"] + exited["dwell_s"] * 1000 < b.time_ms
    assert state.stays == []


@settings(max_examples=40, deadline=None)
@given(drawn=FENCES, steps=WALK, splits=st.sets(st.integers(0, 40)))
def test_the_same_fixes_give_the_same_events_whatever_the_split(
    drawn: list[tuple[bool, float, float, float, float]],
    steps: list[tuple[float, float, int]],
    splits: set[int],
) -> None:
    index = fences_of(drawn)
    fixes = walk_of(steps)
    whole_state, whole = fold(fixes, index)
    split_state, split = fold(fixes, index, splits=splits)
    assert whole == split
    assert msgspec.msgpack.encode(whole_state) == msgspec.msgpack.encode(split_state)
    _, rebuilt = fold(fixes, fences_of(drawn))  # another process builds its own index
    assert rebuilt == whole


def test_moving_from_one_fence_to_the_next_exits_before_it_enters() -> None:
    index = index_of(box("a", 0, 0, 100, 100), box("b", 300, 0, 400, 100), box("c", 150, 0, 250, 100))
    state, events = fold([fix(0, 50, 50), fix(1, 350, 50)], index)
    assert kinds(events) == [
        ("geofence_entered", "a"),
        ("geofence_exited", "a"),
        ("geofence_entered", "c"),
        ("geofence_exited", "c"),
        ("geofence_entered", "b"),
    ]
    assert [s.fence_id for s in state.stays] == ["b"]
    assert events[1].details == {
        "fence_id": "a",
        "fence_kind": "station",
        "name": "a",
        "entered_ms": T0,
        "dwell_s": 10.0,
    }


def test_dwell_is_raised_once_per_stay_when_inside_longer_than_the_fence_dwell() -> None:
    index = index_of(circle("depot", 0, 0, 200, kind="depot", dwell_s=600))
    parked = [fix(k, 5, 5, 60_000) for k in range(1, 25)]
    away = fix(25, 2_000, 0, 60_000)
    back = [fix(k, 0, 0, 60_000) for k in range(26, 40)]
    _, events = fold([fix(0, 0, 0, 60_000), *parked, away, *back], index)
    dwell = [e for e in events if e.kind == "geofence_dwell"]
    assert [e.time_ms for e in dwell] == [T0 + 11 * 60_000, T0 + 37 * 60_000]
    assert dwell[0].details["dwell_s"] == 660.0
    assert dwell[0].details["limit_s"] == 600.0
    assert dwell[1].details["entered_ms"] == T0 + 26 * 60_000


def test_overspeed_is_raised_once_per_episode_after_the_policy_duration() -> None:
    index = index_of(box("town", -5_000, -100, 5_000, 100, kind="speed_zone", speed_limit_kmh=50))
    speeds: list[float | None] = [10, 15, None, 30, 10, 16, 18, 25, 17, 12, 20, 20, 20]
    fixes = [fix(k, -4_000 + 30 * k, 0, 3_000, s) for k, s in enumerate(speeds)]
    _, events = fold(fixes, index, DetectorPolicy(overspeed_min_s=5.0))
    over = [e for e in events if e.kind == "overspeed"]
    # 50 km/h = 13.9 m/s: over from fix 1 (a fix without speed changes nothing; still over at 3 after
    # 6 s), again from 5 (over at 7 after 6 s); fixes 10-12 are over for 6 s too
    assert [e.time_ms for e in over] == [T0 + 3 * 3_000, T0 + 7 * 3_000, T0 + 12 * 3_000]
    assert over[0].details == {
        "fence_id": "town",
        "fence_kind": "speed_zone",
        "name": "town",
        "speed_mps": 30.0,
        "limit_mps": pytest.approx(50 / 3.6),
        "duration_s": 6.0,
    }
    assert over[1].details["speed_mps"] == 25.0


def test_a_fix_far_from_every_fence_returns_the_same_state_and_no_event() -> None:
    index = index_of(circle("far", 50_000, 0, 100))
    state = FenceState()
    assert fence_step(state, fix(0, 0, 0), fix(1, 100, 0), index, "op", POLICY) == (state, [])
    assert fence_step(state, None, fix(1, 100, 0), EMPTY_INDEX, "op", POLICY)[0] is state


def test_a_stay_in_a_fence_the_index_lacks_is_kept_without_an_event() -> None:
    """Deleted, or not loaded yet by this process: no exit, and no second enter once it is loaded."""
    both = index_of(circle("new", 0, 0, 100), circle("kept", 0, 0, 300))
    state, _ = fold([fix(0, 0, 0)], both)
    older = index_of(circle("kept", 0, 0, 300))
    after, events = fence_step(state, fix(0, 0, 0), fix(1, 0, 1), older, "op", POLICY)
    assert events == []
    assert [s.fence_id for s in after.stays] == ["new", "kept"]
    assert fence_step(after, fix(1, 0, 1), fix(2, 0, 2), EMPTY_INDEX, "op", POLICY) == (after, [])
    again, events = fence_step(after, fix(1, 0, 1), fix(2, 0, 2), both, "op", POLICY)
    assert events == []
    assert again is after


def test_a_segment_longer_than_the_crossing_limit_is_not_checked() -> None:
    index = index_of(circle("mid", 0, 0, 200))
    _, events = fold([fix(0, -3_000, 0), fix(1, 3_000, 0)], index)
    assert events == []


# --- the index ------------------------------------------------------------------------------------------


def test_every_point_of_a_fence_and_within_a_cell_of_it_finds_it_in_its_cell() -> None:
    """A long thin corridor is the hard case for a centroid polyfill: no cell centre may fall inside it."""
    drawn = feature(
        "road",
        {"type": "LineString", "coordinates": [list(at(-6_000, -50)), list(at(6_000, 80))]},
        "speed_zone",
        buffer_m=15,
    )
    index = index_of(drawn)
    for k in range(-600, 601):
        north = -50 + 130 * (k + 600) / 1200
        on = fix(0, 10 * k, north)
        assert index.candidates(None, on) == ({0}, set())
        left, right = fix(0, 10 * k, north - 400), fix(1, 10 * k, north + 400)  # within one cell (460 m)
        assert index.holds(index.cell_of(left.lat, left.lon))
        assert index.candidates(left, right) == (set(), {0})


def test_a_multipolygon_is_found_in_each_part_and_a_hole_is_outside() -> None:
    def ring(west: float, south: float, east: float, north: float) -> list[list[float]]:
        corners = [(west, south), (east, south), (east, north), (west, north), (west, south)]
        return [list(at(e, n)) for e, n in corners]

    parts = [[ring(0, 0, 3_000, 3_000), ring(1_000, 1_000, 2_000, 2_000)], [ring(10_000, 0, 10_300, 300)]]
    index = index_of(feature("two", {"type": "MultiPolygon", "coordinates": parts}, "restricted"))
    for east, north, inside in [(500, 500, True), (2_500, 2_900, True), (1_500, 1_500, False),
                                (10_150, 150, True), (6_000, 150, False)]:  # fmt: skip
        assert index.candidates(None, fix(0, east, north))[0] == ({0} if inside else set()), (east, north)


# --- parsing ---------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    lat=st.floats(-70, 70), lon=st.floats(-175, 175), radius=st.floats(5, 50_000), bearing=st.floats(0, 360)
)
def test_a_circle_is_its_radius_in_metres_anywhere(
    lat: float, lon: float, radius: float, bearing: float
) -> None:
    (fence,) = fences_from_geojson(
        "op", collection(feature("c", {"type": "Point", "coordinates": [lon, lat]}, radius_m=radius))
    )
    geod = pyproj.Geod(ellps="WGS84")
    for share, inside in ((0.99, True), (1.01, False)):
        x, y, _ = geod.fwd(lon, lat, bearing, share * radius)
        assert fence.area.intersects(shapely.Point(x, y)) is inside


def test_a_corridor_is_its_line_grown_by_the_buffer() -> None:
    (fence,) = fences_from_geojson(
        "op",
        collection(
            feature(
                "c",
                {"type": "LineString", "coordinates": [list(at(0, 0)), list(at(5_000, 0))]},
                buffer_m=100.0,
            )
        ),
    )
    for east in range(0, 5_001, 250):
        assert fence.area.intersects(shapely.Point(*at(east, 98)))
        assert not fence.area.intersects(shapely.Point(*at(east, -102)))
    assert haversine_m(*reversed(at(-99, 0)), *reversed(at(0, 0))) == pytest.approx(99, abs=1)


def test_a_valid_file_gives_its_fences_with_limits_in_si() -> None:
    data = msgspec.json.encode(
        collection(
            circle("st-1", 0, 0, 150, name="Gare routière", dwell_s=900, note="gate 3"),
            box("depot", 0, 0, 200, 200, kind="depot", speed_limit_kmh=18),
        )
    )
    st_1, depot = fences_from_geojson("op", data)
    assert (st_1.fence_id, st_1.name, st_1.kind, st_1.dwell_s, st_1.speed_limit_mps) == (
        "st-1",
        "Gare routière",
        "station",
        900.0,
        None,
    )
    assert st_1.properties == {"id": "st-1", "kind": "station", "radius_m": 150, "name": "Gare routière",
                               "dwell_s": 900, "note": "gate 3"}  # fmt: skip
    assert st_1.geometry == {"type": "Point", "coordinates": list(at(0, 0))}
    assert depot.speed_limit_mps == pytest.approx(5.0)
    assert isinstance(depot, Fence)
    assert depot.operator == "op"


def _with(geometry: dict[str, Any] | None = None, **props: Any) -> dict[str, Any]:
    base = {"id": "f1", "kind": "station", "radius_m": 100.0}
    properties = {k: v for k, v in {**base, **props}.items() if v is not ...}
    return collection({"type": "Feature", "properties": properties,
                       "geometry": geometry or {"type": "Point", "coordinates": [3.0, 36.0]}})  # fmt: skip


BOWTIE = {"type": "Polygon", "coordinates": [[[3, 36], [3.01, 36.01], [3.01, 36], [3, 36.01], [3, 36]]]}
SQUARE = [[3, 36], [3.01, 36], [3.01, 36.01], [3, 36.01], [3, 36]]


@pytest.mark.parametrize(
    ("document", "code", "feature_number"),
    [
        (b"{not json", "bad_geojson", None),
        ({"type": "Feature"}, "bad_geojson", None),
        (collection("nope"), "bad_geojson", 0),  # type: ignore[arg-type]
        (_with(id=...), "missing_fence_id", 0),
        (_with(id="has space"), "bad_fence_id", 0),
        (_with(id="ends\n"), "bad_fence_id", 0),
        (collection(circle("same", 0, 0, 10), circle("same", 50, 0, 10)), "duplicate_fence_id", 1),
        (_with(kind="airport"), "unknown_fence_kind", 0),
        (_with(kind=...), "unknown_fence_kind", 0),
        (_with(name=""), "bad_fence_property", 0),
        (_with(dwell_s=-1), "bad_fence_property", 0),
        (_with(speed_limit_kmh="fast"), "bad_fence_property", 0),
        (_with(note="a\x00b"), "bad_fence_property", 0),
        (_with(radius_m=0), "bad_fence_radius", 0),
        (_with(radius_m=...), "bad_fence_radius", 0),
        (_with(radius_m=True), "bad_fence_radius", 0),
        (_with({"type": "Polygon", "coordinates": [SQUARE]}), "bad_fence_radius", 0),
        (
            _with({"type": "LineString", "coordinates": [[3, 36], [3.1, 36]]}, radius_m=...),
            "bad_fence_buffer",
            0,
        ),
        (
            _with({"type": "LineString", "coordinates": [[3, 36], [3, 36]]}, radius_m=..., buffer_m=5),
            "bad_coordinates",
            0,
        ),
        (_with({"type": "MultiPoint", "coordinates": [[3, 36]]}, radius_m=...), "unsupported_geometry", 0),
        (_with({"type": "Point", "coordinates": [3]}), "bad_coordinates", 0),
        (_with({"type": "Point", "coordinates": [181, 36]}), "coordinates_out_of_range", 0),
        (_with({"type": "Point", "coordinates": [3, 1e400]}), "coordinates_out_of_range", 0),
        (_with({"type": "Point", "coordinates": [179.9, 0]}, radius_m=50_000), "coordinates_out_of_range", 0),
        (_with({"type": "Polygon", "coordinates": [SQUARE[:-1]]}, radius_m=...), "bad_coordinates", 0),
        (_with(BOWTIE, radius_m=...), "invalid_polygon", 0),
        (
            _with(
                {"type": "Polygon", "coordinates": [[[3, 36], [3.1, 36], [3.2, 36], [3, 36]]]}, radius_m=...
            ),
            "invalid_polygon",
            0,
        ),
        (
            _with(
                {"type": "Polygon", "coordinates": [[[0, 0], [6, 0], [6, 1], [0, 1], [0, 0]]]}, radius_m=...
            ),
            "fence_too_large",
            0,
        ),
        (
            _with(
                {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]]}, radius_m=...
            ),
            "fence_too_large",
            0,
        ),
    ],
)
def test_a_bad_fence_file_is_refused_with_a_code_naming_the_feature(
    document: Any, code: str, feature_number: int | None
) -> None:
    with pytest.raises(InvalidFenceError) as caught:
        fences_from_geojson("op", document)
    assert caught.value.code == code
    assert caught.value.feature == feature_number
    assert code in str(caught.value)


def test_a_self_intersecting_polygon_is_refused_with_the_place() -> None:
    with pytest.raises(InvalidFenceError, match=r"invalid_polygon: feature 0 \('f1'\): .*Self-intersection"):
        fences_from_geojson("op", _with(BOWTIE, radius_m=...))


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)
NUMBER = st.integers(-200, 200) | st.floats(-1e3, 1e3, allow_nan=False) | JSON
POSITION = st.lists(NUMBER, min_size=0, max_size=4)
GEOMETRY = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Point", "LineString", "Polygon", "MultiPolygon", "Circle"]) | JSON,
        "coordinates": POSITION
        | st.lists(POSITION, max_size=6)
        | st.lists(st.lists(POSITION, max_size=6), max_size=3)
        | st.lists(st.lists(st.lists(POSITION, max_size=6), max_size=2), max_size=2),
    }
)
PROPERTIES = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["a", "b"]) | JSON,
        "kind": st.sampled_from(["station", "depot"]) | JSON,
        "radius_m": NUMBER,
        "buffer_m": NUMBER,
        "dwell_s": NUMBER,
        "speed_limit_kmh": NUMBER,
        "name": JSON,
        "extra": JSON,
    },
)
FEATURE = st.fixed_dictionaries({"type": st.just("Feature") | JSON, "properties": PROPERTIES | JSON,
                                 "geometry": GEOMETRY | JSON})  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(document=JSON | st.builds(collection, FEATURE) | st.builds(collection, FEATURE, FEATURE))
def test_arbitrary_json_gives_fences_or_an_invalid_fence_error(document: Any) -> None:
    try:
        fences = fences_from_geojson("op", msgspec.json.encode(document))
    except InvalidFenceError as error:
        codes = {error.code}
    else:
        codes = {"ok"}
        FenceIndex(fences)
    assert InvalidFenceError.code not in codes  # every failure has its own precise code
