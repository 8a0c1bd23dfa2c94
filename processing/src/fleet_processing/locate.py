"""Where points are along shapes: nearest point of a shape within a window of distances along it.

A fix is projected only onto the part of its shape between ``lo_m`` and
``hi_m`` metres along (around the bus's previous progress), so a loop, an
out-and-back or a self-crossing shape cannot send it to the other branch the
way a nearest-point search over the whole line would (shapely's
``line_locate_point`` has no such window, hence this module). The windows of
a batch are ragged (each covers its own number of segments); they are
flattened into one array of (fix, segment) pairs and solved with numpy in
one pass. Ties go to the earliest segment, so progress never overshoots.
"""

from __future__ import annotations

import numpy as np

from fleet_processing.network import KEY_STRIDE_M, Network
from fleet_processing.plan import Floats, Ints


def locate(
    net: Network, shape: Ints, x: Floats, y: Floats, lo_m: Floats, hi_m: Floats
) -> tuple[Floats, Floats]:
    """Metres along and off each point's shape, its nearest point taken within [lo_m, hi_m] along it."""
    n = len(shape)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    first, last = net.vertex_start[shape], net.vertex_start[shape + 1] - 1
    base = shape * KEY_STRIDE_M
    start = np.searchsorted(net.vertex_key, base + lo_m, side="right") - 1
    stop = np.searchsorted(net.vertex_key, base + hi_m, side="left")
    start = np.clip(start, first, last)
    stop = np.clip(stop, start + 1, last + 1)
    counts = stop - start
    owner = np.repeat(np.arange(n), counts)
    offsets = np.cumsum(counts) - counts
    seg = np.arange(int(counts.sum())) - np.repeat(offsets - start, counts)

    px, py = x[owner], y[owner]
    sx, sy, dx, dy = net.seg_x[seg], net.seg_y[seg], net.seg_dx[seg], net.seg_dy[seg]
    len2, cum, dcum = net.seg_len2[seg], net.seg_cum[seg], net.seg_dcum[seg]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(len2 > 0, ((px - sx) * dx + (py - sy) * dy) / len2, 0.0)
        t_lo = np.where(dcum > 0, (lo_m[owner] - cum) / dcum, 0.0)
        t_hi = np.where(dcum > 0, (hi_m[owner] - cum) / dcum, 1.0)
    t = np.clip(t, np.clip(t_lo, 0.0, 1.0), np.clip(t_hi, 0.0, 1.0))
    ex, ey = px - (sx + t * dx), py - (sy + t * dy)
    d2 = ex * ex + ey * ey

    best = np.minimum.reduceat(d2, offsets)
    hit = np.flatnonzero(d2 <= best[owner])
    first_hit = hit[np.concatenate([[True], owner[hit][1:] != owner[hit][:-1]])]
    along = cum[first_hit] + t[first_hit] * dcum[first_hit]
    return along, np.sqrt(d2[first_hit])


def near_runs(net: Network, shape: int, x: float, y: float, radius_m: float) -> list[float]:
    """Metres along ``shape`` of each stretch within ``radius_m`` of the point: every branch it may be on."""
    lo, hi = int(net.vertex_start[shape]), int(net.vertex_start[shape + 1])
    sx, sy, dx, dy = net.seg_x[lo:hi], net.seg_y[lo:hi], net.seg_dx[lo:hi], net.seg_dy[lo:hi]
    len2 = net.seg_len2[lo:hi]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip(np.where(len2 > 0, ((x - sx) * dx + (y - sy) * dy) / len2, 0.0), 0.0, 1.0)
    d = np.hypot(x - (sx + t * dx), y - (sy + t * dy))
    along = net.seg_cum[lo:hi] + t * net.seg_dcum[lo:hi]
    near = d <= radius_m
    if not near.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], near.astype(np.int8), [0]])))
    return [float(along[a + int(np.argmin(d[a:b]))]) for a, b in zip(edges[::2], edges[1::2], strict=True)]
