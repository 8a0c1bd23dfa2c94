"""Fences for ``fleet bench processing``: on the lines where buses meet them, then many more around.

The same fences begin every set: a station circle around each stop of the
feed and speed zones (corridors at 60 km/h, slower than the coaches) along
every line, so buses enter, dwell in, leave and speed through some. The
geofence bench's mix (``synthetic_fences``: station circles, depots,
corridors and restricted squares spread evenly over the demo lines' region)
fills the set to the count asked for, so a set ten times larger is ten
times denser where the buses drive: the bench's cost ratio includes the
extra fences buses really meet. Built through the GeoJSON importer
(``fence_from_feature``), so they are the fences ingest would hold; the same
count gives the same fences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fleet_devtools.synthetic_feed import point_at
from fleet_devtools.synthetic_fences import synthetic_fences
from fleet_processing.fence_geojson import fence_from_feature
from fleet_processing.geofences import Fence
from fleet_schemas.gtfs import Feed

STATION_RADIUS_M = 400.0
ZONE_EVERY_M = 25_000.0
"""a speed zone starts this far after the previous one along each line"""
ZONE_LENGTH_M = 3_000.0
ZONE_HALF_WIDTH_M = 150.0
ZONE_LIMIT_KMH = 60.0
SEED = 5


def bench_fences(feed: Feed, operator: str, count: int, *, report: Callable[[str], None]) -> list[Fence]:
    """``count`` fences: the feed's stations and speed zones first, then ``synthetic_fences``."""
    features = _stations(feed) + _speed_zones(feed)
    features += synthetic_fences(max(count - len(features), 0), SEED)["features"]
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
            f"stop-{s.stop_id}", "station", "Point", [s.lon, s.lat], radius_m=STATION_RADIUS_M, dwell_s=900
        )
        for s in feed.stops
    ]


def _speed_zones(feed: Feed) -> list[dict[str, Any]]:
    zones = []
    for shape in feed.shapes:
        starts = np.arange(ZONE_EVERY_M / 2, shape.dist_m[-1] - ZONE_LENGTH_M, ZONE_EVERY_M)
        for k, start in enumerate(starts):
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
