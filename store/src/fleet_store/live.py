"""Live state in Redis: where each bus is now, for maps, ETAs and the websocket fan-out.

The key layout and its scripts are here, shared by the writer (ingest, through
``fleet_ingest.live``) and the readers (``fleet live``, later serve).

Per operator, all in one Redis Cluster slot (the operator in braces):

* ``fleet:{op}:live``: GEO set of buses (GEOSEARCH-able);
* ``fleet:{op}:bus:{bus}``: hash with the bus's newest accepted fix (``t``, ``s``,
  ``state`` as JSON), expiring ``ttl_s`` after its last update;
* ``fleet:{op}:proc:{bus}``: hash with what processing keeps of the bus between
  batches: its trip progress (``progress``) and detector state (``detect``),
  both msgpack and opaque here, and ``v``, its version, new on every write;
  it expires ``state_ttl_s`` after its last update (days: a bus back after a
  long silence still gets its ``bus_online``);
* ``fleet:{op}:seen``: sorted set of buses by last update (server time), to
  prune the GEO set of buses whose hash expired;
* ``fleet:{op}:online``: sorted set of the buses not declared offline, by last
  update (server time): what the offline sweep looks through;
* ``fleet:{op}:events:outbox``: list of events (JSON) written with the state
  that produced them, until ``fleet_store.events`` has stored and published them;
* channel ``fleet:{op}:positions``: one JSON array per batch of the positions
  that moved.

One Lua script per operator per batch writes everything of every bus at
once, so a bus's position, progress, detector state and events never
disagree. Two rules, both compare-and-set:

* a bus's processing state is written only if its ``v`` is still the one
  read before computing it; otherwise the bus is returned as a conflict
  (another process ran newer frames of it meanwhile) and the caller
  recomputes it from the state that won. A version of its own, rather than
  the fix time and sequence, because the offline sweep changes the state
  with no new fix. Each version is Redis's clock (``TIME``, microseconds)
  and a count of the hash's writes, so none comes back: not after Redis
  lost the hash (a counter would restart at 0 and meet, once it had climbed
  back, the version a stale writer read before the loss), nor after a
  restore of an older snapshot;
* its position moves only to a fix newer by (fix time, sequence) than the
  one it has, so a late or redelivered frame never moves it backwards.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import redis.asyncio as aioredis

from fleet_schemas.live import LIVE_DECODER, LIVE_ENCODER, LivePosition, newest_each, position_stamp
from fleet_store.events import outbox_key

GEO_MAX_LAT = 85.05112878
"""Redis GEO sets cannot hold latitudes beyond this (Web Mercator)."""

UNWRITTEN = "0"
"""the version of a processing hash Redis does not hold (never written, expired or lost)"""

_NEXT_VERSION = """
local function next_version(version)
  local now = redis.call('TIME')
  local writes = (tonumber(string.match(version, '(%d+)$')) or 0) + 1
  return now[1] .. string.format('%06d', tonumber(now[2])) .. '.' .. writes
end
"""

_UPDATE = (
    _NEXT_VERSION
    + """
local ttl, state_ttl, now, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local moved, conflicts = {}, {}
local a, k = 5, 5
while a <= #ARGV do
  local bus, expected, t, s, lon, lat, state, progress, detect, nevents = ARGV[a], ARGV[a + 1],
    tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7],
    ARGV[a + 8], tonumber(ARGV[a + 9])
  local live, proc = KEYS[k], KEYS[k + 1]
  local first = a + 10
  a, k = first + nevents, k + 2
  local version = redis.call('HGET', proc, 'v') or UNWRITTEN
  if expected ~= '' and expected ~= version then
    conflicts[#conflicts + 1] = bus
  else
    if progress ~= '' or detect ~= '' or nevents > 0 then
      redis.call('HSET', proc, 'v', next_version(version))
      if progress ~= '' then redis.call('HSET', proc, 'progress', progress) end
      if detect ~= '' then redis.call('HSET', proc, 'detect', detect) end
      redis.call('EXPIRE', proc, state_ttl)
      for e = first, first + nevents - 1 do
        redis.call('RPUSH', KEYS[4], ARGV[e])
      end
    end
    redis.call('ZADD', KEYS[3], now, bus)
    local current = redis.call('HMGET', live, 't', 's')
    local ct, cs = tonumber(current[1]), tonumber(current[2])
    if ct == nil or t > ct or (t == ct and s > cs) then
      redis.call('HSET', live, 't', t, 's', s, 'state', state)
      redis.call('EXPIRE', live, ttl)
      if math.abs(tonumber(lat)) <= MAX_LAT then
        redis.call('GEOADD', KEYS[1], lon, lat, bus)
      end
      redis.call('ZADD', KEYS[2], now, bus)
      moved[#moved + 1] = state
    end
  end
end
if #moved > 0 then
  redis.call('PUBLISH', channel, '[' .. table.concat(moved, ',') .. ']')
end
return {#moved, conflicts}
""".replace("MAX_LAT", str(GEO_MAX_LAT)).replace("UNWRITTEN", f"'{UNWRITTEN}'")
)

_OFFLINE = (
    _NEXT_VERSION
    + """
local state_ttl, cutoff = ARGV[1], tonumber(ARGV[2])
local declared = 0
for i = 3, #KEYS do
  local a = 3 + (i - 3) * 4
  local bus, expected, detect, event = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local heard = tonumber(redis.call('ZSCORE', KEYS[1], bus))
  local version = redis.call('HGET', KEYS[i], 'v') or UNWRITTEN
  if heard ~= nil and heard <= cutoff and version == expected then
    if event ~= '' then
      redis.call('HSET', KEYS[i], 'v', next_version(version), 'detect', detect)
      redis.call('EXPIRE', KEYS[i], state_ttl)
      redis.call('RPUSH', KEYS[2], event)
      declared = declared + 1
    end
    redis.call('ZREM', KEYS[1], bus)
  end
end
return declared
""".replace("UNWRITTEN", f"'{UNWRITTEN}'")
)

_PRUNE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, bus in ipairs(gone) do
  redis.call('ZREM', KEYS[1], bus)
  redis.call('ZREM', KEYS[2], bus)
end
return #gone
"""


class Processing(msgspec.Struct, frozen=True):
    """What a bus's processing hash holds: read before computing, its ``version`` checked on write.

    Versions are opaque: compared for equality, never ordered or counted.
    """

    version: str = UNWRITTEN
    progress: bytes | None = None
    state: bytes | None = None


NOTHING_HELD = Processing()
"""a processing hash Redis does not hold"""


class ProcessingWrite(msgspec.Struct, frozen=True):
    """What to write of one bus with its position, if its processing hash is still at ``version``."""

    version: str | None
    """the version read (None: write without the check, as a bus processing gave nothing for)"""
    progress: bytes | None = None
    state: bytes | None = None
    events: Sequence[bytes] = ()
    """events (JSON) to queue in the operator's outbox with this state"""


class Updated(msgspec.Struct, frozen=True):
    moved: int
    """buses whose position moved"""
    conflicts: set[tuple[str, str]]
    """buses written by another process since their version was read: nothing of them written"""


class Silent(msgspec.Struct, frozen=True):
    """A bus the offline sweep found: nothing heard of it since the sweep's cutoff."""

    operator: str
    bus: str
    processing: Processing


class OfflineWrite(msgspec.Struct, frozen=True):
    """The sweep's write for one silent bus: its offline state and ``bus_offline`` event (JSON).

    Empty ``state`` and ``event``: the bus needs no event (already offline, or no fix ever run
    through), so it only leaves the set the sweep looks through.
    """

    operator: str
    bus: str
    version: str
    state: bytes = b""
    event: bytes = b""


def _operator_bus(position: LivePosition) -> tuple[str, str]:
    return position.operator, position.bus


def geo_key(operator: str) -> str:
    return f"fleet:{{{operator}}}:live"


def seen_key(operator: str) -> str:
    return f"fleet:{{{operator}}}:seen"


def bus_key(operator: str, bus: str) -> str:
    return f"fleet:{{{operator}}}:bus:{bus}"


def proc_key(operator: str, bus: str) -> str:
    return f"fleet:{{{operator}}}:proc:{bus}"


def online_key(operator: str) -> str:
    return f"fleet:{{{operator}}}:online"


def positions_channel(operator: str) -> str:
    return f"fleet:{{{operator}}}:positions"


OPERATORS_KEY = "fleet:operators"


class LiveState:
    """Writes and reads the live keys; one instance per process, around one Redis client."""

    def __init__(self, client: aioredis.Redis, ttl_s: int = 900, state_ttl_s: int = 7 * 86_400) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._state_ttl_s = state_ttl_s
        self._update = client.register_script(_UPDATE)
        self._offline = client.register_script(_OFFLINE)
        self._prune = client.register_script(_PRUNE)
        self._operators: set[str] = set()

    async def update(
        self,
        positions: Iterable[LivePosition],
        now_ms: int | None = None,
        writes: Mapping[tuple[str, str], ProcessingWrite] | None = None,
    ) -> Updated:
        """Write each bus's newest position of the batch and its processing state, as the rules above say.

        ``writes`` holds, by (operator, bus), the processing state to keep with the position; a bus
        without one moves without the version check.
        """
        writes = writes or {}
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        newest = newest_each(positions, _operator_bus, position_stamp)
        by_operator: dict[str, list[LivePosition]] = defaultdict(list)
        for (operator, _bus), item in newest.items():
            by_operator[operator].append(item)
        async with self._client.pipeline(transaction=False) as pipe:
            for operator, items in by_operator.items():
                keys = [geo_key(operator), seen_key(operator), online_key(operator), outbox_key(operator)]
                args: list[str | int | float | bytes] = [
                    self._ttl_s,
                    self._state_ttl_s,
                    now_ms,
                    positions_channel(operator),
                ]
                for p in items:
                    write = writes.get((operator, p.bus)) or _UNCHECKED
                    keys += [bus_key(operator, p.bus), proc_key(operator, p.bus)]
                    args += [
                        p.bus,
                        "" if write.version is None else write.version,
                        p.time_ms,
                        p.seq,
                        repr(p.lon),
                        repr(p.lat),
                        LIVE_ENCODER.encode(p),
                        write.progress or b"",
                        write.state or b"",
                        len(write.events),
                        *write.events,
                    ]
                await self._update(keys=keys, args=args, client=pipe)
            new_operators = set(by_operator) - self._operators
            if new_operators:
                pipe.sadd(OPERATORS_KEY, *new_operators)
            results = await pipe.execute()
        self._operators |= new_operators
        moved = 0
        conflicts: set[tuple[str, str]] = set()
        for operator, (count, lost) in zip(by_operator, results[: len(by_operator)], strict=True):
            moved += int(count)
            conflicts |= {(operator, reply_text(bus)) for bus in lost}
        return Updated(moved, conflicts)

    async def processing(self, buses: Sequence[tuple[str, str]]) -> list[Processing]:
        """Each bus's processing hash (empty for a bus never processed), in one round trip."""
        if not buses:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for operator, bus in buses:
                pipe.hmget(proc_key(operator, bus), "v", "progress", "detect")
            rows = await pipe.execute()
        return [Processing(UNWRITTEN if v is None else reply_text(v), p, s) for v, p, s in rows]

    async def silent(self, operator: str, cutoff_ms: int, limit: int = 1_000) -> list[Silent]:
        """Buses of ``operator`` not declared offline and heard of last at or before ``cutoff_ms``."""
        names = await self._client.zrangebyscore(online_key(operator), "-inf", cutoff_ms, start=0, num=limit)
        buses = [(operator, reply_text(name)) for name in names]
        return [
            Silent(operator, bus, held)
            for (_, bus), held in zip(buses, await self.processing(buses), strict=True)
        ]

    async def declare_offline(self, writes: Sequence[OfflineWrite], cutoff_ms: int) -> int:
        """Write each silent bus's offline state and event, if still silent and unchanged; how many were."""
        by_operator: dict[str, list[OfflineWrite]] = defaultdict(list)
        for write in writes:
            by_operator[write.operator].append(write)
        declared = 0
        for operator, items in by_operator.items():
            keys = [online_key(operator), outbox_key(operator), *(proc_key(operator, w.bus) for w in items)]
            args: list[str | int | bytes] = [self._state_ttl_s, cutoff_ms]
            for w in items:
                args += [w.bus, w.version, w.state, w.event]
            declared += int(await self._offline(keys=keys, args=args))
        return declared

    async def states(self, buses: list[tuple[str, str]]) -> list[LivePosition | None]:
        """The live position of each bus (None where it has expired), in one round trip."""
        if not buses:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for operator, bus in buses:
                pipe.hget(bus_key(operator, bus), "state")
            raws = await pipe.execute()
        return [None if raw is None else LIVE_DECODER.decode(raw) for raw in raws]

    async def position(self, operator: str, bus: str) -> LivePosition | None:
        raw = await self._client.hget(bus_key(operator, bus), "state")
        return None if raw is None else LIVE_DECODER.decode(raw)

    async def buses(self, operator: str) -> list[LivePosition]:
        """Every bus of ``operator`` with a live position, most recently updated first."""
        names = await self._client.zrevrange(seen_key(operator), 0, -1)
        states = await self.states([(operator, reply_text(name)) for name in names])
        return [live for live in states if live is not None]

    async def operators(self) -> list[str]:
        """Every operator that ever had a live bus."""
        return [reply_text(name) for name in await self._client.smembers(OPERATORS_KEY)]

    async def prune(self, now_ms: int | None = None) -> int:
        """Drop from the GEO sets the buses whose hash has expired; return how many."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        cutoff = now_ms - self._ttl_s * 1000
        pruned = 0
        for operator in await self.operators():
            pruned += int(await self._prune(keys=[geo_key(operator), seen_key(operator)], args=[cutoff]))
        return pruned

    async def buses_live(self) -> int:
        """Buses with a live position, over all operators."""
        total = 0
        for operator in await self.operators():
            total += int(await self._client.zcard(seen_key(operator)))
        return total

    async def bus_counts(self, operator: str) -> tuple[int, int]:
        """(live, offline) buses of ``operator``: with a live position, and of those, declared offline."""
        seen, online = seen_key(operator), online_key(operator)
        live = int(await self._client.zcard(seen))
        return live, live - int(await self._client.zintercard(2, [seen, online]))

    async def buses_offline(self) -> int:
        """Buses with a live position that the offline sweep declared offline since, over all operators."""
        return sum([(await self.bus_counts(operator))[1] for operator in await self.operators()])


_UNCHECKED = ProcessingWrite(None)


def reply_text(value: object) -> str:
    """Redis replies bytes unless the client decodes them."""
    return value.decode() if isinstance(value, bytes) else str(value)
