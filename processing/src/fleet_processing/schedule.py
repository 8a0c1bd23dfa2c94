"""What the timetable says at a point along a trip, and how late a bus there is.

Between two stops the scheduled time is interpolated by distance from the
first stop's departure to the next one's arrival; within ``radius_m`` of a
stop it is the stop's whole dwell, [arrival, departure], so a bus waiting at
a station until its departure time is on time, not growing late. Before the
first stop it is the first departure, past the last stop the last arrival.
Vectorized over many buses on many plans with one sorted key, as in
``fleet_processing.locate``.
"""

from __future__ import annotations

import numpy as np

from fleet_processing.network import KEY_STRIDE_M, Network
from fleet_processing.plan import Floats, Ints


def scheduled_window(net: Network, plan: Ints, along_m: Floats, radius_m: float) -> tuple[Floats, Floats]:
    """When a bus should be at ``along_m``: seconds from the origin, before any frequency offset."""
    first, last = net.stop_start[plan], net.stop_start[plan + 1] - 1
    i = np.clip(np.searchsorted(net.stop_key, plan * KEY_STRIDE_M + along_m, side="right") - 1, first, last)
    j = np.minimum(i + 1, last)
    d_i, d_j = net.stop_dist[i], net.stop_dist[j]
    arr_i, dep_i = net.stop_arrival_s[i], net.stop_departure_s[i]
    arr_j, dep_j = net.stop_arrival_s[j], net.stop_departure_s[j]
    span = d_j - d_i
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(span > 0, np.clip((along_m - d_i) / span, 0.0, 1.0), 0.0)
    between = dep_i + frac * (arr_j - dep_i)
    at_i = (np.abs(along_m - d_i) <= radius_m) | (along_m <= d_i) | (i == last)
    at_j = ~at_i & (d_j - along_m <= radius_m)
    lo = np.where(at_i, arr_i, np.where(at_j, arr_j, between))
    hi = np.where(at_i, dep_i, np.where(at_j, dep_j, between))
    return lo.astype(np.float64), hi.astype(np.float64)


def delay_s(time_ms: Ints, base_ms: Ints, lo_s: Floats, hi_s: Floats) -> Floats:
    """Seconds late (positive) or early (negative) against [lo_s, hi_s] counted from ``base_ms``; 0 inside."""
    s = (time_ms - base_ms) / 1000.0
    return np.where(s > hi_s, s - hi_s, np.where(s < lo_s, s - lo_s, 0.0))
