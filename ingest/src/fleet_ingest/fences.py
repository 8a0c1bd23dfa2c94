"""Each operator's geofence index, kept fresh for the fence detector.

Like the feeds (``fleet_ingest.feeds``), fences live in PostgreSQL and every
ingest process builds its own index from them: at start, then whenever an
operator's fence version (``fleet_store.geofences.fence_versions``) moves, checked
every ``refresh_s`` from ingest's upkeep loop. Building 10,000 fences takes
seconds (buffering and H3 covers), so it runs in a worker thread and the
previous index serves meanwhile.

A stored fence that no longer parses (the rules tightened since it was
imported) is left out of the index, logged with its code and counted; the
operator's other fences still work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg

from fleet_ingest import metrics
from fleet_processing.errors import InvalidFenceError
from fleet_processing.fence_geojson import fence_from_feature
from fleet_processing.geofences import Fence, FenceIndex
from fleet_store.geofences import FenceVersion, StoredFence, fence_versions, list_fences

log = logging.getLogger("fleet_ingest.fences")


class Fences:
    """The fence indexes by operator; ``refresh`` is called from ingest's upkeep loop."""

    def __init__(self, refresh_s: float = 30.0) -> None:
        self.indexes: dict[str, FenceIndex] = {}
        self._versions: dict[str, FenceVersion] = {}
        self._refresh_s = refresh_s
        self._checked = -float("inf")

    def due(self, now: float) -> bool:
        return now - self._checked >= self._refresh_s

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Rebuild the index of each operator whose fences changed; forget operators without any."""
        self._checked = time.monotonic()
        async with pool.acquire() as conn:
            versions = await fence_versions(conn)
            for operator in set(self.indexes) - set(versions):
                del self.indexes[operator]
                del self._versions[operator]
                log.info("operator has no geofences any more", extra={"operator": operator})
            for operator, version in versions.items():
                if self._versions.get(operator) == version:
                    continue
                rows = await list_fences(conn, operator)
                started = time.monotonic()
                self.indexes[operator] = await asyncio.to_thread(build_index, operator, rows)
                self._versions[operator] = version
                metrics.FENCE_INDEX_BUILD_SECONDS.observe(time.monotonic() - started)
                log.info(
                    "geofences loaded",
                    extra={
                        "operator": operator,
                        "fences": len(self.indexes[operator]),
                        "seconds": round(time.monotonic() - started, 2),
                    },
                )
        metrics.FENCES_LOADED.set(sum(len(index) for index in self.indexes.values()))


def stored_fence(fence: Fence) -> StoredFence:
    """A parsed fence as the store keeps it (the drawing; ``build_index`` parses it back)."""
    return StoredFence(
        operator=fence.operator,
        fence_id=fence.fence_id,
        name=fence.name,
        kind=fence.kind,
        geometry=fence.geometry or {},
        properties=fence.properties or {},
        dwell_s=fence.dwell_s,
        speed_limit_mps=fence.speed_limit_mps,
    )


def build_index(operator: str, rows: Sequence[StoredFence]) -> FenceIndex:
    """The index of an operator's stored fences, leaving out (and logging) any that no longer parse."""
    fences: list[Fence] = []
    for number, row in enumerate(rows):
        try:
            fences.append(fence_from_feature(operator, row.feature(), number))
        except InvalidFenceError as error:
            metrics.FENCES_REFUSED.labels(error.code).inc()
            log.error(
                "stored geofence refused",
                extra={
                    "operator": operator,
                    "fence_id": row.fence_id,
                    "code": error.code,
                    "reason": error.message,
                },
            )
    return FenceIndex(fences)
