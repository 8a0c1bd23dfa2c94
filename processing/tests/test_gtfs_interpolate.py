"""Blank stop times between timepoints."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_processing.gtfs.interpolate import fill_blank_times


@st.composite
def trips_with_blanks(draw: st.DrawFn) -> tuple[list[int | None], list[int | None], list[float]]:
    count = draw(st.integers(min_value=2, max_value=40))
    steps = draw(st.lists(st.floats(0, 5_000), min_size=count - 1, max_size=count - 1))
    positions = np.concatenate(([0.0], np.cumsum(steps))).tolist()
    waits = draw(st.lists(st.integers(0, 1_800), min_size=2 * count, max_size=2 * count))
    times = (draw(st.integers(0, 30 * 3600)) + np.cumsum(waits)).tolist()
    blanks = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    blanks[0] = blanks[-1] = False
    arrivals = [None if blank else int(times[2 * i]) for i, blank in enumerate(blanks)]
    departures = [None if blank else int(times[2 * i + 1]) for i, blank in enumerate(blanks)]
    return arrivals, departures, positions


@given(trips_with_blanks())
def test_interpolated_stop_times_never_decrease(
    trip: tuple[list[int | None], list[int | None], list[float]],
) -> None:
    arrivals, departures, positions = trip
    arr, dep, filled = fill_blank_times(arrivals, departures, np.asarray(positions))
    sequence = [t for pair in zip(arr, dep, strict=True) for t in pair]
    assert sequence == sorted(sequence)
    assert filled == [a is None for a in arrivals]
    assert [a for a, given_ in zip(arr, arrivals, strict=True) if given_ is not None] == [
        a for a in arrivals if a is not None
    ]


def test_blank_times_are_spread_by_distance_travelled() -> None:
    arr, dep, filled = fill_blank_times(
        [0, None, None, 1000], [100, None, None, 1000], np.array([0, 100, 800, 900])
    )
    assert arr == [0, 200, 900, 1000]
    assert dep == [100, 200, 900, 1000]
    assert filled == [False, True, True, False]


def test_blank_times_at_one_place_are_spread_evenly() -> None:
    arr, _, _ = fill_blank_times([0, None, None, 300], [0, None, None, 300], np.zeros(4))
    assert arr == [0, 100, 200, 300]


def test_a_stop_with_one_time_has_it_as_both() -> None:
    arr, dep, filled = fill_blank_times([0, None, 600], [0, 300, 600], np.array([0.0, 1.0, 2.0]))
    assert arr[1] == dep[1] == 300
    assert filled == [False, False, False]


def test_a_trip_without_a_time_at_an_end_is_refused() -> None:
    with pytest.raises(ValueError, match="first and last"):
        fill_blank_times([0, None], [0, None], np.array([0.0, 1.0]))
