"""Stops located on shapes in trip order: out-and-back, loops, stops listed out of order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_processing.gtfs.shapes import cumulative_m, locate_in_order


def _line(*points: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    xy = np.asarray(points, dtype=np.float64)
    steps = np.hypot(*np.diff(xy, axis=0).T)
    return xy, np.concatenate(([0.0], np.cumsum(steps)))


def test_out_and_back_stops_take_the_pass_that_comes_next() -> None:
    xy, m = _line((0, 0), (1000, 0), (1000, 10), (0, 10))
    stops = np.array([[200, 4], [800, 4], [800, 6], [200, 6]], dtype=np.float64)
    along, off = locate_in_order(xy, m, stops)
    assert along == pytest.approx([200, 800, 1210, 1810])
    assert off == pytest.approx([4, 4, 4, 4])


def test_a_loop_puts_the_terminus_at_both_ends() -> None:
    xy, m = _line((0, 0), (500, 0), (500, 500), (0, 500), (0, 0))
    along, _ = locate_in_order(xy, m, np.array([[1, 1], [500, 250], [1, 1]], dtype=np.float64))
    assert along == pytest.approx([1, 750, 1999])


def test_a_self_crossing_shape_keeps_stops_on_their_own_branch() -> None:
    # a figure of eight: the crossing at (500, 0) is passed twice
    xy, m = _line((0, -500), (1000, 500), (1000, -500), (0, 500))
    quarter = m[1] / 2
    stops = np.array([[500, 0], [1000, 0], [500, 0]], dtype=np.float64)
    along, _ = locate_in_order(xy, m, stops)
    assert along[0] == pytest.approx(quarter)
    assert along[2] == pytest.approx(m[2] + quarter)


def test_a_stop_listed_twice_stays_put_on_a_loop_that_passes_it_again() -> None:
    xy, m = _line((0, 0), (500, 0), (500, 500), (0, 500), (0, 3))
    along, _ = locate_in_order(xy, m, np.array([[5, 3], [5, 3], [500, 250]], dtype=np.float64))
    assert along == pytest.approx([5, 5, 750])


def test_a_stop_listed_out_of_order_stays_where_the_previous_one_was() -> None:
    xy, m = _line((0, 0), (1000, 0))
    along, off = locate_in_order(xy, m, np.array([[100, 0], [600, 0], [300, 0], [900, 0]], dtype=np.float64))
    assert along == pytest.approx([100, 600, 600, 900])
    assert off[2] == pytest.approx(300)


@given(
    st.lists(st.tuples(st.floats(-2000, 2000), st.floats(-2000, 2000)), min_size=2, max_size=30),
    st.lists(st.tuples(st.floats(-2500, 2500), st.floats(-2500, 2500)), min_size=1, max_size=20),
)
def test_positions_never_go_back_and_stay_on_the_line(
    vertices: list[tuple[float, float]], points: list[tuple[float, float]]
) -> None:
    xy, m = _line(*vertices)
    along, off = locate_in_order(xy, m, np.asarray(points, dtype=np.float64))
    assert np.all(np.diff(along) >= 0)
    assert np.all((along >= 0) & (along <= m[-1] + 1e-6))
    assert np.all(off >= 0)


def test_distances_along_a_shape_are_geodesic_metres() -> None:
    # one degree of latitude is about 111.2 km
    dist = cumulative_m(np.array([36.0, 36.5, 37.0]), np.array([3.0, 3.0, 3.0]))
    assert dist[0] == 0
    assert dist[-1] == pytest.approx(111_195, rel=1e-3)
