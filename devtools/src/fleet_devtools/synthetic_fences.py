"""Many geofences for benches: a GeoJSON FeatureCollection of ``count`` fences over northern Algeria.

The mix is what an operator draws: mostly station circles (100-300 m), some
depots (squares of 150-500 m), speed-zone corridors through towns (1-5 km,
60-100 m either side) and a few restricted polygons (1-3 km). They are
spread evenly over the demo lines' region, so a set ten times larger is ten
times denser where the buses drive (the hard case for the per-fix cost).
The same count and seed give the same fences.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fleet_devtools.synthetic_feed import METRES_PER_DEGREE

REGION = (32.4, -1.4, 36.9, 6.7)
"""south, west, north, east: the demo feed's lines, Ghardaïa to Algiers, Tlemcen to Constantine"""


def synthetic_fences(
    count: int, seed: int = 0, region: tuple[float, float, float, float] = REGION
) -> dict[str, Any]:
    """``count`` fences as a FeatureCollection ``fences_from_geojson`` takes."""
    rng = np.random.default_rng(seed)
    south, west, north, east = region
    features = []
    for k in range(count):
        lat, lon = float(rng.uniform(south, north)), float(rng.uniform(west, east))
        draw = rng.random()
        if draw < 0.7:
            features.append(
                _feature(
                    f"station-{k}", "station", _point(lon, lat), radius_m=rng.uniform(100, 300), dwell_s=1800
                )
            )
        elif draw < 0.85:
            features.append(
                _feature(f"depot-{k}", "depot", _square(lon, lat, rng.uniform(150, 500)), speed_limit_kmh=20)
            )
        elif draw < 0.95:
            length, heading = rng.uniform(1_000, 5_000), rng.uniform(0, 2 * math.pi)
            end = _moved(lon, lat, length * math.cos(heading), length * math.sin(heading))
            line = {"type": "LineString", "coordinates": [[lon, lat], list(end)]}
            features.append(
                _feature(f"zone-{k}", "speed_zone", line, buffer_m=rng.uniform(60, 100), speed_limit_kmh=50)
            )
        else:
            features.append(
                _feature(f"restricted-{k}", "restricted", _square(lon, lat, rng.uniform(1_000, 3_000)))
            )
    return {"type": "FeatureCollection", "features": features}


def _feature(fence_id: str, kind: str, geometry: dict[str, Any], **properties: Any) -> dict[str, Any]:
    values = {key: float(v) if isinstance(v, np.floating) else v for key, v in properties.items()}
    return {"type": "Feature", "properties": {"id": fence_id, "kind": kind, **values}, "geometry": geometry}


def _point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def _square(lon: float, lat: float, side_m: float) -> dict[str, Any]:
    corners = [
        _moved(lon, lat, e, n) for e, n in ((0, 0), (side_m, 0), (side_m, side_m), (0, side_m), (0, 0))
    ]
    return {"type": "Polygon", "coordinates": [[list(c) for c in corners]]}


def _moved(lon: float, lat: float, east_m: float, north_m: float) -> tuple[float, float]:
    return (
        lon + east_m / (METRES_PER_DEGREE * math.cos(math.radians(lat))),
        lat + north_m / METRES_PER_DEGREE,
    )
