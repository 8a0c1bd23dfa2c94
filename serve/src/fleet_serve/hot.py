"""A per-process micro-cache of trip predictions: the hot read of the booking API, for a quarter second.

Booking traffic piles onto the same trips (every rider of a coach asks about
it), and ingest rewrites a trip's predictions about once a second. Holding a
trip's answer for ``TTL_S`` turns a burst of reads into one Redis round trip,
and at most that much staler than Redis, well inside the ``max-age`` the
answers announce. Concurrent misses of one trip share one read (single
flight). Nothing here is state a node depends on: a new node starts empty and
reads through, so serve stays stateless. Hand-written because it is a dozen
lines and needs the event loop's clock and futures, which cachetools' TTLCache
does not give.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

TTL_S = 0.25
MAX_ENTRIES = 10_000
"""beyond this many keys the oldest half is dropped: a flood of distinct trips cannot grow memory"""


class MicroCache(Generic[K, V]):
    def __init__(self, ttl_s: float = TTL_S, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[K, tuple[float, asyncio.Task[V]]] = {}

    async def get(self, key: K, load: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """The value of ``key`` loaded at most ``ttl_s`` ago, else ``load()``'s (one load per key at once).

        The load runs as a task of its own, so a requester that goes away does not cancel it for the
        others; a load that fails is forgotten at once (the next request tries again).
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        held = self._entries.get(key)
        if held is None or held[0] <= now:
            if len(self._entries) >= self._max:
                for old in list(self._entries)[: self._max // 2]:
                    del self._entries[old]
            task = loop.create_task(load())
            held = (now + self._ttl_s, task)
            self._entries[key] = held
            task.add_done_callback(lambda done: self._forget_failed(key, done))
        return await asyncio.shield(held[1])

    def _forget_failed(self, key: K, done: asyncio.Task[V]) -> None:
        if done.cancelled() or done.exception() is not None:
            held = self._entries.get(key)
            if held is not None and held[1] is done:
                del self._entries[key]
