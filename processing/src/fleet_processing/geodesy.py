"""Great-circle distances over numpy arrays: ``fleet_schemas.geo.haversine_m`` for many pairs at once.

The import measures every segment of every shape and the progress step every
span of a parked bus's recent fixes; one vectorised formula serves both, so
the two always agree with each other and with ``haversine_m`` within rounding.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fleet_schemas.geo import EARTH_RADIUS_M

Floats = npt.NDArray[np.float64]


def haversine_many(lat0: Floats, lon0: Floats, lat1: Floats, lon1: Floats) -> Floats:
    """Metres between each (lat0, lon0) and the (lat1, lon1) at the same index (degrees in)."""
    p0, p1 = np.radians(lat0), np.radians(lat1)
    h = np.sin((p1 - p0) / 2) ** 2 + np.cos(p0) * np.cos(p1) * np.sin(np.radians(lon1 - lon0) / 2) ** 2
    out: Floats = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(h)))
    return out
