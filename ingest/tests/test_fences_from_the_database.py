"""Ingest's detectors with fences from the real PostgreSQL: the demo file stored, loaded, raising events."""

from __future__ import annotations

import asyncio
import csv
from typing import Any

import asyncpg
import pytest

from fleet_devtools.demo_feed import feed_dir
from fleet_devtools.synthetic_feed import densify
from fleet_ingest.detectors import Detectors
from fleet_ingest.fences import stored_fence
from fleet_processing.detect import BusState, detect_bus
from fleet_processing.detection import DetectorPolicy, Observation
from fleet_processing.fence_geojson import fences_from_geojson
from fleet_store.geofences import import_fences

pytestmark = pytest.mark.stack

OPERATOR = "demo-dz"


def _coach_from_algiers() -> list[Observation]:
    """The Alger - Oran shape's first 20 km at 25 m/s, a fix every 10 s."""
    with (feed_dir() / "shapes.txt").open(encoding="utf-8") as f:
        shape = [
            (float(r["shape_pt_lat"]), float(r["shape_pt_lon"]))
            for r in csv.DictReader(f)
            if r["shape_id"] == "ALG-ORN-out"
        ]
    track = densify(shape, 250.0)[:80]
    return [
        Observation("coach-1", 1_780_000_000_000 + k * 10_000, k, lat, lon, 25.0)
        for k, (lat, lon) in enumerate(track)
    ]


def test_the_detectors_raise_fence_events_from_the_fences_stored(database_url: str) -> None:
    fences = fences_from_geojson(OPERATOR, (feed_dir() / "geofences.geojson").read_bytes())

    async def work() -> Any:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await import_fences(conn, OPERATOR, [stored_fence(f) for f in fences])
            detectors = Detectors(DetectorPolicy())
            await detectors.refresh(pool)
            return detectors.contexts([OPERATOR, "no-fences"])
        finally:
            await pool.close()

    contexts = asyncio.run(work())
    assert len(contexts[OPERATOR].fences) == len(fences)
    assert len(contexts["no-fences"].fences) == 0
    _, events, late = detect_bus(BusState(), _coach_from_algiers(), contexts[OPERATOR])
    assert late == 0
    fence_events = [(e.kind, e.subject) for e in events if e.subject.startswith("station")]
    assert fence_events == [("geofence_entered", "station-alg-car"), ("geofence_exited", "station-alg-car")]
