"""Synthetic feeds and buses driving them, with known truth, for tests and ``fleet bench processing``.

A ``LineSpec`` is a polyline with stops at fractions of its length, a
running speed, a dwell and departures (or one frequency); ``feed_of`` turns
lines into a normalized ``fleet_schemas.gtfs.Feed`` exactly as the importer
would hand it (both times on every stop, ``dist_m`` along every shape).
``truth_along`` is where an on-schedule bus (shifted by a delay) is at a
time, and ``fix_at`` the fix it reports there, with noise of a given size.
``demo_like_feed`` is five intercity lines between real Algerian towns,
densified to a vertex every 200 m like a road traced from OpenStreetMap.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from fleet_schemas.geo import haversine_m
from fleet_schemas.gtfs import Agency, Calendar, Feed, Frequency, Route, Shape, Stop, StopTime, Trip

METRES_PER_DEGREE = 111_320.0
TZ = "Africa/Algiers"


@dataclass(frozen=True)
class LineSpec:
    """One route with one shape, its stops and its trips."""

    name: str
    points: list[tuple[float, float]]
    """(lat, lon) vertices"""
    stops_at: list[float]
    """fractions of the length where stops are, increasing, 0 first and 1 last"""
    speed_mps: float = 20.0
    dwell_s: int = 0
    departures_s: list[int] = field(default_factory=list)
    """first departures, seconds from the service day's origin"""
    frequency: tuple[int, int, int] | None = None
    """(start_s, end_s, headway_s): one template trip, expanded at run time"""


def shape_of(spec: LineSpec) -> Shape:
    """The line's polyline with its distances in metres (haversine, as the importer measures)."""
    lats = [p[0] for p in spec.points]
    lons = [p[1] for p in spec.points]
    dist = [0.0]
    for (la0, lo0), (la1, lo1) in zip(spec.points, spec.points[1:], strict=False):
        dist.append(dist[-1] + haversine_m(la0, lo0, la1, lo1))
    return Shape(shape_id=f"{spec.name}-shape", lats=lats, lons=lons, dist_m=dist)


def point_at(shape: Shape, along_m: float) -> tuple[float, float]:
    """(lat, lon) at ``along_m`` metres along the shape."""
    return float(np.interp(along_m, shape.dist_m, shape.lats)), float(
        np.interp(along_m, shape.dist_m, shape.lons)
    )


def stop_times_of(spec: LineSpec, shape: Shape, trip_id: str, start_s: int) -> list[StopTime]:
    """Times of one trip: running at ``speed_mps`` between stops, ``dwell_s`` at each intermediate one."""
    length = shape.dist_m[-1]
    rows = []
    for k, fraction in enumerate(spec.stops_at):
        d = fraction * length
        arrival = start_s + round(d / spec.speed_mps) + max(k - 1, 0) * spec.dwell_s
        last = k == len(spec.stops_at) - 1
        departure = arrival if k == 0 or last else arrival + spec.dwell_s
        if k == 0:
            arrival = departure = start_s
        rows.append(
            StopTime(
                trip_id=trip_id,
                stop_sequence=k + 1,
                stop_id=f"{spec.name}-s{k}",
                arrival_s=arrival,
                departure_s=departure,
                dist_m=d,
            )
        )
    return rows


def feed_of(lines: list[LineSpec], *, service_date: date, tz: str = TZ) -> Feed:
    """A one-agency feed running every line every day of ``service_date``'s year."""
    stops, shapes, trips, stop_times, frequencies = [], [], [], [], []
    for spec in lines:
        shape = shape_of(spec)
        shapes.append(shape)
        for k, fraction in enumerate(spec.stops_at):
            lat, lon = point_at(shape, fraction * shape.dist_m[-1])
            stops.append(Stop(stop_id=f"{spec.name}-s{k}", lat=lat, lon=lon, name=f"{spec.name} {k}"))
        starts = [spec.frequency[0]] if spec.frequency else spec.departures_s
        for n, start in enumerate(starts):
            trip_id = f"{spec.name}-{n}"
            trips.append(
                Trip(
                    trip_id=trip_id,
                    route_id=spec.name,
                    service_id="daily",
                    shape_id=shape.shape_id,
                    direction_id=0,
                )
            )
            stop_times.extend(stop_times_of(spec, shape, trip_id, start))
        if spec.frequency:
            start, end, headway = spec.frequency
            frequencies.append(
                Frequency(trip_id=f"{spec.name}-0", start_s=start, end_s=end, headway_s=headway)
            )
    year = service_date.year
    return Feed(
        agencies=[Agency(agency_id="synthetic", name="Synthetic", url="https://example.org", timezone=tz)],
        routes=[
            Route(route_id=s.name, agency_id="synthetic", route_type=3, short_name=s.name) for s in lines
        ],
        stops=stops,
        shapes=shapes,
        trips=trips,
        stop_times=stop_times,
        calendars=[
            Calendar(
                service_id="daily", days=(True,) * 7, start_date=date(year, 1, 1), end_date=date(year, 12, 31)
            )
        ],
        frequencies=frequencies,
    )


def truth_along(rows: list[StopTime], seconds: float) -> float:
    """Metres along the trip of a bus keeping exactly to ``rows`` at ``seconds`` from the origin."""
    times = [t for r in rows for t in (r.arrival_s, r.departure_s)]
    dists = [r.dist_m for r in rows for _ in (0, 1)]
    return float(np.interp(seconds, times, dists))


def fix_at(shape: Shape, along_m: float, noise_m: float, rng: np.random.Generator) -> tuple[float, float]:
    """(lat, lon) reported at ``along_m``, off by a random error of at most ``noise_m`` metres."""
    lat, lon = point_at(shape, along_m)
    angle, radius = rng.uniform(0, 2 * math.pi), noise_m * math.sqrt(rng.uniform(0, 1))
    lat += radius * math.sin(angle) / METRES_PER_DEGREE
    lon += radius * math.cos(angle) / (METRES_PER_DEGREE * math.cos(math.radians(lat)))
    return lat, lon


def densify(
    points: list[tuple[float, float]], step_m: float, wiggle_m: float = 0.0
) -> list[tuple[float, float]]:
    """Vertices every ``step_m`` along ``points``, swayed sideways up to ``wiggle_m`` like a real road."""
    out = [points[0]]
    travelled = 0.0
    for (la0, lo0), (la1, lo1) in itertools.pairwise(points):
        n = max(1, round(haversine_m(la0, lo0, la1, lo1) / step_m))
        north, east = la1 - la0, lo1 - lo0
        norm = math.hypot(north, east) or 1.0
        for k in range(1, n + 1):
            f = k / n
            travelled += step_m
            sway = wiggle_m * math.sin(travelled / 5_000.0 * 2 * math.pi) * (k < n) / METRES_PER_DEGREE
            out.append((la0 + f * north + sway * east / norm, lo0 + f * east - sway * north / norm))
    return out


TOWNS: dict[str, list[tuple[float, float]]] = {
    "alger-oran": [
        (36.7347, 3.0866),
        (36.4621, 2.7389),
        (36.2642, 2.2214),
        (36.1653, 1.3346),
        (35.6971, -0.6308),
    ],
    "alger-constantine": [
        (36.7347, 3.0866),
        (36.5622, 3.6000),
        (36.0800, 4.7600),
        (36.1900, 5.4100),
        (36.3650, 6.6147),
    ],
    "alger-bejaia": [(36.7347, 3.0866), (36.7300, 3.8800), (36.7167, 4.0500), (36.7500, 5.0667)],
    "oran-tlemcen": [(35.6971, -0.6308), (35.3000, -1.1400), (34.8783, -1.3150)],
    "alger-ghardaia": [
        (36.7347, 3.0866),
        (36.4700, 2.8300),
        (36.2640, 2.7500),
        (34.6700, 3.2500),
        (32.4900, 3.6700),
    ],
}
"""bus stations and towns on the way (public coordinates), Alger's Caroubier station first"""


def demo_like_feed(service_date: date, *, step_m: float = 200.0) -> Feed:
    """Five intercity lines, both ways, every 30 minutes from 05:00 to 20:00, stops about every 40 km."""
    lines = []
    for name, towns in TOWNS.items():
        for suffix, route in (("", towns), ("-back", towns[::-1])):
            points = densify(route, step_m, wiggle_m=150.0)
            length = sum(haversine_m(*a, *b) for a, b in itertools.pairwise(points))
            n_stops = max(2, round(length / 40_000) + 1)
            lines.append(
                LineSpec(
                    name=name + suffix,
                    points=points,
                    stops_at=[k / (n_stops - 1) for k in range(n_stops)],
                    speed_mps=22.0,
                    dwell_s=300,
                    departures_s=list(range(5 * 3600, 20 * 3600 + 1, 1800)),
                )
            )
    return feed_of(lines, service_date=service_date)
