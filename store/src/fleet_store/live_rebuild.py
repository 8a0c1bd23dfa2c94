"""The live positions rebuilt from PostgreSQL, for a Redis that lost its keys (a new server, a lost disk).

Ingest writes each moving bus's position again with its next frame, so a
Redis that comes back empty fills itself for those; a parked or silent bus
would stay off the map until it moves. ``rebuild_live`` writes, for every bus
whose newest frame PostgreSQL received within the live TTL, that frame as its
live position, through the same forward-only compare-and-set as ingest: it
never moves a bus that already has a newer one back. What processing keeps
per bus (trip progress, detector state) is not written here: ingest rebuilds
it from the stored frames when a bus's next frame finds none
(``fleet_ingest.reprocess.recovered_states``).
"""

from __future__ import annotations

import time

import asyncpg

from fleet_schemas.live import LivePosition
from fleet_store.live import LiveState

_NEWEST = """
SELECT DISTINCT ON (operator, bus)
       operator, bus, device, seq, time, lat, lon, speed_mps, heading_deg, accuracy_m, trip_id, received_at,
       battery_pct, charging
FROM positions
WHERE operator = $1 AND received_at > now() - make_interval(secs => $2)
ORDER BY operator, bus, time DESC, seq DESC
"""


async def rebuild_live(conn: asyncpg.Connection, live: LiveState, operator: str, ttl_s: float) -> int:
    """Write each recent bus's newest stored frame of ``operator`` as its live position; how many buses."""
    rows = await conn.fetch(_NEWEST, operator, float(ttl_s))
    positions = [
        LivePosition(
            operator=r["operator"],
            bus=r["bus"],
            device=r["device"],
            seq=r["seq"],
            time_ms=round(r["time"].timestamp() * 1000),
            lat=r["lat"],
            lon=r["lon"],
            speed_mps=r["speed_mps"],
            heading_deg=r["heading_deg"],
            accuracy_m=r["accuracy_m"],
            trip_id=r["trip_id"],
            received_ms=round(r["received_at"].timestamp() * 1000),
            battery_pct=r["battery_pct"],
            charging=r["charging"],
        )
        for r in rows
    ]
    if positions:
        await live.update(positions, int(time.time() * 1000))
    return len(positions)
