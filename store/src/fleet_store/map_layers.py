"""What the live map draws of an operator's active feed: each route's shapes and the stops.

Read straight from the active version's tables, one query each (the Accra
feed's thousands of stops come back in one round trip); the map's API
(``fleet_serve.map.layers``) turns the rows into GeoJSON.
"""

from __future__ import annotations

import msgspec

from fleet_store.gtfs import Connection


class RouteShape(msgspec.Struct, frozen=True, kw_only=True):
    """One shape a route's trips follow, with the trips that follow it."""

    route_id: str
    short_name: str | None
    long_name: str | None
    color: str | None
    """GTFS ``route_color``, six hex digits without ``#`` (None: not given)"""
    shape_id: str
    lats: list[float]
    lons: list[float]
    trip_ids: list[str]


class MapStop(msgspec.Struct, frozen=True, kw_only=True):
    stop_id: str
    name: str | None
    lat: float
    lon: float


_SHAPES = """
SELECT r.route_id, r.short_name, r.long_name, r.color, s.shape_id, s.lats, s.lons,
       array_agg(t.trip_id ORDER BY t.trip_id) AS trip_ids
FROM gtfs_feeds f
JOIN gtfs_trips t ON t.feed_id = f.id
JOIN gtfs_routes r ON r.feed_id = f.id AND r.route_id = t.route_id
JOIN gtfs_shapes s ON s.feed_id = f.id AND s.shape_id = t.shape_id
WHERE f.operator = $1 AND f.state = 'active'
GROUP BY r.route_id, r.short_name, r.long_name, r.color, s.shape_id, s.lats, s.lons
ORDER BY r.route_id, s.shape_id
"""

_STOPS = """
SELECT s.stop_id, s.name, s.lat, s.lon
FROM gtfs_feeds f JOIN gtfs_stops s ON s.feed_id = f.id
WHERE f.operator = $1 AND f.state = 'active' AND s.location_type = 0
ORDER BY s.stop_id
"""


async def route_shapes(conn: Connection, operator: str) -> list[RouteShape]:
    """Every (route, shape) pair of the operator's active feed; empty without one."""
    rows = await conn.fetch(_SHAPES, operator)
    return [
        RouteShape(
            route_id=r["route_id"],
            short_name=r["short_name"],
            long_name=r["long_name"],
            color=r["color"],
            shape_id=r["shape_id"],
            lats=list(r["lats"]),
            lons=list(r["lons"]),
            trip_ids=list(r["trip_ids"]),
        )
        for r in rows
    ]


async def stops(conn: Connection, operator: str) -> list[MapStop]:
    """The stops (location type 0) of the operator's active feed; empty without one."""
    rows = await conn.fetch(_STOPS, operator)
    return [MapStop(stop_id=r["stop_id"], name=r["name"], lat=r["lat"], lon=r["lon"]) for r in rows]
