"""Each operator's detector context (fences, thresholds), kept fresh for the processing step.

The thresholds are the process's settings (``FLEET_INGEST_*``); an
operator's fences (``fleet_ingest.fences``) and per-route deviation limits
(``fleet routes deviation``) live in PostgreSQL and are reloaded every
``refresh_s`` from ingest's upkeep loop, the last good ones serving while a
reload fails. ``fleet events reprocess`` builds its context here too, so a
replay runs the detectors exactly as live did.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import asyncpg
import msgspec

from fleet_ingest.fences import Fences
from fleet_processing.detect import DetectContext
from fleet_processing.detection import DetectorPolicy
from fleet_processing.geofences import EMPTY_INDEX
from fleet_store.route_policies import list_route_policies


class Detectors:
    """The detector contexts by operator; an operator with nothing stored gets the base policy alone."""

    def __init__(self, policy: DetectorPolicy, refresh_s: float = 30.0) -> None:
        self.policy = policy
        self.fences = Fences(refresh_s)
        self._routes: dict[str, dict[str, tuple[float, float]]] = {}
        self._contexts: dict[str, DetectContext] = {}

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Reload fences (the changed operators' only) and route limits; contexts are rebuilt on demand."""
        await self.fences.refresh(pool)
        async with pool.acquire() as conn:
            rows = await list_route_policies(conn)
        routes: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
        for row in rows:
            routes[row.operator][row.route_id] = (row.deviation_leave_m, row.deviation_return_m)
        self._routes = dict(routes)
        self._contexts.clear()

    def contexts(self, operators: Iterable[str]) -> dict[str, DetectContext]:
        """A context for each of ``operators``."""
        out = {}
        for operator in operators:
            context = self._contexts.get(operator)
            if context is None:
                context = self._contexts[operator] = self._context(operator)
            out[operator] = context
        return out

    def _context(self, operator: str) -> DetectContext:
        policy = self.policy
        limits = self._routes.get(operator)
        if limits:
            policy = msgspec.structs.replace(
                policy, deviation_by_route={**policy.deviation_by_route, **limits}
            )
        return DetectContext(operator, self.fences.indexes.get(operator, EMPTY_INDEX), policy)
