"""The GTFS-realtime builder against the validator's rules, for any live state (hypothesis).

Each test names the MobilityData gtfs-realtime-validator rules it proves
(RULES.md, https://github.com/MobilityData/gtfs-realtime-validator/blob/master/RULES.md);
``fleet_testing.gtfsrt_rules`` restates them as checks.
"""

from __future__ import annotations

import msgspec
from google.transit import gtfs_realtime_pb2 as rt
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_schemas.live import LivePosition
from fleet_schemas.trips import Calculated, StopEta, TripEtas
from fleet_serve.gtfsrt_build import STALE_MS, TRIP_BUFFER_M, StaticIds, trip_updates, vehicle_positions
from fleet_testing.gtfsrt_rules import pairing_violations, sequence_violations, violations

NOW_MS = 1_796_000_000_000
"""2026-12-01, a fixed clock for the properties"""
IDS = StaticIds(
    feed_id=1,
    route_of_trip={"t1": "r1", "t2": "r1", "t3": "r2"},
    stops=frozenset({"s1", "s2", "s3", "s4"}),
)
BUSES = st.sampled_from(["b1", "b2", "b3", "b4"])
TRIPS = st.sampled_from(["t1", "t2", "t3", "t-unknown"])
"""mostly known trips, and one the static feed does not have (E003)"""
STOPS = st.sampled_from(["s1", "s2", "s3", "s4"] * 4 + ["s-unknown"])
"""known stops, and now and then one the static feed does not have (E011)"""
TIMES = st.integers(NOW_MS - 2 * STALE_MS, NOW_MS + 90_000)
"""fix times from stale to past E050's 60 s ahead"""


@st.composite
def stop_etas(draw: st.DrawFn, ordered: bool) -> StopEta:
    """``ordered``: arrivals follow the sequence a minute apart, give or take 1.5 s (ties in seconds)."""
    sequence = draw(st.integers(0, 12))
    if ordered:
        arrival = NOW_MS + sequence * 60_000 + draw(st.integers(-1_500, 1_500))
    else:
        arrival = draw(st.integers(NOW_MS - 60_000, NOW_MS + 7_200_000))
    return StopEta(
        stop_sequence=sequence,
        stop_id=draw(STOPS),
        scheduled_arrival_ms=arrival + draw(st.integers(-900_000, 900_000)),
        scheduled_departure_ms=arrival + draw(st.integers(-900_000, 900_000)),
        arrival_ms=arrival,
        departure_ms=arrival + draw(st.integers(-2_000, 120_000)),
        arrival_early_ms=arrival - draw(st.integers(0, 600_000)),
        arrival_late_ms=arrival + draw(st.integers(0, 900_000)),
    )


@st.composite
def trip_etas(draw: st.DrawFn) -> TripEtas:
    time_ms = draw(TIMES)
    return TripEtas(
        operator="op",
        trip_id=draw(TRIPS),
        route_id="r1",
        start_date="20261201",
        start_time=draw(st.sampled_from(["08:00:00", "25:10:00"])),
        bus=draw(BUSES),
        feed_id=1,
        time_ms=time_ms,
        updated_ms=time_ms + draw(st.integers(0, 3_000)),
        delay_s=draw(st.floats(-600, 3_600)),
        stops=draw(st.lists(stop_etas(draw(st.booleans())), max_size=8)),
    )


@st.composite
def positions(draw: st.DrawFn) -> LivePosition:
    time_ms = draw(TIMES)
    assigned = draw(st.booleans())
    return LivePosition(
        operator="op",
        bus=draw(BUSES),
        device="d",
        seq=draw(st.integers(0, 100)),
        time_ms=time_ms,
        lat=draw(st.floats(-95, 95)),
        lon=draw(st.floats(-185, 185)),
        speed_mps=draw(st.none() | st.floats(0, 40)),
        heading_deg=draw(st.none() | st.floats(-10, 370)),
        received_ms=time_ms + draw(st.integers(0, 5_000)),
        calculated=Calculated(
            state="assigned" if assigned else draw(st.sampled_from(["candidate", "unassigned"])),
            trip_id=draw(TRIPS),
            start_date="20261201",
            start_time=draw(st.sampled_from(["08:00:00", "25:10:00"])),
            off_route_m=draw(st.none() | st.floats(0, 2 * TRIP_BUFFER_M)),
            next_stop_id=draw(STOPS),
            next_stop_sequence=draw(st.integers(0, 12)),
        ),
    )


STATES = st.tuples(st.lists(positions(), max_size=8), st.lists(trip_etas(), max_size=8))


@given(STATES)
@settings(max_examples=300)
def test_feeds_of_any_live_state_break_no_validator_rule(
    state: tuple[list[LivePosition], list[TripEtas]],
) -> None:
    """E001 POSIX seconds; E002 stop_sequence sorted; E003/E004/E011 trip, route, stop ids in the
    static feed; E012 header ≥ entity timestamps; E022 sequential stop times increase; E025
    departure not before arrival; E026 valid WGS84; E027 bearing 0..360; E041 a trip update has
    stop_time_updates; E043/E044 arrival or departure, each with time or delay; E047 a trip paired
    with one vehicle in both feeds; E048/E049 header timestamp and incrementality populated; E050
    no timestamp over 60 s ahead; E052 unique vehicle ids; W001 timestamps and W002 vehicle ids
    populated; W008 nothing older than 65 s."""
    live, etas = state
    vehicles = vehicle_positions(live, etas, IDS, NOW_MS)
    trips = trip_updates(etas, IDS, NOW_MS)
    assert violations(vehicles, IDS, NOW_MS) == []
    assert violations(trips, IDS, NOW_MS) == []
    assert pairing_violations(vehicles, trips) == []


@given(STATES)
def test_a_vehicle_off_its_shape_is_published_without_its_trip(
    state: tuple[list[LivePosition], list[TripEtas]],
) -> None:
    """E029: "The vehicle position should be within the buffer [200 m] of the GTFS shapes.txt data
    for the current trip unless there is an alert with the effect of DETOUR" (we publish none)."""
    live, etas = state
    for entity in vehicle_positions(live, etas, IDS, NOW_MS).entity:
        if entity.vehicle.HasField("trip"):
            assert any(
                p.calculated.off_route_m is None or p.calculated.off_route_m <= TRIP_BUFFER_M
                for p in _sources(live, entity.vehicle)
                if p.calculated is not None
            )


@given(STATES)
def test_speeds_are_published_as_measured(state: tuple[list[LivePosition], list[TripEtas]]) -> None:
    """W004 ("vehicle.position.speed has an unrealistic speed", over 26 m/s) is expected of coaches
    on motorways: speeds are passed in m/s unchanged, never clamped."""
    live, etas = state
    for entity in vehicle_positions(live, etas, IDS, NOW_MS).entity:
        vehicle = entity.vehicle
        if vehicle.position.HasField("speed"):
            assert any(
                abs(vehicle.position.speed - p.speed_mps) <= 1e-6 * max(1.0, p.speed_mps)
                for p in _sources(live, vehicle)
                if p.speed_mps is not None
            )


def _sources(live: list[LivePosition], vehicle: rt.VehiclePosition) -> list[LivePosition]:
    """the positions an entity may have been built from (its bus, its second)"""
    return [p for p in live if p.bus == vehicle.vehicle.id and p.time_ms // 1000 == vehicle.timestamp]


@given(STATES, st.lists(st.integers(1_000, 120_000), min_size=1, max_size=6), st.data())
def test_the_header_never_decreases_and_moves_with_the_content(
    state: tuple[list[LivePosition], list[TripEtas]], steps: list[int], data: st.DataObject
) -> None:
    """E017 ("the feed contents must not change without updating the header timestamp") and E018
    ("the header timestamp should be monotonically increasing"), as the clock moves by whole
    seconds (the header's resolution) and fixes arrive, each received when it is read. Holds
    while no record is ahead of the reading node's clock (a device clock ahead is documented)."""
    live = [p for p in state[0] if p.time_ms <= NOW_MS and (p.received_ms or 0) <= NOW_MS]
    etas = [t for t in state[1] if t.updated_ms <= NOW_MS]
    now_ms = NOW_MS
    previous = (vehicle_positions(live, etas, IDS, now_ms), trip_updates(etas, IDS, now_ms))
    for step in steps:
        now_ms += step
        arrived = data.draw(st.lists(positions(), max_size=3))
        live = live + [
            msgspec.structs.replace(
                p, time_ms=now_ms - (NOW_MS + 90_000 - p.time_ms) // 3, received_ms=now_ms
            )
            for p in arrived
        ]
        current = (vehicle_positions(live, etas, IDS, now_ms), trip_updates(etas, IDS, now_ms))
        for before, after in zip(previous, current, strict=True):
            assert sequence_violations(before, after) == []
        previous = current


@given(STATES, st.integers(0, 5_000))
def test_two_nodes_reading_the_same_state_answer_the_same_feed(
    state: tuple[list[LivePosition], list[TripEtas]], skew_ms: int
) -> None:
    """E017/E018 across `fleet serve` nodes: with fresh content, the header is derived from it, not
    from each node's clock, so the same Redis state gives the same bytes."""
    fresh = range(NOW_MS - STALE_MS + 5_000, NOW_MS + 1)
    live = [p for p in state[0] if p.time_ms in fresh and (p.received_ms or 0) in fresh]
    etas = [t for t in state[1] if t.time_ms in fresh and t.updated_ms in fresh]
    first = vehicle_positions(live, etas, IDS, NOW_MS), trip_updates(etas, IDS, NOW_MS)
    second = vehicle_positions(live, etas, IDS, NOW_MS + skew_ms), trip_updates(etas, IDS, NOW_MS + skew_ms)
    if live:
        assert second[0].SerializeToString() == first[0].SerializeToString()
    if etas:
        assert second[1].SerializeToString() == first[1].SerializeToString()
