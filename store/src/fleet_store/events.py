"""Events in PostgreSQL and on the live channel, each stored once and published once (migration 012).

``write_events`` stores what the detectors found once per :attr:`Event.key`:
COPY into a per-connection TEMP staging table, then ``INSERT … ON CONFLICT
DO NOTHING RETURNING`` the keys that were new, as ingest stores positions.
Only those are returned, so the caller publishes an event only when this
call is the one that stored it. Rows are inserted in key order, so two
writers of overlapping batches take their key locks in the same order and
never deadlock; the second waits for the first and finds its rows.

:class:`EventOutbox` moves events from Redis to the table and the channel.
Ingest's Lua script pushes a bus's events onto ``fleet:{op}:events:outbox``
in the same call that writes its state, so an event exists exactly when its
state does. A flush reads the head of the list (LRANGE), stores, PUBLISHes the
events it stored on ``fleet:{op}:events`` as one JSON array, then removes
exactly the items it read (one LREM each; never LTRIM, which would cut items
another flusher pushed or read meanwhile). Two flushers racing over the same
items both write them; the unique key lets one of them store each event, and
only that one publishes it. A crash after the write leaves the items in the
list: the next flush finds them stored, publishes nothing and removes them.

The caveat: publishing is at most once. A flusher that dies between its
commit and its PUBLISH stored events nobody will publish (the next flush
finds them already stored). Subscribers that must see everything read the
table after a reconnect (``read_events`` with ``since_ms``); the channel is
for the live view.

An outbox item that is not an event, or an event PostgreSQL cannot hold (a
NUL in a text), is moved to ``fleet:{op}:events:rejected`` and logged, never
dropped, and never blocks the items behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

from fleet_schemas.events import EVENT_DECODER, EVENT_ENCODER, Event, EventKind
from fleet_store.errors import FleetError

log = logging.getLogger("fleet_store.events")

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
EventKey = tuple[str, str, str, str, int, int, int]
"""an event's identity, :attr:`Event.key`: (operator, bus, kind, subject, time_ms, cause_ms, cause_seq)"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STAGING = "events_staging"
EVENT_COLUMNS = (
    "operator",
    "bus",
    "kind",
    "time",
    "cause_time",
    "cause_seq",
    "subject",
    "trip_id",
    "start_date",
    "start_time",
    "route_id",
    "lat",
    "lon",
    "details",
)
_COLUMNS = ", ".join(EVENT_COLUMNS)
_KEY = "operator, bus, kind, subject, time, cause_time, cause_seq"
_MS = "(extract(epoch FROM {0}) * 1000)::bigint"
_KEY_MS = f"operator, bus, kind, subject, {_MS.format('time')}, {_MS.format('cause_time')}, cause_seq"
# Built from the constant names above, never from input.
_PREPARE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS"
    f" AS SELECT {_COLUMNS} FROM events WITH NO DATA"
)
_MOVE = (
    f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM {_STAGING} ORDER BY {_KEY}"
    f" ON CONFLICT DO NOTHING RETURNING {_KEY_MS}"
)
_AS_JSON = f"""json_build_object(
    'operator', operator, 'bus', bus, 'kind', kind, 'time_ms', {_MS.format("time")},
    'cause_ms', {_MS.format("cause_time")}, 'cause_seq', cause_seq, 'subject', subject, 'lat', lat,
    'lon', lon, 'trip_id', trip_id, 'start_date', start_date, 'start_time', start_time,
    'route_id', route_id, 'details', details)::text"""

DEFAULT_LIMIT = 100
FLUSH_BATCH = 1_000
"""outbox items read, stored and published per round"""

_REJECT = """
local moved = 0
for i = 1, #ARGV do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    moved = moved + 1
  end
end
return moved
"""


class InvalidEventError(FleetError):
    """An event PostgreSQL cannot hold: a NUL in a text, or a time outside timestamptz's range."""

    code = "invalid_event"


def outbox_key(operator: str) -> str:
    """The list ingest pushes an operator's new events onto, with the buses' state."""
    return f"fleet:{{{operator}}}:events:outbox"


def rejected_key(operator: str) -> str:
    """Where outbox items that are not storable events are kept for a person to look at."""
    return f"fleet:{{{operator}}}:events:rejected"


def events_channel(operator: str) -> str:
    """The live channel: one JSON array of events per flush that stored some."""
    return f"fleet:{{{operator}}}:events"


def epoch_ms(moment: datetime) -> int:
    """A timezone-aware datetime as integer epoch milliseconds, with no float on the way."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _time(ms: int, event: Event, field: str) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise InvalidEventError(f"{event.kind} of bus {event.bus}: {field} {ms} is out of range") from None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _row(e: Event) -> tuple[object, ...]:
    texts = (e.operator, e.bus, e.subject, e.trip_id, e.start_date, e.start_time, e.route_id)
    if _has_nul(texts) or _has_nul(e.details):
        raise InvalidEventError(f"{e.kind} of bus {e.bus!r}: a text holds NUL, which PostgreSQL cannot store")
    return (
        e.operator,
        e.bus,
        e.kind,
        _time(e.time_ms, e, "time_ms"),
        _time(e.cause_ms, e, "cause_ms"),
        e.cause_seq,
        e.subject,
        e.trip_id,
        e.start_date,
        e.start_time,
        e.route_id,
        e.lat,
        e.lon,
        EVENT_ENCODER.encode(e.details).decode(),
    )


async def _store(conn: Connection, events: Sequence[Event], rows: list[tuple[object, ...]]) -> list[Event]:
    if not rows:
        return []
    async with conn.transaction():
        await conn.execute(_PREPARE)
        await conn.copy_records_to_table(_STAGING, records=rows, columns=EVENT_COLUMNS)
        stored = await conn.fetch(_MOVE)
    new: set[tuple[Any, ...]] = {tuple(r) for r in stored}
    fresh: list[Event] = []
    for event in events:
        if event.key in new:
            new.discard(event.key)
            fresh.append(event)
    return fresh


async def write_events(conn: Connection, events: Sequence[Event]) -> list[Event]:
    """Store the events not stored before (in the caller's transaction if any); return those, in order.

    A key given twice in ``events`` is stored and returned once. Raises
    InvalidEventError, storing nothing, if any event cannot be stored.
    """
    return await _store(conn, events, [_row(e) for e in events])


async def read_events(
    conn: Connection,
    operator: str | None,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    bus: str | None = None,
    kinds: Iterable[EventKind] | None = None,
    route_id: str | None = None,
    after: EventKey | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[Event]:
    """Events with ``since_ms <= time_ms < until_ms``, newest first (``operator=None``: every
    operator's; ``limit=None``: all).

    ``after`` is the :attr:`Event.key` of the last event of a previous page: this page starts just
    past it in the same order (time descending, then the key ascending), so pages neither repeat
    nor skip an event, whatever is written meanwhile at newer times."""
    where: list[str] = ["true"]
    args: list[object] = []

    def bind(clause: str, value: object) -> None:
        args.append(value)
        where.append(clause.format(f"${len(args)}"))

    if operator is not None:
        bind("operator = {}", operator)
    if since_ms is not None:
        bind("time >= {}", _EPOCH + timedelta(milliseconds=since_ms))
    if until_ms is not None:
        bind("time < {}", _EPOCH + timedelta(milliseconds=until_ms))
    if bus is not None:
        bind("bus = {}", bus)
    if kinds is not None:
        bind("kind = ANY({}::text[])", list(kinds))
    if route_id is not None:
        bind("route_id = {}", route_id)
    if after is not None:
        operator_, bus_, kind_, subject, time_ms, cause_ms, cause_seq = after
        at, cause = (_EPOCH + timedelta(milliseconds=ms) for ms in (time_ms, cause_ms))
        marks = [f"${len(args) + i}" for i in range(1, 8)]
        args.extend([operator_, bus_, kind_, subject, at, cause, cause_seq])
        where.append(f"(time < {marks[4]} OR (time = {marks[4]} AND ({_KEY}) > ({', '.join(marks)})))")
    query = f"SELECT {_AS_JSON} AS event FROM events WHERE {' AND '.join(where)} ORDER BY time DESC, {_KEY}"
    if limit is not None:
        args.append(limit)
        query += f" LIMIT ${len(args)}"
    rows = await conn.fetch(query, *args)
    return [EVENT_DECODER.decode(r["event"]) for r in rows]


async def delete_events(conn: Connection, events: Sequence[Event]) -> int:
    """Delete these events (by key); return how many rows went."""
    if not events:
        return 0
    columns = list(zip(*(e.key for e in events), strict=True))
    status = await conn.execute(
        f"DELETE FROM events WHERE ({_KEY_MS}) IN (SELECT * FROM unnest("
        "$1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[]))",
        *columns,
    )
    return int(status.split()[-1])


class EventOutbox:
    """Moves events from each operator's Redis outbox to the table and the live channel."""

    def __init__(self, client: aioredis.Redis, batch: int = FLUSH_BATCH) -> None:
        self._client = client
        self._batch = batch
        self._reject = client.register_script(_REJECT)

    async def flush(self, pool: asyncpg.Pool, operators: Iterable[str]) -> int:
        """Drain each operator's outbox; return how many events this call stored (and published)."""
        stored = 0
        for operator in operators:
            while True:
                items: list[bytes] = await self._client.lrange(  # type: ignore[assignment]
                    outbox_key(operator), 0, self._batch - 1
                )
                if items:
                    stored += await self._flush_items(pool, operator, items)
                if len(items) < self._batch:
                    break
        return stored

    async def _flush_items(self, pool: asyncpg.Pool, operator: str, items: list[bytes]) -> int:
        events: list[Event] = []
        rows: list[tuple[object, ...]] = []
        kept: list[bytes] = []
        bad: list[bytes] = []
        for item in items:
            try:
                event = EVENT_DECODER.decode(item)
                if event.operator != operator:
                    raise InvalidEventError(f"an event of {event.operator!r} in {operator!r}'s outbox")
                rows.append(_row(event))
            except (msgspec.DecodeError, InvalidEventError) as exc:
                log.warning("outbox item rejected", extra={"operator": operator, "error": str(exc)})
                bad.append(item)
                continue
            events.append(event)
            kept.append(item)
        if bad:
            await self._reject(keys=[outbox_key(operator), rejected_key(operator)], args=bad)
        new: list[Event] = []
        if rows:
            async with pool.acquire() as conn:
                new = await _store(conn, events, rows)
        if new:
            await self._client.publish(events_channel(operator), EVENT_ENCODER.encode(new))
        if kept:
            async with self._client.pipeline(transaction=False) as pipe:
                for item in kept:
                    pipe.lrem(outbox_key(operator), 1, item)  # type: ignore[arg-type]
                await pipe.execute()
        return len(new)
