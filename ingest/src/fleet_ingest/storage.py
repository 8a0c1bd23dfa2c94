"""History in TimescaleDB: one transaction per micro-batch, idempotent, once per (device, seq).

Accepted frames are COPYed into a per-connection TEMP staging table, one row
per identity. Their identities go into ``frame_ids`` (primary key device, seq)
first, and only the frames whose identity was new move on into ``positions``:
a frame stored before (a QoS 1 redelivery, an agent retry) is skipped, and so
is a frame that reuses a stored sequence number with another fix time, which
is recorded as a ``seq_conflict`` rejection instead. ``positions`` cannot do
this itself: a hypertable's unique keys must hold its time column, so
``(device, seq, time)`` is the most it could enforce, and the same sequence at
another time is a new key there. So ``positions`` has no unique key at all
(migration 007) and ``frame_ids``, a plain table kept as long as positions
are, is the identity.

Rejections go to ``rejected_frames`` in the same transaction, once per
distinct message: each row has a fingerprint (SHA-256 of topic, reason,
sequence and raw bytes), claimed in ``rejection_fingerprints`` (kept 8 days,
``fleet_store.maintain.REPEAT_WINDOW``); a rejection whose fingerprint is
claimed already is counted, not stored again. A redelivery after a crash
between commit and ack cannot be told apart by MQTT's DUP flag (Mosquitto
2.0.21 redelivered hundreds of such messages without it after a SIGKILL), so
identical bytes on the same topic are one message, whether the broker or the
device sent them twice; ``fleet_ingest_rejections_repeated_total`` counts the
repeats. Raw bytes are kept up to ``RAW_KEPT_BYTES`` with the full length
and hash. The minutes whose rollups a batch makes stale are marked in the same
transaction (``rollup_pending``, see fleet_store.maintain).

Failures come in two kinds. A transient one (the database is away) is raised
for the caller to retry with the same batch id, acking nothing. A permanent one
(PostgreSQL refuses a value of one message, and always will) must not stall the
stream: :func:`store_messages` finds the message by halving the batch, stores
the others, and keeps that one as an ``unstorable`` rejection with its raw bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec

from fleet_ingest.assess import Accepted, Incoming, Rejected, claimed_by
from fleet_schemas import encode_frame, frames_topic
from fleet_store.events import epoch_ms

log = logging.getLogger("fleet_ingest.storage")

RAW_KEPT_BYTES = 64 * 1024
"""A rejected payload is kept up to this many bytes (with its full length and SHA-256)."""

POSITION_COLUMNS = (
    "time",
    "device",
    "seq",
    "operator",
    "bus",
    "lat",
    "lon",
    "accuracy_m",
    "speed_mps",
    "heading_deg",
    "altitude_m",
    "satellites",
    "hdop",
    "ignition",
    "door_open",
    "passengers",
    "fuel_pct",
    "trip_id",
    "source",
    "battery_pct",
    "charging",
    "key_id",
)
_STAGED = ", ".join(POSITION_COLUMNS)
_STAGING = "positions_staging"
_CLAIM_BATCH = "INSERT INTO ingest_batches (id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id"
# Built from the constant names above, never from input. The batch's claim and its identities'
# claims, in one round trip; it answers whether the batch was new and which staged identities
# were stored before (looked for only when fewer were claimed than staged: none in the usual
# batch, which sends back no row per frame). $2 is the number of staged rows.
_CLAIM_STAGED = f"""
WITH batch AS (
    {_CLAIM_BATCH}
), claimed AS (
    INSERT INTO frame_ids (device, seq, time)
    SELECT device, seq, time FROM {_STAGING} WHERE EXISTS (SELECT FROM batch)
    ON CONFLICT DO NOTHING RETURNING device, seq
), counted AS (
    SELECT count(*) AS claimed FROM claimed
)
SELECT EXISTS (SELECT FROM batch) AS new_batch,
    CASE WHEN claimed < $2 THEN (
        SELECT array_agg((device, seq)) FROM (
            SELECT device, seq FROM {_STAGING} EXCEPT ALL SELECT device, seq FROM claimed
        ) AS known
    ) END AS known
FROM counted
"""
_UNSTAGE = f"DELETE FROM {_STAGING} WHERE (device, seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))"
# What is left staged is new: into positions, and the minutes whose rollups it makes stale
# marked (one row per batch and minute, never updated: see fleet_store.maintain for why that
# cannot lose a minute).
_MOVE_STAGED = f"""
WITH pending AS (
    INSERT INTO rollup_pending (bucket) SELECT DISTINCT time_bucket('1 minute', time) FROM {_STAGING}
)
INSERT INTO positions ({_STAGED}, received_at) SELECT {_STAGED}, clock_timestamp() FROM {_STAGING}
"""
# Only for the frames whose identity was not new (redeliveries, mostly): an index lookup each.
_STORED_TIMES = (
    "SELECT device, seq, time FROM frame_ids"
    " WHERE (device, seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))"
)
_REJECT = """
WITH r AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bytea[], $7::int[],
                         $8::bytea[], $9::bytea[])
        AS r(topic, reason, detail, device, seq, raw, raw_length, raw_sha256, fingerprint)
), claimed AS (
    INSERT INTO rejection_fingerprints (fingerprint) SELECT DISTINCT fingerprint FROM r
    ON CONFLICT DO NOTHING RETURNING fingerprint
)
INSERT INTO rejected_frames (topic, reason, detail, device, seq, raw, raw_length, raw_sha256, fingerprint)
SELECT DISTINCT ON (r.fingerprint) r.* FROM r JOIN claimed USING (fingerprint)
"""


class Stored(msgspec.Struct):
    """What one commit did, beyond storing the rejections it was given."""

    new: set[tuple[str, int]] = msgspec.field(default_factory=set)
    """(device, seq) of the frames stored for the first time"""
    refused: list[Rejected] = msgspec.field(default_factory=list)
    """rejections the store made itself: ``seq_conflict`` frames, ``unstorable`` messages"""
    conflicts: set[tuple[str, int, int]] = msgspec.field(default_factory=set)
    """(device, seq, fix time ms) of the frames refused as ``seq_conflict``"""
    dropped: set[int] = msgspec.field(default_factory=set)
    """messages (batch indexes) kept only as an ``unstorable`` rejection"""
    repeated: int = 0
    """rejections not stored again because an earlier delivery's are"""

    def kept(self, accepted: Sequence[Accepted]) -> list[Accepted]:
        """The accepted frames that are in history as sent (not refused here), whose live state may move."""
        if not self.refused:
            return list(accepted)
        return [
            a
            for a in accepted
            if a.message not in self.dropped and (*_key(a), a.frame.time_ms) not in self.conflicts
        ]

    def merge(self, other: Stored) -> None:
        self.new |= other.new
        self.refused += other.refused
        self.dropped |= other.dropped
        self.conflicts |= other.conflicts
        self.repeated += other.repeated


async def prepare_connection(conn: asyncpg.Connection) -> None:
    """Pool ``init``: the staging table lives as long as the connection, emptied at each commit."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS"
        f" AS SELECT {_STAGED} FROM positions WITH NO DATA"
    )


def _fix_time(frame_ms: int) -> datetime:
    return datetime.fromtimestamp(frame_ms / 1000, UTC)


def _position_row(item: Accepted) -> tuple[object, ...]:
    f = item.frame
    return (
        _fix_time(f.time_ms),
        f.device,
        f.seq,
        item.operator,
        f.bus,
        f.lat,
        f.lon,
        f.accuracy_m,
        f.speed_mps,
        f.heading_deg,
        f.altitude_m,
        f.satellites,
        f.hdop,
        f.ignition,
        f.door_open,
        f.passengers,
        f.fuel_pct,
        f.trip_id,
        f.source,
        f.battery_pct,
        f.charging,
        item.key_id,
    )


def _safe_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; a topic or detail may (the wire's own text never does)."""
    return value.replace("\x00", "\ufffd")


def _rejected_rows(rejected: Sequence[Rejected]) -> list[list[object]]:
    columns: list[list[object]] = [[] for _ in range(9)]
    for r in rejected:
        digest = hashlib.sha256(r.raw).digest()
        fingerprint = hashlib.sha256(f"{r.topic}\x00{r.reason}\x00{r.seq}\x00".encode() + digest).digest()
        values = (
            _safe_text(r.topic),
            r.reason,
            _safe_text(r.detail),
            None if r.device is None else _safe_text(r.device),
            r.seq,
            r.raw[:RAW_KEPT_BYTES],
            len(r.raw),
            digest,
            fingerprint,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


async def store_batch(
    pool: asyncpg.Pool, batch_id: uuid.UUID, accepted: Sequence[Accepted], rejected: Sequence[Rejected]
) -> Stored:
    """Commit one micro-batch in one transaction; say what was new, and what the store refused.

    Retrying with the same ``batch_id`` after a failure whose outcome is
    unknown (the connection lost during COMMIT) stores nothing twice.
    """
    stored = Stored()
    async with pool.acquire() as conn, conn.transaction():
        rejections = list(rejected)
        if accepted:
            # One staged row per identity: the first of a batch's copies; the rest are duplicates
            # (or seq conflicts, found below), and frame_ids is the only key that stops a second row.
            first = {_key(a): a for a in reversed(accepted)}
            await conn.copy_records_to_table(
                _STAGING,
                records=[_position_row(a) for a in first.values()],
                columns=POSITION_COLUMNS,
            )
            claimed = await conn.fetchrow(_CLAIM_STAGED, batch_id, len(first))
            assert claimed is not None  # an aggregate's row: always one
            if not claimed["new_batch"]:
                return stored  # committed by the attempt whose answer was lost
            fresh = set(first)
            if claimed["known"]:  # stored before: not again
                known = [(device, seq) for device, seq in claimed["known"]]
                fresh.difference_update(known)
                await conn.execute(_UNSTAGE, [device for device, _ in known], [seq for _, seq in known])
            await conn.execute(_MOVE_STAGED)
            stored.new = fresh
            conflicting = await _seq_conflicts(conn, fresh, first, accepted)
            stored.conflicts = {(*_key(a), a.frame.time_ms) for a in conflicting}
            stored.refused = [_conflict_row(a) for a in conflicting]
            rejections += stored.refused
        elif await conn.fetchval(_CLAIM_BATCH, batch_id) is None:
            return stored  # committed by the attempt whose answer was lost
        if rejections:
            status = await conn.execute(_REJECT, *_rejected_rows(rejections))
            stored.repeated = len(rejections) - int(status.split()[-1])
        return stored


def _key(item: Accepted) -> tuple[str, int]:
    return item.frame.device, item.frame.seq


async def _seq_conflicts(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    fresh: set[tuple[str, int]],
    first: dict[tuple[str, int], Accepted],
    accepted: Sequence[Accepted],
) -> list[Accepted]:
    """The frames whose identity is stored (now or before) with another fix time.

    A new identity was stored with the fix time of its ``first`` copy in the batch. Only the
    frames whose identity was not new are looked up (redeliveries, mostly), one index probe
    each; in a batch without them there is no query at all.
    """
    if len(fresh) == len(accepted):
        return []  # every frame was a new identity of its own: the usual batch
    stored_ms = {key: first[key].frame.time_ms for key in fresh}
    seen = [a for a in accepted if _key(a) not in fresh]
    if seen:
        rows = await conn.fetch(_STORED_TIMES, [a.frame.device for a in seen], [a.frame.seq for a in seen])
        stored_ms.update({(r["device"], r["seq"]): epoch_ms(r["time"]) for r in rows})
    return [item for item in accepted if stored_ms.get(_key(item), item.frame.time_ms) != item.frame.time_ms]


def _conflict_row(item: Accepted) -> Rejected:
    return Rejected(
        frames_topic(item.operator, item.frame.device),
        "seq_conflict",
        f"sequence {item.frame.seq} is stored with another fix time",
        item.frame.device,
        item.frame.seq,
        encode_frame(item.frame),
        item.message,
    )


def is_permanent(exc: BaseException) -> bool:
    """Whether PostgreSQL (or asyncpg, encoding a value) refuses this data for good.

    Data exceptions (SQLSTATE class 22: a NUL in text, a number out of range)
    and integrity violations (class 23) fail the same way on every retry, and so
    does a value asyncpg cannot encode (its client-side DataError is both an
    InterfaceError and a ValueError). Everything else, connection loss included,
    is worth retrying.
    """
    if isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError | UnicodeError):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


def _describe(exc: BaseException) -> str:
    """The error's kind and PostgreSQL's message: never its DETAIL or asyncpg's text, which quote values."""
    if isinstance(exc, asyncpg.PostgresError):
        return f"{type(exc).__name__} ({exc.sqlstate}): {exc.message}"
    return type(exc).__name__


PART_MIN_FRAMES = 5_000
"""a batch is split into concurrent parts only if each part gets this many accepted frames.

Measured on 2 cores (2026-12-02, alternated drains of 100,000 frames): two parts stored batches of
100-frame messages (50,000-140,000 frames) 1.25 times faster, but not 2,000-frame batches of
one-frame messages, whose check and broker already keep the cores busy meanwhile."""


def parts_by_device(incoming: Sequence[Incoming], accepted_frames: int, parts: int) -> list[list[int]]:
    """The batch's message indexes in at most ``parts`` groups, each device's messages in one group.

    A device's frames are its identities, and its rejections' fingerprints name its topic: no unique
    key is written by two parts, so concurrent parts never wait for each other's locks.
    """
    count = max(1, min(parts, accepted_frames // PART_MIN_FRAMES))
    if count == 1:
        return [list(range(len(incoming)))]
    groups: list[list[int]] = [[] for _ in range(count)]
    for index, message in enumerate(incoming):
        groups[zlib.crc32((claimed_by(message) or "").encode()) % count].append(index)
    return [group for group in groups if group]


async def store_messages(
    pool: asyncpg.Pool,
    batch_id: uuid.UUID,
    incoming: Sequence[Incoming],
    accepted: Sequence[Accepted],
    rejected: Sequence[Rejected],
    *,
    parts: int = 1,
    done: dict[uuid.UUID, Stored] | None = None,
) -> Stored:
    """Commit a micro-batch; a message refused for good is isolated by halving and kept as ``unstorable``.

    A big batch is split by device into up to ``parts`` transactions committed
    concurrently, on as many connections: PostgreSQL then uses more than one
    core for one ingest process.

    Raises only transient errors; retrying with the same ``batch_id`` redoes
    the same parts and halves under the same derived ids, so no part is stored
    twice. Pass the same ``done`` to every attempt: it keeps what each
    transaction committed, so a retry redoes only the parts and halves that
    failed and still knows what the others stored.
    """
    done = {} if done is None else done
    groups = parts_by_device(incoming, len(accepted), parts)
    if len(groups) == 1:
        return await _store_part(pool, batch_id, incoming, groups[0], accepted, rejected, done)
    results = await asyncio.gather(
        *(
            _store_part(
                pool,
                uuid.uuid5(batch_id, f"part {number} of {len(groups)}"),
                incoming,
                group,
                *_of_messages(group, accepted, rejected),
                done,
            )
            for number, group in enumerate(groups)
        ),
        return_exceptions=True,
    )
    stored = Stored()
    for result in results:
        if isinstance(result, BaseException):
            raise result  # the parts that committed are in ``done``
        stored.merge(result)
    return stored


def _of_messages(
    messages: list[int], accepted: Sequence[Accepted], rejected: Sequence[Rejected]
) -> tuple[list[Accepted], list[Rejected]]:
    """The accepted frames and rejections that came in these messages (a part's or a half's)."""
    keep = set(messages)
    return [a for a in accepted if a.message in keep], [r for r in rejected if r.message in keep]


async def _store_part(
    pool: asyncpg.Pool,
    part_id: uuid.UUID,
    incoming: Sequence[Incoming],
    messages: list[int],
    accepted: Sequence[Accepted],
    rejected: Sequence[Rejected],
    done: dict[uuid.UUID, Stored],
) -> Stored:
    if part_id in done:
        return done[part_id]
    try:
        stored = await store_batch(pool, part_id, accepted, rejected)
    except Exception as exc:
        if not is_permanent(exc) or not messages:
            raise
        if len(messages) > 1:
            stored = Stored()
            half = len(messages) // 2
            for tag, part in (("first", messages[:half]), ("second", messages[half:])):
                stored.merge(
                    await _store_part(
                        pool,
                        uuid.uuid5(part_id, tag),
                        incoming,
                        part,
                        *_of_messages(part, accepted, rejected),
                        done,
                    )
                )
        else:
            stored = await _store_unstorable(pool, part_id, incoming, messages[0], exc)
    done[part_id] = stored
    return stored


async def _store_unstorable(
    pool: asyncpg.Pool, part_id: uuid.UUID, incoming: Sequence[Incoming], index: int, exc: Exception
) -> Stored:
    """Keep the one message PostgreSQL refused as an ``unstorable`` rejection, with its raw bytes."""
    message = incoming[index]
    detail = f"PostgreSQL cannot store it: {_describe(exc)}"
    log.error("message cannot be stored; kept as rejected", extra={"topic": message.topic, "error": detail})
    row = Rejected(message.topic, "unstorable", detail, claimed_by(message), None, message.payload, index)
    stored = await store_batch(pool, uuid.uuid5(part_id, "unstorable"), [], [row])
    stored.refused.append(row)
    stored.dropped.add(index)
    return stored
