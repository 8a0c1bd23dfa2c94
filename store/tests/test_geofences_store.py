"""Geofences in the real PostgreSQL: imports in one transaction, versions that move only on change,
and ingest's indexes rebuilt from what was stored."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from fleet_ingest.fences import Fences, stored_fence
from fleet_processing.fence_geojson import fences_from_geojson
from fleet_processing.geofences import FENCE_KINDS
from fleet_store.geofences import (
    FenceNotFoundError,
    StoredFence,
    delete_all_fences,
    delete_fences,
    fence_versions,
    import_fences,
    list_fences,
)
from fleet_testing.database import run_on

pytestmark = pytest.mark.stack


def stored(fence_id: str, operator: str = "op-a", **changes: Any) -> StoredFence:
    fields: dict[str, Any] = {
        "operator": operator,
        "fence_id": fence_id,
        "name": f"Gare {fence_id}",
        "kind": "station",
        "geometry": {"type": "Point", "coordinates": [3.0866, 36.7347]},
        "properties": {"id": fence_id, "kind": "station", "radius_m": 200, "note": 'é \\ "quoted"'},
        "dwell_s": 600.0,
        **changes,
    }
    return StoredFence(**fields)


def test_an_import_stores_fences_as_given_and_a_second_of_the_same_changes_nothing(database_url: str) -> None:
    fences = [stored("a"), stored("b", kind="depot", speed_limit_mps=5.0, dwell_s=None)]

    async def work(conn: asyncpg.Connection) -> Any:
        first = await import_fences(conn, "op-a", fences)
        version = (await fence_versions(conn))["op-a"]
        again = await import_fences(conn, "op-a", fences)
        same = (await fence_versions(conn))["op-a"]
        return first, again, version, same, await list_fences(conn, "op-a")

    first, again, version, same, rows = run_on(database_url, work)
    assert (first.added, first.changed, first.unchanged, first.removed) == (2, 0, 0, 0)
    assert (again.added, again.changed, again.unchanged, again.removed) == (0, 0, 2, 0)
    assert same == version
    assert version.count == 2
    assert [r.fence_id for r in rows] == ["a", "b"]
    for row, fence in zip(rows, fences, strict=True):
        assert row.updated_ms > 0
        assert (row.geometry, row.properties, row.kind, row.dwell_s, row.speed_limit_mps) == (
            fence.geometry,
            fence.properties,
            fence.kind,
            fence.dwell_s,
            fence.speed_limit_mps,
        )


def test_a_changed_fence_moves_the_version_and_replace_removes_the_others(database_url: str) -> None:
    async def work(conn: asyncpg.Connection) -> Any:
        await import_fences(conn, "op-a", [stored("a"), stored("b"), stored("c")])
        await import_fences(conn, "op-b", [stored("a", operator="op-b")])
        before = await fence_versions(conn)
        changed = await import_fences(
            conn, "op-a", [stored("a", name="Caroubier"), stored("d")], replace=True
        )
        after = await fence_versions(conn)
        return before, changed, after, await list_fences(conn)

    before, changed, after, rows = run_on(database_url, work)
    assert (changed.added, changed.changed, changed.unchanged, changed.removed) == (1, 1, 0, 2)
    assert after["op-a"] != before["op-a"]
    assert after["op-b"] == before["op-b"]
    assert [(r.operator, r.fence_id, r.name) for r in rows] == [
        ("op-a", "a", "Caroubier"),
        ("op-a", "d", "Gare d"),
        ("op-b", "a", "Gare a"),
    ]


def test_the_version_moves_for_a_change_committed_after_a_later_one(database_url: str) -> None:
    """An import that began first but commits last writes the older updated_at: still seen."""

    async def work() -> Any:
        early, late = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
        try:
            await import_fences(early, "op-a", [stored("a"), stored("b")])
            slow = early.transaction()
            await slow.start()
            await import_fences(early, "op-a", [stored("a", name="changed first")])
            await asyncio.sleep(0.01)
            await import_fences(late, "op-a", [stored("b", name="changed second")])
            between = (await fence_versions(late))["op-a"]
            await slow.commit()
            return between, (await fence_versions(late))["op-a"]
        finally:
            await early.close()
            await late.close()

    between, after = asyncio.run(work())
    assert after != between


def test_a_failed_import_stores_nothing(database_url: str) -> None:
    async def work(conn: asyncpg.Connection) -> Any:
        await import_fences(conn, "op-a", [stored("a")])
        with pytest.raises(asyncpg.CheckViolationError):
            await import_fences(conn, "op-a", [stored("b"), stored("c", kind="airport")], replace=True)
        return await list_fences(conn)

    assert [r.fence_id for r in run_on(database_url, work)] == ["a"]


def test_every_fence_kind_of_the_detector_can_be_stored(database_url: str) -> None:
    async def work(conn: asyncpg.Connection) -> int:
        counts = await import_fences(conn, "op-a", [stored(kind, kind=kind) for kind in FENCE_KINDS])
        return counts.added

    assert run_on(database_url, work) == len(FENCE_KINDS)


def test_delete_takes_all_the_ids_named_or_none(database_url: str) -> None:
    async def work(conn: asyncpg.Connection) -> Any:
        await import_fences(conn, "op-a", [stored("a"), stored("b"), stored("c")])
        with pytest.raises(FenceNotFoundError, match="'zz'"):
            await delete_fences(conn, "op-a", ["a", "zz"])
        kept = [r.fence_id for r in await list_fences(conn, "op-a")]
        deleted = await delete_fences(conn, "op-a", ["a", "b"])
        everything = await delete_all_fences(conn, "op-a")
        return kept, deleted, everything, await fence_versions(conn)

    kept, deleted, everything, versions = run_on(database_url, work)
    assert kept == ["a", "b", "c"]
    assert (deleted, everything) == (2, 1)
    assert versions == {}


DEMO = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"id": "car", "kind": "station", "radius_m": 250, "dwell_s": 900},
            "geometry": {"type": "Point", "coordinates": [3.0866, 36.7347]},
        },
        {
            "type": "Feature",
            "properties": {"id": "town", "kind": "speed_zone", "buffer_m": 80, "speed_limit_kmh": 50},
            "geometry": {"type": "LineString", "coordinates": [[3.2442, 34.7], [3.263, 34.67]]},
        },
    ],
}


def _as_stored(operator: str, document: dict[str, Any]) -> list[StoredFence]:
    return [stored_fence(f) for f in fences_from_geojson(operator, document)]


def test_ingest_rebuilds_an_operators_index_only_when_its_fences_changed(database_url: str) -> None:
    async def work() -> Any:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            fences = Fences(refresh_s=0)
            async with pool.acquire() as conn:
                await import_fences(conn, "op-a", _as_stored("op-a", DEMO))
            await fences.refresh(pool)
            first = fences.indexes["op-a"]
            await fences.refresh(pool)
            unchanged = fences.indexes["op-a"]
            async with pool.acquire() as conn:
                await delete_fences(conn, "op-a", ["town"])
            await fences.refresh(pool)
            after_delete = fences.indexes["op-a"]
            async with pool.acquire() as conn:
                await delete_all_fences(conn, "op-a")
            await fences.refresh(pool)
            return first, unchanged, after_delete, dict(fences.indexes)
        finally:
            await pool.close()

    first, unchanged, after_delete, last = asyncio.run(work())
    assert [f.fence_id for f in first.fences] == ["car", "town"]
    original = fences_from_geojson("op-a", DEMO)
    assert [f.area.equals_exact(o.area, 0) for f, o in zip(first.fences, original, strict=True)] == [
        True,
        True,
    ]
    assert first.fences[1].speed_limit_mps == pytest.approx(50 / 3.6)
    assert unchanged is first
    assert [f.fence_id for f in after_delete.fences] == ["car"]
    assert last == {}
