"""Fences for ``fleet bench processing``: where an intercity operator draws them, in any number.

The same fences begin every set: a station circle around each stop of the
feed and speed zones (corridors at 60 km/h, slower than the coaches) along
every line, so buses enter, dwell in, leave and speed through some. Scattered
zones (depots, restricted areas, checkpoints, circles of 100 m to 1 km) fill
the set to the count asked for, uniformly over Algeria's extent, as an
operator with thousands of fences has them all over the country, most far
from any one bus; a larger set still puts more of them near the lines (ten
times the scattered fences, ten times as many on a bus's way), so the bench's
cost ratio includes the extra fences buses really meet. Built through the
GeoJSON importer (``fence_from_feature``), so they are the fences ingest
would hold; the same seed gives the same fences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fleet_devtools.synthetic_feed import point_at
from fleet_processing.fence_geojson import fence_from_feature
from fleet_processing.geofences import Fence
from fleet_schemas.gtfs import Feed

STATION_RADIUS_M = 400.0
ZONE_EVERY_M = 25_000.0
"""a speed zone starts this far after the previous one along each line"""
ZONE_LENGTH_M = 3_000.0
ZONE_HALF_WIDTH_M = 150.0
ZONE_LIMIT_KMH = 60.0
SCATTER_LAT = (19.0, 37.0)
SCATTER_LON = (-8.7, 12.0)
"""Algeria's extent (the demo-like lines run in its north)"""
SCATTERED_KINDS = ("depot", "restricted", "border")


def bench_fences(
    feed: Feed, operator: str, count: int, *, seed: int = 5, report: Callable[[str], None]
) -> list[Fence]:
    """``count`` fences: the feed's stations and speed zones first, then scattered zones."""
    features = _stations(feed) + _speed_zones(feed)
    rng = np.random.default_rng(seed)
    for k in range(max(count - len(features), 0)):
        lat, lon = rng.uniform(*SCATTER_LAT), rng.uniform(*SCATTER_LON)
        kind = SCATTERED_KINDS[k % len(SCATTERED_KINDS)]
        features.append(
            _feature(f"zone-{k}", kind, "Point", [lon, lat], radius_m=float(rng.uniform(100, 1_000)))
        )
    fences = []
    for number, feature in enumerate(features[:count]):
        fences.append(fence_from_feature(operator, feature, number))
        if (number + 1) % 2_000 == 0:
            report(f"fences: {number + 1:,}/{count:,} built")
    return fences


def _feature(fence_id: str, kind: str, geometry: str, coordinates: Any, **properties: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"id": fence_id, "kind": kind, **properties},
        "geometry": {"type": geometry, "coordinates": coordinates},
    }


def _stations(feed: Feed) -> list[dict[str, Any]]:
    return [
        _feature(
            f"station-{s.stop_id}", "station", "Point", [s.lon, s.lat], radius_m=STATION_RADIUS_M, dwell_s=900
        )
        for s in feed.stops
    ]


def _speed_zones(feed: Feed) -> list[dict[str, Any]]:
    zones = []
    for shape in feed.shapes:
        for k, start in enumerate(
            np.arange(ZONE_EVERY_M / 2, shape.dist_m[-1] - ZONE_LENGTH_M, ZONE_EVERY_M)
        ):
            line = [
                list(point_at(shape, float(d))[::-1]) for d in np.linspace(start, start + ZONE_LENGTH_M, 16)
            ]
            zones.append(
                _feature(
                    f"speed-{shape.shape_id}-{k}", "speed_zone", "LineString", line,
                    buffer_m=ZONE_HALF_WIDTH_M, speed_limit_kmh=ZONE_LIMIT_KMH,
                )
            )  # fmt: skip
    return zones
