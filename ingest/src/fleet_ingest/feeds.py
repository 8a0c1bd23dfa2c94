"""Each operator's active feed and driven history, kept fresh for the trip step.

Ingest processes are stateless, so each builds the run-time network of every
operator's active feed version itself, from PostgreSQL: at start, then when
the active version changes (``fleet gtfs import`` switches it; checked every
``refresh_s``). Building a big feed's network takes a while, so it runs in a
worker thread and the previous network serves meanwhile. Travel-time history
is reloaded every ``history_refresh_s``: the rollup moves by the minute, and a
few minutes of staleness does not change an ETA.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from fleet_ingest import metrics
from fleet_ingest.trips import OperatorModel
from fleet_processing.eta import SegmentHistory
from fleet_processing.network import build_network
from fleet_store.gtfs import active_feeds, load_feed
from fleet_store.history import load_segment_history

log = logging.getLogger("fleet_ingest.feeds")


class Networks:
    """The trip step's models by operator; ``refresh`` is called from ingest's upkeep loop."""

    def __init__(self, refresh_s: float = 30.0, history_refresh_s: float = 300.0) -> None:
        self.models: dict[str, OperatorModel] = {}
        self._refresh_s = refresh_s
        self._history_refresh_s = history_refresh_s
        self._checked = -float("inf")
        self._history_loaded: dict[str, float] = {}

    def due(self, now: float) -> bool:
        return now - self._checked >= self._refresh_s

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Load what changed: a new active version's network, histories older than their period."""
        self._checked = time.monotonic()
        async with pool.acquire() as conn:
            active = await active_feeds(conn)
            for operator in set(self.models) - set(active):
                del self.models[operator]
                log.info("operator has no active feed any more", extra={"operator": operator})
            for operator, feed_id in active.items():
                model = self.models.get(operator)
                stale_history = time.monotonic() - self._history_loaded.get(operator, -float("inf"))
                if model is not None and model.network.feed_id == feed_id:
                    if stale_history >= self._history_refresh_s:
                        self.models[operator] = OperatorModel(
                            model.network, await self._history(conn, operator)
                        )
                    continue
                started = time.monotonic()
                feed = await load_feed(conn, feed_id)
                network = await asyncio.to_thread(build_network, feed, operator=operator, feed_id=feed_id)
                self.models[operator] = OperatorModel(network, await self._history(conn, operator))
                metrics.NETWORK_BUILD_SECONDS.observe(time.monotonic() - started)
                log.info(
                    "feed loaded",
                    extra={
                        "operator": operator,
                        "feed_id": feed_id,
                        "trips": len(network.plans),
                        "seconds": round(time.monotonic() - started, 2),
                    },
                )
        metrics.FEEDS_LOADED.set(len(self.models))

    async def _history(self, conn: asyncpg.pool.PoolConnectionProxy, operator: str) -> SegmentHistory:
        rows = await load_segment_history(conn, operator)
        self._history_loaded[operator] = time.monotonic()
        return SegmentHistory(operator, rows.segments, rows.dwells)
