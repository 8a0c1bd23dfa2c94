"""The micro-cache: one load per key at once, reloads once stale, forgets failures."""

from __future__ import annotations

import asyncio

import pytest

from fleet_serve.hot import MicroCache


def test_concurrent_misses_of_one_key_share_one_load() -> None:
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0)
        return loads

    async def run() -> list[int]:
        cache: MicroCache[str, int] = MicroCache(ttl_s=60)
        return await asyncio.gather(*(cache.get("trip", load) for _ in range(50)))

    assert asyncio.run(run()) == [1] * 50
    assert loads == 1


def test_a_stale_entry_is_loaded_again() -> None:
    async def run() -> list[int]:
        cache: MicroCache[str, int] = MicroCache(ttl_s=0)
        counter = iter(range(10))

        async def load() -> int:
            return next(counter)

        return [await cache.get("trip", load) for _ in range(3)]

    assert asyncio.run(run()) == [0, 1, 2]


def test_a_failed_load_is_not_remembered() -> None:
    async def run() -> int:
        cache: MicroCache[str, int] = MicroCache(ttl_s=60)

        async def fail() -> int:
            raise ConnectionError("redis away")

        async def load() -> int:
            return 7

        with pytest.raises(ConnectionError):
            await cache.get("trip", fail)
        await asyncio.sleep(0)
        return await cache.get("trip", load)

    assert asyncio.run(run()) == 7


def test_the_cache_never_holds_more_than_its_bound() -> None:
    async def run() -> int:
        cache: MicroCache[int, int] = MicroCache(ttl_s=60, max_entries=100)
        for key in range(1_000):

            async def load(value: int = key) -> int:
                return value

            assert await cache.get(key, load) == key
        return len(cache._entries)

    assert asyncio.run(run()) <= 100
