"""Small feeds with awkward shapes and buses driving them with known truth, for the progress tests."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date
from typing import Any

import numpy as np

from fleet_devtools.synthetic_feed import METRES_PER_DEGREE, LineSpec, densify, feed_of, fix_at, truth_along
from fleet_processing.network import Network, build_network
from fleet_processing.progress import (
    PROGRESS_DECODER,
    PROGRESS_ENCODER,
    BusFixes,
    FixPoint,
    Progressed,
    advance_batch,
)
from fleet_processing.service_day import origin_ms
from fleet_schemas.frames import Frame
from fleet_schemas.gtfs import Feed, StopTime

DAY = date(2026, 12, 1)
TZ = "Africa/Algiers"
ORIGIN_MS = origin_ms(DAY, TZ)
LAT0, LON0 = 36.75, 3.05


def metres(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(east, north) metres from a point in Algiers to (lat, lon)."""
    scale = METRES_PER_DEGREE * math.cos(math.radians(LAT0))
    return [(LAT0 + n / METRES_PER_DEGREE, LON0 + e / scale) for e, n in points]


SHAPES: dict[str, list[tuple[float, float]]] = {
    "loop": metres([(0, 0), (2000, 0), (2000, 2000), (0, 2000), (0, 0)]),
    "out-and-back": metres([(0, 5000), (3000, 5000), (0, 5000)]),
    "figure-eight": metres([(5000, 0), (7000, 2000), (7000, 0), (5000, 2000)]),
    "straight": metres([(0, -3000), (4000, -3000)]),
}
"""a loop back to its start, a road driven there and back on the same line, a line crossing itself, a
straight road (its lines may also be driven the other way); kilometres apart, so only a line's own
branches compete"""


def line(
    shape: str,
    *,
    name: str | None = None,
    departures_s: list[int] | None = None,
    stops: int = 5,
    frequency: tuple[int, int, int] | None = None,
    reverse: bool = False,
) -> LineSpec:
    """A line on one of ``SHAPES`` (vertices every 50 m), stops evenly spaced, 12 m/s, 60 s dwell."""
    return LineSpec(
        name=name or shape,
        points=densify(SHAPES[shape][::-1] if reverse else SHAPES[shape], 50.0),
        stops_at=[k / (stops - 1) for k in range(stops)],
        speed_mps=12.0,
        dwell_s=60,
        departures_s=departures_s if departures_s is not None else [8 * 3600, 9 * 3600, 10 * 3600],
        frequency=frequency,
    )


def network(lines: list[LineSpec]) -> tuple[Feed, Network]:
    feed = feed_of(lines, service_date=DAY, tz=TZ)
    return feed, build_network(feed, operator="test", feed_id=7)


def rows_of(feed: Feed, trip_id: str) -> list[StopTime]:
    return [r for r in feed.stop_times if r.trip_id == trip_id]


def drive(
    feed: Feed,
    trip_id: str,
    seconds: Iterator[float] | list[float],
    *,
    late_s: float = 0.0,
    noise_m: float = 0.0,
    accuracy_m: float = 10.0,
    seed: int = 0,
    offset_s: int = 0,
    named: bool = False,
) -> tuple[list[FixPoint], list[float]]:
    """Fixes (and the truth) of a bus ``late_s`` late on ``trip_id``, at ``seconds`` from the origin."""
    rng = np.random.default_rng(seed)
    rows = rows_of(feed, trip_id)
    trip = next(t for t in feed.trips if t.trip_id == trip_id)
    shape = next(s for s in feed.shapes if s.shape_id == trip.shape_id)
    fixes, truth = [], []
    for s in seconds:
        along = truth_along(rows, s - late_s - offset_s)
        lat, lon = fix_at(shape, along, noise_m, rng)
        fixes.append(
            FixPoint(
                ORIGIN_MS + round(s * 1000),
                lat,
                lon,
                accuracy_m=accuracy_m,
                trip_id=trip_id if named else None,
            )
        )
        truth.append(along)
    return fixes, truth


def detour(
    feed: Feed, trip_id: str, start_s: float, *, off_m: float, fixes: int, named: bool
) -> tuple[list[FixPoint], list[FixPoint], list[FixPoint], list[float]]:
    """A bus driving ``trip_id`` from ``start_s`` for 150 s, then ``fixes`` fixes 10 s apart ``off_m`` north
    of where it left its road, then 90 s more of the trip from there, as late as the detour took.

    Returns the fixes before, away and back, and the truth (metres along) of those back.
    """
    before, _ = drive(feed, trip_id, every(start_s, start_s + 150, 10), named=named)
    last, north = before[-1], off_m / METRES_PER_DEGREE
    away = [
        FixPoint(last.time_ms + k * 10_000, last.lat + north, last.lon, accuracy_m=10.0, trip_id=last.trip_id)
        for k in range(1, fixes + 1)
    ]
    late = (fixes + 1) * 10
    back, truth = drive(
        feed, trip_id, every(start_s + 150 + late, start_s + 240 + late, 10), late_s=late, named=named
    )
    return before, away, back, truth


def run(
    net: Network,
    fixes: list[FixPoint],
    *,
    per_batch: int = 1,
    bus: str = "bus-1",
    roundtrip: bool = True,
    trace: bool = False,
) -> list[Progressed]:
    """Feed ``fixes`` to ``advance_batch`` ``per_batch`` at a time, the state through msgpack in between."""
    out: list[Progressed] = []
    previous = None
    for k in range(0, len(fixes), per_batch):
        chunk = fixes[k : k + per_batch]
        (result,) = advance_batch(net, [BusFixes(bus, previous, chunk)], chunk[-1].time_ms, trace=trace)
        previous = (
            PROGRESS_DECODER.decode(PROGRESS_ENCODER.encode(result.progress))
            if roundtrip
            else result.progress
        )
        out.append(result)
    return out


def every(start_s: float, end_s: float, step_s: float) -> list[float]:
    return list(np.arange(start_s, end_s, step_s))


TWO_DEPARTURES = [8 * 3600, 8 * 3600 + 1800]
"""the straight line's departures in the replay scenarios"""


def coaches_on_the_straight_line(feed: Feed) -> tuple[list[FixPoint], list[FixPoint]]:
    """Two coaches on the straight line (``TWO_DEPARTURES``), a fix every 5 s, both stopping at 08:42.

    The first drives ``straight-0`` and goes silent 11 minutes mid-trip (longer than the offline
    timeout), then sits at the terminus; the second drives ``straight-1`` 2 minutes late.
    """
    before = drive(feed, "straight-0", every(7 * 3600 + 59 * 60, 8 * 3600 + 5 * 60, 5.0), seed=3)[0]
    after = drive(feed, "straight-0", every(8 * 3600 + 16 * 60, 8 * 3600 + 42 * 60, 5.0), seed=4)[0]
    late = drive(feed, "straight-1", every(8 * 3600 + 28 * 60, 8 * 3600 + 42 * 60, 5.0), late_s=120, seed=5)[
        0
    ]
    return before + after, late


def straight_line_fences() -> dict[str, Any]:
    """GeoJSON fences on the straight line: a station circle (dwell 30 s) and a 40 km/h zone."""
    (lat, lon), (s_lat, w_lon), (n_lat, e_lon) = metres([(2_000, -3_000), (500, -3_200), (1_500, -2_800)])
    ring = [[w_lon, s_lat], [e_lon, s_lat], [e_lon, n_lat], [w_lon, n_lat], [w_lon, s_lat]]
    station = {"id": "station-mid", "kind": "station", "radius_m": 200, "dwell_s": 30}
    zone = {"id": "town-40", "kind": "speed_zone", "speed_limit_kmh": 40}
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": station,
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
            },
            {"type": "Feature", "properties": zone, "geometry": {"type": "Polygon", "coordinates": [ring]}},
        ],
    }


def frames_of(device: str, bus: str, fixes: list[FixPoint], speed_mps: float = 12.0) -> list[Frame]:
    """A device's frames of these fixes, sequences from 1, at the lines' speed (exact in a 4-byte float)."""
    return [
        Frame(
            device=device,
            bus=bus,
            seq=n + 1,
            time_ms=f.time_ms,
            lat=f.lat,
            lon=f.lon,
            accuracy_m=f.accuracy_m,
            speed_mps=speed_mps,
            trip_id=f.trip_id,
        )
        for n, f in enumerate(fixes)
    ]
