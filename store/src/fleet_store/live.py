"""Live state in Redis: where each bus is now, for maps, ETAs and the websocket fan-out.

The key layout and its scripts are here, shared by the writer (ingest, through
``fleet_ingest.live``) and the readers (``fleet live``, later serve).

Per operator, all in one Redis Cluster slot (the operator in braces):

* ``fleet:{op}:live``: GEO set of buses (GEOSEARCH-able);
* ``fleet:{op}:bus:{bus}``: hash with the bus's newest accepted fix (``t``, ``s``,
  ``state`` as JSON) and, once processing follows it, its trip progress
  (``progress``, msgpack, opaque here), expiring ``ttl_s`` after its last update;
* ``fleet:{op}:seen``: sorted set of buses by last update (server time), to
  prune the GEO set of buses whose hash expired;
* channel ``fleet:{op}:positions``: one JSON array per batch of the positions
  that moved.

One Lua script per operator per batch does the compare-and-set: a bus moves
only to a fix newer by (fix time, sequence) than the one it has, so a late or
redelivered frame never moves it backwards, whatever the order batches from
several ingest processes arrive in. The progress is written in the same
compare-and-set, so it always belongs to the position beside it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis

from fleet_schemas.live import LIVE_DECODER, LIVE_ENCODER, LivePosition

GEO_MAX_LAT = 85.05112878
"""Redis GEO sets cannot hold latitudes beyond this (Web Mercator)."""

_UPDATE = """
local ttl, now, channel = ARGV[1], ARGV[2], ARGV[3]
local moved = {}
for i = 3, #KEYS do
  local a = 3 + (i - 3) * 7
  local bus, t, s, lon, lat, state, progress = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local current = redis.call('HMGET', KEYS[i], 't', 's')
  local ct, cs = tonumber(current[1]), tonumber(current[2])
  if ct == nil or t > ct or (t == ct and s > cs) then
    redis.call('HSET', KEYS[i], 't', t, 's', s, 'state', state)
    if progress ~= '' then
      redis.call('HSET', KEYS[i], 'progress', progress)
    end
    redis.call('EXPIRE', KEYS[i], ttl)
    if math.abs(tonumber(lat)) <= MAX_LAT then
      redis.call('GEOADD', KEYS[1], lon, lat, bus)
    end
    redis.call('ZADD', KEYS[2], now, bus)
    moved[#moved + 1] = state
  end
end
if #moved > 0 then
  redis.call('PUBLISH', channel, '[' .. table.concat(moved, ',') .. ']')
end
return #moved
""".replace("MAX_LAT", str(GEO_MAX_LAT))

_PRUNE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, bus in ipairs(gone) do
  redis.call('ZREM', KEYS[1], bus)
  redis.call('ZREM', KEYS[2], bus)
end
return #gone
"""


def geo_key(operator: str) -> str:
    return f"fleet:{{{operator}}}:live"


def seen_key(operator: str) -> str:
    return f"fleet:{{{operator}}}:seen"


def bus_key(operator: str, bus: str) -> str:
    return f"fleet:{{{operator}}}:bus:{bus}"


def positions_channel(operator: str) -> str:
    return f"fleet:{{{operator}}}:positions"


OPERATORS_KEY = "fleet:operators"


class LiveState:
    """Writes and reads the live keys; one instance per process, around one Redis client."""

    def __init__(self, client: aioredis.Redis, ttl_s: int = 900) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._update = client.register_script(_UPDATE)
        self._prune = client.register_script(_PRUNE)
        self._operators: set[str] = set()

    async def update(
        self,
        positions: Iterable[LivePosition],
        now_ms: int | None = None,
        progress: Mapping[tuple[str, str], bytes] | None = None,
    ) -> int:
        """Move each bus to its newest position of the batch if newer than Redis's; return how many moved.

        ``progress`` holds, by (operator, bus), the trip progress to keep with the newest position.
        """
        progress = progress or {}
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        newest: dict[tuple[str, str], LivePosition] = {}
        for item in positions:
            key = (item.operator, item.bus)
            held = newest.get(key)
            if held is None or (item.time_ms, item.seq) > (held.time_ms, held.seq):
                newest[key] = item
        by_operator: dict[str, list[LivePosition]] = defaultdict(list)
        for (operator, _bus), item in newest.items():
            by_operator[operator].append(item)
        async with self._client.pipeline(transaction=False) as pipe:
            for operator, items in by_operator.items():
                keys = [geo_key(operator), seen_key(operator), *(bus_key(operator, p.bus) for p in items)]
                args: list[str | int | float | bytes] = [self._ttl_s, now_ms, positions_channel(operator)]
                for p in items:
                    args += [p.bus, p.time_ms, p.seq, repr(p.lon), repr(p.lat), LIVE_ENCODER.encode(p)]
                    args.append(progress.get((operator, p.bus), b""))
                await self._update(keys=keys, args=args, client=pipe)
            new_operators = set(by_operator) - self._operators
            if new_operators:
                pipe.sadd(OPERATORS_KEY, *new_operators)
            results = await pipe.execute()
        self._operators |= new_operators
        return sum(int(r) for r in results[: len(by_operator)])

    async def states(self, buses: list[tuple[str, str]]) -> list[LivePosition | None]:
        """The live position of each bus (None where it has expired), in one round trip."""
        if not buses:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for operator, bus in buses:
                pipe.hget(bus_key(operator, bus), "state")
            raws = await pipe.execute()
        return [None if raw is None else LIVE_DECODER.decode(raw) for raw in raws]

    async def progress(self, buses: list[tuple[str, str]]) -> list[bytes | None]:
        """The trip progress each bus's hash holds (None where there is none), in one round trip."""
        if not buses:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for operator, bus in buses:
                pipe.hget(bus_key(operator, bus), "progress")
            return list(await pipe.execute())

    async def position(self, operator: str, bus: str) -> LivePosition | None:
        raw = await self._client.hget(bus_key(operator, bus), "state")
        return None if raw is None else LIVE_DECODER.decode(raw)

    async def buses(self, operator: str) -> list[LivePosition]:
        """Every bus of ``operator`` with a live position, most recently updated first."""
        names = await self._client.zrevrange(seen_key(operator), 0, -1)
        states = await self.states([(operator, _text(name)) for name in names])
        return [live for live in states if live is not None]

    async def _operator_names(self) -> list[str]:
        return [_text(name) for name in await self._client.smembers(OPERATORS_KEY)]

    async def prune(self, now_ms: int | None = None) -> int:
        """Drop from the GEO sets the buses whose hash has expired; return how many."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        cutoff = now_ms - self._ttl_s * 1000
        pruned = 0
        for operator in await self._operator_names():
            pruned += int(await self._prune(keys=[geo_key(operator), seen_key(operator)], args=[cutoff]))
        return pruned

    async def buses_live(self) -> int:
        """Buses with a live position, over all operators."""
        total = 0
        for operator in await self._operator_names():
            total += int(await self._client.zcard(seen_key(operator)))
        return total


def _text(value: object) -> str:
    """Redis replies bytes unless the client decodes them."""
    return value.decode() if isinstance(value, bytes) else str(value)
