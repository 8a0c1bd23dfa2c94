"""Recompute an operator's events of a time range from its stored positions, with ingest's own step.

The stored frames are read back in pages ordered by (bus, time, seq), rebuilt
as the ``Accepted`` frames ingest had, and run through
:func:`fleet_ingest.trips.follow` page after page, each bus's saved progress
and detector state carried in memory as Redis would hold them
(``Followed.carried``). What ``follow`` gives a bus depends only on that
bus's fixes in order and its saved state (``now_ms``, a page's newest fix
time here, only bounds fixes stamped in the future), so any split into pages
gives what live processing gave when the frames arrived in order.

Where replay and live can differ, and why:

* state at the start: live buses had state from before the range (a trip
  under way, a fence they were in). Replay starts ``warmup_ms`` earlier with
  no state and keeps only the events dated inside the range, so detectors
  have time to find where each bus is;
* a late frame (older than its bus's state when it arrived) produced no live
  event, but replay runs it in time order;
* replay uses the operator's active feed, fences and thresholds of today;
* positions keep speed, accuracy and heading as 4-byte floats, so a value
  within a rounding step of a limit may fall on the other side.

Offline: a bus whose last fix is followed by a silence of ``offline_s`` inside
the range gets the ``bus_offline`` the sweep gave it (the gap rule gives the
same key when its next fix is in the range).

Then compared by key with the stored events of the range: recomputed and
already stored, missing (stored unless ``dry_run``), stored but not
recomputed (deleted only with ``replace``), and the same key with other
content (rewritten only with ``replace``). Events added here are history: they
are not published on the live channel.

The same replay gives ingest back a bus's processing state when Redis has
none for it but PostgreSQL has its frames (Redis lost its keys, or the state
expired): :func:`frames_before` reads the bus's newest stored frames from
``FLEET_INGEST_RECOVER_S`` before the oldest of its batch up to the newest
of its batch (the batch's own left out), :func:`recovered_states`
runs them, and the bus goes on from the state they lead to instead of from
nothing, which would raise its
``trip_assigned``, ``geofence_entered`` or ``bus_online`` a second time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from fleet_ingest.assess import Accepted, BusKey
from fleet_ingest.storage import POSITION_COLUMNS
from fleet_ingest.trips import OperatorModel, SavedBus, follow
from fleet_processing.detect import DetectContext, load_state, went_offline
from fleet_schemas.events import Event
from fleet_schemas.frames import Frame
from fleet_store.events import delete_events, read_events, write_events

PAGE_ROWS = 20_000
"""stored frames read and run per page"""
DEFAULT_WARMUP_MS = 2 * 3_600_000
"""replay starts this long before the range, so each bus's state is found before it counts"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FRAME_COLUMNS = tuple(c for c in POSITION_COLUMNS if c not in ("time", "operator", "key_id"))
"""the position columns a Frame has a field for"""
# Built from the constant names above, never from input.
_PAGE = f"""
SELECT {", ".join(_FRAME_COLUMNS)}, key_id, (extract(epoch FROM time) * 1000)::bigint AS time_ms, time
FROM positions
WHERE operator = $1 AND time >= $2 AND time < $3 AND (bus, time, seq, device) > ($4, $5, $6, $7)
ORDER BY bus, time, seq, device
LIMIT $8
"""  # noqa: S608
_COUNT = "SELECT count(*) FROM positions WHERE operator = $1 AND time >= $2 AND time < $3"
# Built from the constant names above, never from input.
_BEFORE = f"""
SELECT r.* FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[], $6::int[])
  AS b(bus, since, until, most)
CROSS JOIN LATERAL (
  SELECT {", ".join(_FRAME_COLUMNS)}, key_id, (extract(epoch FROM time) * 1000)::bigint AS time_ms
  FROM positions
  WHERE operator = $1 AND bus = b.bus AND time <= b.until AND time >= b.since - make_interval(secs => $5)
  ORDER BY time DESC, seq DESC
  LIMIT b.most
) AS r
ORDER BY r.bus, r.time_ms, r.seq
"""  # noqa: S608


class Replay:
    """Ingest's processing step over stored frames in order, each bus's saved state kept here."""

    def __init__(self, models: Mapping[str, OperatorModel], contexts: Mapping[str, DetectContext]) -> None:
        self._models = models
        self._contexts = contexts
        self.saved: dict[BusKey, SavedBus] = {}
        self.events: list[Event] = []
        self.fixes = 0
        self.late = 0
        """fixes not newer than their bus's state (a frame stored twice with other sequences, say)"""

    def feed(self, kept: Sequence[Accepted]) -> None:
        """Run one page of frames (each bus's in time order, after those of the pages before)."""
        if not kept:
            return
        followed = follow(self._models, self._contexts, kept, self.saved, max(a.frame.time_ms for a in kept))
        self.saved = followed.carried(self.saved)
        self.events += followed.events
        self.fixes += len(kept)
        self.late += sum(followed.late.values())

    def finish(self, until_ms: int) -> list[Event]:
        """Every event found, with the ``bus_offline`` of buses silent long enough before ``until_ms``."""
        out = list(self.events)
        for (operator, bus), saved in self.saved.items():
            context = self._contexts.get(operator) or DetectContext(operator)
            silent = went_offline(bus, load_state(saved.state), context)
            if silent is not None and silent[1].time_ms < until_ms:
                out.append(silent[1])
        return out


class Comparison(msgspec.Struct, frozen=True):
    """Recomputed events against the stored ones, by key."""

    recomputed: int
    already: int
    """recomputed and stored alike"""
    missing: list[Event]
    """recomputed, not stored"""
    extra: list[Event]
    """stored, not recomputed"""
    changed: list[Event]
    """stored under the same key with other content (the recomputed version)"""


def compare(recomputed: Iterable[Event], stored: Iterable[Event]) -> Comparison:
    """Match events by key (a key recomputed twice counts once)."""
    fresh = {e.key: e for e in recomputed}
    held = {e.key: e for e in stored}
    missing = [e for k, e in fresh.items() if k not in held]
    changed = [e for k, e in fresh.items() if k in held and held[k] != e]
    extra = [e for k, e in held.items() if k not in fresh]
    return Comparison(len(fresh), len(fresh) - len(missing) - len(changed), missing, extra, changed)


class ReprocessReport(msgspec.Struct, frozen=True, kw_only=True):
    operator: str
    from_ms: int
    to_ms: int
    warmup_ms: int
    fixes: int
    """stored frames replayed (warm-up included)"""
    late: int
    recomputed: int
    already_stored: int
    missing: list[Event]
    stored_not_recomputed: list[Event]
    changed: list[Event]
    added: int
    """events stored now (missing ones, and changed ones with ``replace``)"""
    deleted: int
    """stored events deleted (not recomputed, or changed, with ``replace``)"""
    dry_run: bool
    replace: bool


Progress = Callable[[int, int, int], None]
"""(fixes replayed, fixes in all, events found so far)"""


def _time(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _accepted(operator: str, row: asyncpg.Record) -> Accepted:
    fields = {name: row[name] for name in _FRAME_COLUMNS}
    return Accepted(operator, row["key_id"], Frame(**fields, time_ms=row["time_ms"]))


async def stored_frames(
    conn: asyncpg.pool.PoolConnectionProxy | asyncpg.Connection,
    operator: str,
    from_ms: int,
    to_ms: int,
    page_rows: int = PAGE_ROWS,
) -> AsyncIterator[list[Accepted]]:
    """An operator's stored frames with ``from_ms <= time < to_ms``, in pages by (bus, time, seq)."""
    cursor: tuple[str, datetime, int, str] = ("", _EPOCH, 0, "")
    while True:
        rows = await conn.fetch(_PAGE, operator, _time(from_ms), _time(to_ms), *cursor, page_rows)
        if not rows:
            return
        yield [_accepted(operator, r) for r in rows]
        last = rows[-1]
        cursor = (last["bus"], last["time"], last["seq"], last["device"])
        if len(rows) < page_rows:
            return


async def frames_before(
    conn: asyncpg.pool.PoolConnectionProxy | asyncpg.Connection,
    operator: str,
    batch: Mapping[str, Sequence[Frame]],
    window_s: float,
    per_bus: int,
) -> list[Accepted]:
    """Each bus's stored frames from ``window_s`` before the oldest of its ``batch`` frames up to the
    newest, those left out, its newest ``per_bus`` at most, in (bus, time, seq) order: what it drove
    besides the frames now being processed. Up to the newest, not the oldest: a batch may hold a frame
    older than frames already processed (a redelivery beside new ones); those must be in the state, and
    that frame is then late, as it would have been live. Not past the newest: frames after the batch may
    be another process's, committed and not yet processed, whose events a replay would drop."""
    if not batch:
        return []
    buses = sorted(batch)
    own = {(f.device, f.seq) for frames in batch.values() for f in frames}
    since = [_time(min(f.time_ms for f in batch[b])) for b in buses]
    until = [_time(max(f.time_ms for f in batch[b])) for b in buses]
    most = [per_bus + len(batch[b]) for b in buses]  # the batch's own rows come back too, then left out
    rows = await conn.fetch(_BEFORE, operator, buses, since, until, float(window_s), most)
    kept: dict[str, list[Accepted]] = {}
    for row in rows:
        accepted = _accepted(operator, row)
        if (accepted.frame.device, accepted.frame.seq) not in own:
            kept.setdefault(accepted.frame.bus, []).append(accepted)
    return [a for frames in kept.values() for a in frames[-per_bus:]]


def recovered_states(
    models: Mapping[str, OperatorModel], contexts: Mapping[str, DetectContext], frames: Sequence[Accepted]
) -> dict[BusKey, SavedBus]:
    """The progress and detector state each bus's ``frames`` (in time order) lead to; their events dropped,
    as ingest raised them when the frames came."""
    replay = Replay(models, contexts)
    for start in range(0, len(frames), PAGE_ROWS):
        replay.feed(frames[start : start + PAGE_ROWS])
    return replay.saved


async def reprocess(
    pool: asyncpg.Pool,
    operator: str,
    from_ms: int,
    to_ms: int,
    *,
    models: Mapping[str, OperatorModel],
    context: DetectContext,
    warmup_ms: int = DEFAULT_WARMUP_MS,
    dry_run: bool = False,
    replace: bool = False,
    page_rows: int = PAGE_ROWS,
    progress: Progress | None = None,
) -> ReprocessReport:
    """Replay the range (and its warm-up), compare with the stored events, add or replace as asked."""
    replay = Replay(models, {operator: context})
    async with pool.acquire() as conn:
        total = int(await conn.fetchval(_COUNT, operator, _time(from_ms - warmup_ms), _time(to_ms)))
        async for page in stored_frames(conn, operator, from_ms - warmup_ms, to_ms, page_rows):
            replay.feed(page)
            if progress is not None:
                progress(replay.fixes, total, len(replay.events))
        recomputed = [e for e in replay.finish(to_ms) if from_ms <= e.time_ms < to_ms]
        stored = await read_events(conn, operator, since_ms=from_ms, until_ms=to_ms, limit=None)
        found = compare(recomputed, stored)
        added = deleted = 0
        if not dry_run:
            async with conn.transaction():
                if replace:
                    deleted = await delete_events(conn, found.extra + found.changed)
                adding = found.missing + found.changed if replace else found.missing
                added = len(await write_events(conn, adding))
    return ReprocessReport(
        operator=operator,
        from_ms=from_ms,
        to_ms=to_ms,
        warmup_ms=warmup_ms,
        fixes=replay.fixes,
        late=replay.late,
        recomputed=found.recomputed,
        already_stored=found.already,
        missing=found.missing,
        stored_not_recomputed=found.extra,
        changed=found.changed,
        added=added,
        deleted=deleted,
        dry_run=dry_run,
        replace=replace,
    )
