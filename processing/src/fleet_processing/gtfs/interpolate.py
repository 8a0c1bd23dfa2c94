"""Blank stop times between timepoints, filled in proportion to the distance travelled.

GTFS lets a feed give times only at timepoints; the stops between are served
"somewhere in between". Each blank run is spread over the time from the last
timed stop's departure to the next one's arrival, in proportion to the
position given (the feed's shape_dist_traveled when the trip has it, else
metres along the shape), or evenly by stop count when the positions do not
move (several stops at one place). Times are rounded to whole seconds, which
keeps them non-decreasing.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def fill_blank_times(
    arrivals: list[int | None], departures: list[int | None], positions: Floats
) -> tuple[list[int], list[int], list[bool]]:
    """Both times of every stop, and which were interpolated.

    A stop with one time has it as both; the first and last stops must have
    a time (ValueError otherwise: the caller reports missing_trip_edge).
    """
    arr = [a if a is not None else d for a, d in zip(arrivals, departures, strict=True)]
    dep = [d if d is not None else a for a, d in zip(arrivals, departures, strict=True)]
    if arr[0] is None or arr[-1] is None:
        raise ValueError("the first and last stops of a trip need times")
    timed = [i for i, value in enumerate(arr) if value is not None]
    filled = [value is None for value in arr]
    for left, right in itertools.pairwise(timed):
        if right - left < 2:
            continue
        start, end = dep[left], arr[right]
        assert start is not None
        assert end is not None
        span = positions[left : right + 1] - positions[left]
        total = float(span[-1])
        share = span / total if total > 0 else np.linspace(0.0, 1.0, right - left + 1)
        times = np.round(start + share * (end - start)).astype(np.int64)
        for i in range(left + 1, right):
            arr[i] = dep[i] = int(times[i - left])
    return [int(a) for a in arr if a is not None], [int(d) for d in dep if d is not None], filled
