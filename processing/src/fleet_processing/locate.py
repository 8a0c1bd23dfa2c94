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
    net: Network,
    shape: Ints,
    x: Floats,
    y: Floats,
    lo_m: Floats,
    hi_m: Floats,
    tolerance_m: Floats | None = None,
) -> tuple[Floats, Floats]:
    """Metres along and off each point's shape, its nearest point taken within [lo_m, hi_m] along it.

    With ``tolerance_m`` (a fix's accuracy), a stretch further back in the window that is nearly as
    near (within the tolerance, and more than twice it behind) wins over the nearest: on a road
    driven there and back the two legs coincide, and the fix cannot tell them apart, so the least
    progress is taken rather than a jump to the return leg.
    """
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
    chosen = _first_per_owner(np.flatnonzero(d2 <= best[owner]), owner)
    along_all = cum + t * dcum
    if tolerance_m is not None:
        tol = tolerance_m[owner]
        near = np.sqrt(d2) <= np.sqrt(best)[owner] + tol
        behind = along_all < along_all[chosen][owner] - 2 * tol
        earlier = np.flatnonzero(near & behind)
        if len(earlier):
            first = _first_per_owner(earlier, owner)
            chosen[owner[first]] = first
    return along_all[chosen], np.sqrt(d2[chosen])


def _first_per_owner(hits: Ints, owner: Ints) -> Ints:
    """The first of ``hits`` (sorted pair indices) of each owner that has one."""
    first: Ints = hits[np.concatenate([[True], owner[hits][1:] != owner[hits][:-1]])]
    return first


def near_runs(net: Network, x: float, y: float, radius_m: float) -> dict[int, list[float]]:
    """Per shape, metres along it of each stretch within ``radius_m`` of the point: its possible branches."""
    seg = net.segments_near(x, y, radius_m)
    if len(seg) == 0:
        return {}
    sx, sy, dx, dy = net.seg_x[seg], net.seg_y[seg], net.seg_dx[seg], net.seg_dy[seg]
    len2 = net.seg_len2[seg]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip(np.where(len2 > 0, ((x - sx) * dx + (y - sy) * dy) / len2, 0.0), 0.0, 1.0)
    d = np.hypot(x - (sx + t * dx), y - (sy + t * dy))
    along = net.seg_cum[seg] + t * net.seg_dcum[seg]
    shape = net.seg_shape[seg]
    breaks = np.flatnonzero((np.diff(seg) != 1) | (np.diff(shape) != 0)) + 1
    runs: dict[int, list[float]] = {}
    for a, b in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(seg)]]), strict=True):
        runs.setdefault(int(shape[a]), []).append(float(along[a + int(np.argmin(d[a:b]))]))
    return runs
