"""Geometry of the import: distances along shapes, stops located on them, shapes built from stops.

Distances along a shape are geodesic (haversine per segment), so they do not
depend on the projection. Locating a stop needs a plane: the feed is
projected once with pyproj into an azimuthal equidistant projection centred
on its stops (metres, little distortion over a country).

Stops are located in trip order: each at a pass of the line after the
previous stop's position, so on an out-and-back or looping shape that passes
a stop twice, the stop takes the pass that comes first after its
predecessor. Passes within ``TOLERANCE_M`` count as equally close (the
earliest wins); a stop listed out of order stays at its predecessor's
position rather than dragging the rest of the trip down the line (a dynamic
programme over the passes, ``_best_path``). shapely's ``line_locate_point``
finds the globally nearest point only, so it cannot honour the order; the
search is written here with numpy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pyproj import Transformer

from fleet_processing.geodesy import haversine_many

Floats = npt.NDArray[np.float64]

TOLERANCE_M = 15.0
"""passes of the line within this of a stop are equally good: the earliest is taken"""
MAX_PASSES = 8
"""passes of the line considered per stop (a shape rarely passes one place more often)"""
KEEP = 16
"""partial paths kept per stop"""
CHUNK_CELLS = 1_000_000
"""pairs of a stop and a segment measured at once: bounds the memory a long shape with many stops takes"""
EARLIER = 1e-3
"""metres of cost of a position at the line's end (less before it): breaks ties towards the earliest pass"""


def metric_projection(lats: Floats, lons: Floats) -> Transformer:
    """WGS84 (lon, lat) to metres in an azimuthal equidistant projection centred on these points."""
    lat0 = float((lats.min() + lats.max()) / 2)
    lon0 = float((lons.min() + lons.max()) / 2)
    return Transformer.from_crs(
        "EPSG:4326", f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m", always_xy=True
    )


def project(transformer: Transformer, lats: Floats, lons: Floats) -> Floats:
    """(n, 2) metres."""
    x, y = transformer.transform(lons, lats)
    return np.column_stack((np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)))


def cumulative_m(lats: Floats, lons: Floats) -> Floats:
    """Metres from the first point at every point (haversine per segment), from 0, never decreasing."""
    steps = haversine_many(lats[:-1], lons[:-1], lats[1:], lons[1:])
    return np.concatenate(([0.0], np.cumsum(steps)))


def locate_in_order(line_xy: Floats, line_m: Floats, points_xy: Floats) -> tuple[Floats, Floats]:
    """Metres along the line and metres off it of each point, in order, never going back along the line.

    ``line_m`` gives the distance along the line at each vertex (it may be
    geodesic while ``line_xy`` is projected: a position inside a segment is
    scaled to it).
    """
    # a point repeating the one before it (a stop listed twice) is at the same place on the line
    new = np.ones(len(points_xy), dtype=bool)
    new[1:] = np.any(points_xy[1:] != points_xy[:-1], axis=1)
    distinct = points_xy[new]
    passes: list[Pass] = []
    rows = max(1, CHUNK_CELLS // max(len(line_xy) - 1, 1))
    for first in range(0, len(distinct), rows):
        passes += _passes(line_xy, line_m, distinct[first : first + rows])
    along, off = _best_path(distinct, passes, float(line_m[-1]))
    index = np.cumsum(new) - 1
    return along[index], off[index]


Pass = tuple[Floats, Floats, Floats]
"""the passes of the line near one point: metres along, metres off, and the (k, 2) nearest points"""


def _passes(line_xy: Floats, line_m: Floats, points_xy: Floats) -> list[Pass]:
    """Per point, where the line passes closest (local minima of the distance per segment), nearest first."""
    starts = line_xy[:-1]
    vectors = line_xy[1:] - starts
    squared = np.einsum("ij,ij->i", vectors, vectors)
    rel = points_xy[:, None, :] - starts[None, :, :]
    t = np.clip(np.einsum("psk,sk->ps", rel, vectors) / np.where(squared > 0, squared, 1.0), 0.0, 1.0)
    gap = rel - t[:, :, None] * vectors[None, :, :]
    dist = np.hypot(gap[..., 0], gap[..., 1])
    padded = np.pad(dist, ((0, 0), (1, 1)), constant_values=np.inf)
    local = (dist < padded[:, :-2]) & (dist <= padded[:, 2:])
    seg_m = np.diff(line_m)
    found: list[Pass] = []
    for i, row in enumerate(dist):
        minima = np.flatnonzero(local[i])
        segs = minima[np.argsort(row[minima], kind="stable")[:MAX_PASSES]]
        ts = t[i, segs]
        found.append((line_m[segs] + ts * seg_m[segs], row[segs], starts[segs] + ts[:, None] * vectors[segs]))
    return found


def _best_path(points_xy: Floats, passes: list[Pass], length: float) -> tuple[Floats, Floats]:
    """Dynamic programming over the passes of the line near each point, positions never decreasing.

    Each point may take a pass after the previous point's position, or stay
    at that position (a stop listed out of order, or off the line); the
    path with the least distance off the line wins, passes within
    TOLERANCE_M counting as on it (staying never does), and among equal ones
    the earliest positions. The best KEEP paths are kept per point, so the
    work stays linear in the number of stops.
    """

    def cost(off: Floats, along: Floats, slack: float = TOLERANCE_M) -> Floats:
        return np.maximum(off - slack, 0.0) + EARLIER * along / max(length, 1.0)

    alone = [int(np.argmin(cost(pass_off, pass_along))) for pass_along, pass_off, _ in passes]
    best_along = np.asarray([p[0][k] for p, k in zip(passes, alone, strict=True)])
    if np.all(np.diff(best_along) > 0):
        # each point's own best pass already comes in order: no path can do better
        return best_along, np.asarray([p[1][k] for p, k in zip(passes, alone, strict=True)])
    steps: list[tuple[Floats, Floats, npt.NDArray[np.intp]]] = []
    along = off = total = xy = np.empty(0)
    for i, (point, (pass_along, pass_off, pass_xy)) in enumerate(zip(points_xy, passes, strict=True)):
        count = len(pass_along)
        if i == 0:
            along, off, xy, total = pass_along, pass_off, pass_xy, cost(pass_off, pass_along)
            back = np.zeros(count, dtype=np.intp)
        else:
            options = np.where(along[None, :] < pass_along[:, None], total[None, :], np.inf)
            choice = np.argmin(options, axis=1)
            stay_off = np.hypot(*(point - xy).T)
            totals = np.concatenate(
                (
                    cost(pass_off, pass_along) + options[np.arange(count), choice],
                    total + cost(stay_off, along, slack=0.0),
                )
            )
            back = np.concatenate((choice, np.arange(len(along))))
            along, off = np.concatenate((pass_along, along)), np.concatenate((pass_off, stay_off))
            xy = np.concatenate((pass_xy, xy))
            keep = np.argsort(totals, kind="stable")[:KEEP]
            keep = keep[np.isfinite(totals[keep])]
            along, off, xy, total, back = along[keep], off[keep], xy[keep], totals[keep], back[keep]
        steps.append((along, off, back))
    picked = int(np.argmin(total))
    result_along = np.empty(len(steps))
    result_off = np.empty(len(steps))
    for i in range(len(steps) - 1, -1, -1):
        step_along, step_off, step_back = steps[i]
        result_along[i], result_off[i] = step_along[picked], step_off[picked]
        picked = int(step_back[picked])
    return result_along, result_off
