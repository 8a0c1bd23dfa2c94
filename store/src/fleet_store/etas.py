"""ETAs in Redis: each trip instance's predictions and each stop's arrivals board, for the booking API.

The layout, per operator (all in one Redis Cluster slot, the operator in braces):

* ``fleet:{op}:eta:trip:{instance}``: hash with the instance's newest
  prediction (``etas``, a ``TripEtas`` as JSON) and the fix time it starts from
  (``t``), expiring ``ttl_s`` after its last update; ``instance`` is
  ``trip_id/start_date/start_time``;
* ``fleet:{op}:eta:trips:{trip_id}``: sorted set of that trip's instances by
  last update, so the booking side can ask by trip id alone;
* ``fleet:{op}:eta:stop:{stop_id}``: sorted set of the instances coming to the
  stop, by predicted arrival, with ``fleet:{op}:eta:stopinfo:{stop_id}``, a hash
  of each one's ``StopArrival`` as JSON;
* channel ``fleet:{op}:etas``: one JSON array of the batch's ``TripEtas``.

As for positions, one Lua script per operator per batch does a
compare-and-set on the fix time, so a late batch from another ingest process
never replaces a newer prediction. The writer names the stops an instance no
longer comes to (passed, or the bus left the trip), and the script takes them
off their boards; entries whose arrival is long past are pruned on each write
to a board, so an instance whose bus vanished leaves no line behind for long.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import msgspec
import redis.asyncio as aioredis

from fleet_schemas.trips import (
    ETAS_ENCODER,
    STOP_ARRIVAL_DECODER,
    TRIP_ETAS_DECODER,
    StopArrival,
    TripEtas,
)
from fleet_store.live import reply_text

BOARD_KEEP_MS = 30 * 60_000
"""A board line whose predicted arrival is older than this is dropped: its bus went silent."""

_PUBLISH = """
local ttl, now, channel, keep = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local k, a = 1, 5
local written = {}
while a <= #ARGV do
  local instance, t, etas, nstops, ngone = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2],
    tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  a = a + 5
  local trip_key, index_key = KEYS[k], KEYS[k + 1]
  k = k + 2
  local current = tonumber(redis.call('HGET', trip_key, 't'))
  local newer = current == nil or t >= current
  if newer then
    redis.call('HSET', trip_key, 't', t, 'etas', etas)
    redis.call('EXPIRE', trip_key, ttl)
    redis.call('ZADD', index_key, now, instance)
    redis.call('EXPIRE', index_key, ttl)
    written[#written + 1] = etas
  end
  for _ = 1, nstops do
    if newer then
      local board, info = KEYS[k], KEYS[k + 1]
      redis.call('ZADD', board, ARGV[a], instance)
      redis.call('HSET', info, instance, ARGV[a + 1])
      redis.call('EXPIRE', board, ttl)
      redis.call('EXPIRE', info, ttl)
      local stale = redis.call('ZRANGEBYSCORE', board, '-inf', tonumber(now) - keep)
      if #stale > 0 then
        redis.call('ZREM', board, unpack(stale))
        redis.call('HDEL', info, unpack(stale))
      end
    end
    k, a = k + 2, a + 2
  end
  for _ = 1, ngone do
    if newer then
      redis.call('ZREM', KEYS[k], instance)
      redis.call('HDEL', KEYS[k + 1], instance)
    end
    k = k + 2
  end
end
if #written > 0 then
  redis.call('PUBLISH', channel, '[' .. table.concat(written, ',') .. ']')
end
return #written
"""

_READ_TRIP = """
local out = {}
for _, instance in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  local etas = redis.call('HGET', ARGV[1] .. instance, 'etas')
  if etas then out[#out + 1] = etas end
end
return out
"""
"""a trip's instances and their predictions in one round trip (the booking API's hot path); the
instance hashes are named from the index, in the operator's slot like every key here"""


def trip_key(operator: str, instance: str) -> str:
    return f"fleet:{{{operator}}}:eta:trip:{instance}"


def trip_index_key(operator: str, trip_id: str) -> str:
    return f"fleet:{{{operator}}}:eta:trips:{trip_id}"


def board_key(operator: str, stop_id: str) -> str:
    return f"fleet:{{{operator}}}:eta:stop:{stop_id}"


def board_info_key(operator: str, stop_id: str) -> str:
    return f"fleet:{{{operator}}}:eta:stopinfo:{stop_id}"


def etas_channel(operator: str) -> str:
    return f"fleet:{{{operator}}}:etas"


def instance_key(trip_id: str, start_date: str, start_time: str) -> str:
    return f"{trip_id}/{start_date}/{start_time}"


class EtaUpdate(msgspec.Struct, frozen=True, gc=False):
    """One instance's new prediction, and the stops it no longer comes to (off their boards).

    Untracked by the garbage collector (it holds no cycles): ingest makes one per bus per batch.
    """

    etas: TripEtas
    gone_stop_ids: tuple[str, ...] = ()


class EtaBoards:
    """Writes and reads trip ETAs and stop boards; one per process, around one Redis client."""

    def __init__(self, client: aioredis.Redis, ttl_s: int = 3_600) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._publish = client.register_script(_PUBLISH)
        self._read_trip = client.register_script(_READ_TRIP)

    async def publish(self, updates: Sequence[EtaUpdate], now_ms: int) -> int:
        """Write each instance's prediction where it is newer than Redis's; return how many were."""
        by_operator: dict[str, list[EtaUpdate]] = defaultdict(list)
        for update in updates:
            by_operator[update.etas.operator].append(update)
        if not by_operator:
            return 0
        async with self._client.pipeline(transaction=False) as pipe:
            for operator, items in by_operator.items():
                keys, args = self._script_input(operator, items, now_ms)
                await self._publish(keys=keys, args=args, client=pipe)
            results = await pipe.execute()
        return sum(int(r) for r in results)

    def _script_input(
        self, operator: str, items: list[EtaUpdate], now_ms: int
    ) -> tuple[list[str], list[str | int | bytes]]:
        keys: list[str] = []
        args: list[str | int | bytes] = [self._ttl_s, now_ms, etas_channel(operator), BOARD_KEEP_MS]
        for update in items:
            etas = update.etas
            instance = instance_key(etas.trip_id, etas.start_date, etas.start_time)
            keys += [trip_key(operator, instance), trip_index_key(operator, etas.trip_id)]
            encoded = ETAS_ENCODER.encode(etas)
            args += [instance, etas.time_ms, encoded, len(etas.stops), len(update.gone_stop_ids)]
            for stop in etas.stops:
                keys += [board_key(operator, stop.stop_id), board_info_key(operator, stop.stop_id)]
                line = StopArrival(
                    trip_id=etas.trip_id,
                    route_id=etas.route_id,
                    start_date=etas.start_date,
                    start_time=etas.start_time,
                    bus=etas.bus,
                    stop_sequence=stop.stop_sequence,
                    scheduled_arrival_ms=stop.scheduled_arrival_ms,
                    arrival_ms=stop.arrival_ms,
                    arrival_early_ms=stop.arrival_early_ms,
                    arrival_late_ms=stop.arrival_late_ms,
                    updated_ms=etas.updated_ms,
                )
                args += [stop.arrival_ms, ETAS_ENCODER.encode(line)]
            for stop_id in update.gone_stop_ids:
                keys += [board_key(operator, stop_id), board_info_key(operator, stop_id)]
        return keys, args

    async def trip(self, operator: str, trip_id: str) -> list[TripEtas]:
        """The current predictions of every instance of ``trip_id``, most recently updated first."""
        raws = await self._read_trip(keys=[trip_index_key(operator, trip_id)], args=[trip_key(operator, "")])
        return [TRIP_ETAS_DECODER.decode(raw) for raw in raws]

    async def trips(self, operator: str, trip_ids: Iterable[str]) -> list[TripEtas]:
        """Every instance of each trip (each trip's most recently updated first), in two round trips."""
        trip_ids = list(dict.fromkeys(trip_ids))
        if not trip_ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for trip_id in trip_ids:
                pipe.zrevrange(trip_index_key(operator, trip_id), 0, -1)
            indexes = await pipe.execute()
        instances = [reply_text(instance) for index in indexes for instance in index]
        if not instances:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for instance in instances:
                pipe.hget(trip_key(operator, instance), "etas")
            raws = await pipe.execute()
        return [TRIP_ETAS_DECODER.decode(raw) for raw in raws if raw is not None]

    async def board(self, operator: str, stop_id: str, limit: int = 20) -> list[StopArrival]:
        """The next arrivals at a stop, soonest first."""
        instances = [
            reply_text(i) for i in await self._client.zrange(board_key(operator, stop_id), 0, limit - 1)
        ]
        if not instances:
            return []
        raws = await self._client.hmget(board_info_key(operator, stop_id), instances)
        return [STOP_ARRIVAL_DECODER.decode(raw) for raw in raws if raw is not None]
