"""The array haversine agrees with the scalar one the rest of the code measures with."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fleet_processing.geodesy import haversine_many
from fleet_schemas.geo import haversine_m

lats = st.floats(min_value=-89.9, max_value=89.9)
lons = st.floats(min_value=-180.0, max_value=180.0)
pairs = st.lists(st.tuples(lats, lons, lats, lons), min_size=1, max_size=20)


@given(pairs)
def test_each_distance_is_the_scalar_haversine_of_its_pair(
    rows: list[tuple[float, float, float, float]],
) -> None:
    a = np.array(rows, dtype=np.float64)
    got = haversine_many(a[:, 0], a[:, 1], a[:, 2], a[:, 3])
    want = [haversine_m(lat0, lon0, lat1, lon1) for lat0, lon0, lat1, lon1 in rows]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)
