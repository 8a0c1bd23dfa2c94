"""Each operator's geofences in PostgreSQL (``geofences``, migration 013): import, list, delete, load.

A fence is stored as drawn (its GeoJSON geometry and properties) beside the
few columns a listing reads; ``fleet_processing.fence_geojson`` validated it
before it came here and rebuilds it in ingest. An import is one transaction:
every fence of the file is upserted, and with ``replace`` the operator's
fences not in the file are deleted, so a failed import changes nothing.

A write that changes nothing (the same file imported twice) keeps the row's
``updated_at``, so :func:`fence_versions` (per operator, the count and an XOR
of a hash of each fence's id and ``updated_at``) moves only when a fence was
added, changed or deleted, and ingest rebuilds an operator's index only then.
Not the newest ``updated_at``: a transaction that began earlier but commits
later writes an older one, and a change hidden behind it would never be seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from fleet_store.errors import FleetError

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_JSON = msgspec.json.Encoder()
_OBJECT = msgspec.json.Decoder(dict[str, Any])


class FenceNotFoundError(FleetError):
    """A fence id the operator does not have (nothing was deleted)."""

    code = "fence_not_found"


class StoredFence(msgspec.Struct, frozen=True, kw_only=True):
    """One fence as stored: the drawing, and what a listing shows of it."""

    operator: str
    fence_id: str
    name: str
    kind: str
    geometry: dict[str, Any]
    """the GeoJSON geometry as drawn"""
    properties: dict[str, Any]
    """the GeoJSON properties as given (``radius_m``, ``buffer_m``, ``speed_limit_kmh``, the operator's)"""
    dwell_s: float | None = None
    speed_limit_mps: float | None = None
    updated_ms: int = 0

    def feature(self) -> dict[str, Any]:
        """The GeoJSON Feature it was imported from."""
        return {"type": "Feature", "properties": self.properties, "geometry": self.geometry}


class ImportCounts(msgspec.Struct, frozen=True):
    """What one import did to an operator's fences."""

    operator: str
    added: int
    changed: int
    unchanged: int
    removed: int
    """deleted because ``replace`` was asked and the file does not have them"""


class FenceVersion(msgspec.Struct, frozen=True, array_like=True):
    """Moves whenever one of an operator's fences is added, changed or deleted."""

    count: int
    digest: int
    """XOR of a 64-bit hash of each fence's (id, updated_at): any changed row changes it"""


_UPSERT = """
INSERT INTO geofences (operator, fence_id, name, kind, geometry, properties, dwell_s, speed_limit_mps)
SELECT $1::text, * FROM unnest($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[], $7::float8[],
                               $8::float8[])
ON CONFLICT (operator, fence_id) DO UPDATE SET
    name = excluded.name, kind = excluded.kind, geometry = excluded.geometry,
    properties = excluded.properties, dwell_s = excluded.dwell_s,
    speed_limit_mps = excluded.speed_limit_mps, updated_at = now()
WHERE (geofences.name, geofences.kind, geofences.geometry, geofences.properties, geofences.dwell_s,
       geofences.speed_limit_mps)
      IS DISTINCT FROM (excluded.name, excluded.kind, excluded.geometry, excluded.properties,
                        excluded.dwell_s, excluded.speed_limit_mps)
RETURNING (xmax = 0) AS added
"""
_SELECT = (
    "SELECT operator, fence_id, name, kind, geometry::text, properties::text, dwell_s, speed_limit_mps,"
    " (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms FROM geofences"
)


async def import_fences(
    conn: Connection, operator: str, fences: Sequence[StoredFence], *, replace: bool = False
) -> ImportCounts:
    """Upsert ``fences`` as ``operator``'s in one transaction; with ``replace``, delete the others."""
    for fence in fences:
        if fence.operator != operator:
            raise ValueError(f"fence {fence.fence_id!r} is {fence.operator!r}'s, not {operator!r}'s")
    async with conn.transaction():
        removed = 0
        if replace:
            status = await conn.execute(
                "DELETE FROM geofences WHERE operator = $1 AND NOT fence_id = ANY($2::text[])",
                operator,
                [f.fence_id for f in fences],
            )
            removed = int(status.split()[-1])
        rows = await conn.fetch(
            _UPSERT,
            operator,
            [f.fence_id for f in fences],
            [f.name for f in fences],
            [f.kind for f in fences],
            [_JSON.encode(f.geometry).decode() for f in fences],
            [_JSON.encode(f.properties).decode() for f in fences],
            [f.dwell_s for f in fences],
            [f.speed_limit_mps for f in fences],
        )
    added = sum(1 for r in rows if r["added"])
    return ImportCounts(operator, added, len(rows) - added, len(fences) - len(rows), removed)


async def list_fences(conn: Connection, operator: str | None = None) -> list[StoredFence]:
    """Every fence (of one operator if given), by operator and id."""
    rows = await conn.fetch(
        f"{_SELECT} WHERE $1::text IS NULL OR operator = $1 ORDER BY operator, fence_id", operator
    )
    return [
        StoredFence(
            operator=r["operator"],
            fence_id=r["fence_id"],
            name=r["name"],
            kind=r["kind"],
            geometry=_OBJECT.decode(r["geometry"]),
            properties=_OBJECT.decode(r["properties"]),
            dwell_s=r["dwell_s"],
            speed_limit_mps=r["speed_limit_mps"],
            updated_ms=r["updated_ms"],
        )
        for r in rows
    ]


async def delete_fences(conn: Connection, operator: str, fence_ids: Sequence[str]) -> int:
    """Delete some of an operator's fences, all or none: FenceNotFoundError names those it lacks."""
    async with conn.transaction():
        deleted = await conn.fetch(
            "DELETE FROM geofences WHERE operator = $1 AND fence_id = ANY($2::text[]) RETURNING fence_id",
            operator,
            list(fence_ids),
        )
        missing = sorted(set(fence_ids) - {r["fence_id"] for r in deleted})
        if missing:
            raise FenceNotFoundError(f"operator {operator!r} has no fence {', '.join(map(repr, missing))}")
    return len(deleted)


async def delete_all_fences(conn: Connection, operator: str) -> int:
    """Delete every fence of an operator; how many there were."""
    status = await conn.execute("DELETE FROM geofences WHERE operator = $1", operator)
    return int(status.split()[-1])


async def fence_versions(conn: Connection) -> dict[str, FenceVersion]:
    """Each operator with fences and its version, cheap enough to ask every few seconds."""
    rows = await conn.fetch(
        "SELECT operator, count(*) AS n,"
        " bit_xor(hashtextextended(fence_id || '@' || updated_at::text, 0)) AS digest"
        " FROM geofences GROUP BY operator"
    )
    return {r["operator"]: FenceVersion(r["n"], r["digest"]) for r in rows}
