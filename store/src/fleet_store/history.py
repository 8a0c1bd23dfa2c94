"""Stop visits and the segment travel-time rollup the ETA model learns from (migration 011).

``write_visits`` stores what progress reported (a bus served a stop) once per
(operator, bus, trip instance, stop_sequence): COPY into a per-connection
TEMP staging table, then ``INSERT … ON CONFLICT DO NOTHING``, as ingest
stores positions; a visit re-sent after a redelivery is skipped. Each new
visit gets a ``stop_visits_pending`` row in the same transaction.

``refresh_segment_times`` rolls pending visits up into ``segment_times``
(previous stop's departure to this stop's arrival, by hour of week of the
departure) and ``dwell_times``. Why it is not "every visit newer than the
last refresh mark": identity values are handed out at INSERT and committed
in another order, so a visit whose transaction commits after a refresh read
the mark would fall below it and never be counted (``fleet_store.maintain``'s
rollups had that bug once). Instead, the refresh deletes the pending rows it
claims (``FOR UPDATE SKIP LOCKED``, so two refreshes at once take disjoint
sets) and aggregates exactly those visits in the same statement; a visit
committed meanwhile keeps its pending row for the next refresh. Rollup rows
are merged with Chan's parallel form of Welford's update under the row
lock ``ON CONFLICT DO UPDATE`` takes, so concurrent merges serialize.

The rollup forgets slowly: before a merge, a row's count is capped at
``FORGET_AFTER`` (its M2 scaled alike), so old observations weigh as if there
were that many and the means follow roads that change (works, a new bypass).

Dwell is learnt only from buses that were not early (arrived at or after the
scheduled arrival): an early bus's dwell includes waiting for the timetable,
which the ETA model adds itself by holding at timepoints. A segment is the
previous visit of the same trip instance to this one; a visit whose
predecessor is stored after it was rolled up loses that one pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec

from fleet_schemas.trips import StopVisit
from fleet_store.errors import FleetError

FORGET_AFTER = 200
"""a rollup row's count is capped at this before each merge"""
MAX_SEGMENT_S = 12 * 3600
"""a longer travel time between two stops is not a trip (a bus parked overnight), and not learnt"""

_STAGING = "stop_visits_staging"
VISIT_COLUMNS = (
    "operator",
    "bus",
    "feed_id",
    "trip_id",
    "start_date",
    "start_time",
    "stop_sequence",
    "stop_id",
    "arrived",
    "departed",
    "scheduled_arrival",
    "scheduled_departure",
    "interpolated",
)
_COLUMNS = ", ".join(VISIT_COLUMNS)
# Built from the constant names above, never from input.
_PREPARE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS"
    f" AS SELECT {_COLUMNS} FROM stop_visits WITH NO DATA"
)
_MOVE = f"""
WITH new AS (
    INSERT INTO stop_visits ({_COLUMNS}) SELECT {_COLUMNS} FROM {_STAGING}
    ON CONFLICT DO NOTHING RETURNING id
)
INSERT INTO stop_visits_pending (visit_id) SELECT id FROM new
"""

_KEPT = f"least(r.n, {FORGET_AFTER})"
"""the old row's count as merged: capped, so the rollup forgets slowly"""
_MERGED = f"""
    n = {_KEPT} + excluded.n,
    mean_s = r.mean_s + (excluded.mean_s - r.mean_s) * excluded.n / ({_KEPT} + excluded.n),
    m2 = r.m2 * {_KEPT} / r.n + excluded.m2
         + (excluded.mean_s - r.mean_s) ^ 2 * {_KEPT} * excluded.n / ({_KEPT} + excluded.n),
    updated_at = now()"""

_REFRESH = f"""
WITH claimed AS (
    DELETE FROM stop_visits_pending WHERE visit_id IN (
        SELECT visit_id FROM stop_visits_pending ORDER BY visit_id LIMIT $1 FOR UPDATE SKIP LOCKED
    ) RETURNING visit_id
), visits AS (
    SELECT v.* FROM stop_visits v JOIN claimed c ON v.id = c.visit_id
), pairs AS (
    SELECT v.operator, p.stop_id AS from_stop_id, v.stop_id AS to_stop_id,
           fleet_hour_of_week(p.departed) AS hour_of_week,
           extract(epoch FROM v.arrived - p.departed)::double precision AS seconds, v.arrived AS observed
    FROM visits v CROSS JOIN LATERAL (
        SELECT s.stop_id, s.departed FROM stop_visits s
        WHERE s.operator = v.operator AND s.bus = v.bus AND s.trip_id = v.trip_id
          AND s.start_date = v.start_date AND s.start_time = v.start_time
          AND s.stop_sequence < v.stop_sequence
        ORDER BY s.stop_sequence DESC LIMIT 1
    ) p
    -- a pair both of whose visits are claimed now is counted once, by its later visit: the lateral
    -- join finds the earlier one whether it is claimed now or was rolled up before
), dwells AS (
    INSERT INTO dwell_times AS r (operator, stop_id, hour_of_week, n, mean_s, m2)
    SELECT operator, stop_id, fleet_hour_of_week(arrived), count(*),
           avg(extract(epoch FROM departed - arrived)),
           coalesce(var_pop(extract(epoch FROM departed - arrived)), 0) * count(*)
    FROM visits WHERE arrived >= scheduled_arrival
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (operator, stop_id, hour_of_week) DO UPDATE SET {_MERGED}
    RETURNING 1
), segments AS (
    INSERT INTO segment_times AS r
        (operator, from_stop_id, to_stop_id, hour_of_week, n, mean_s, m2, last_s, last_at)
    SELECT operator, from_stop_id, to_stop_id, hour_of_week, count(*), avg(seconds),
           coalesce(var_pop(seconds), 0) * count(*),
           (array_agg(seconds ORDER BY observed DESC))[1], max(observed)
    FROM pairs WHERE seconds >= 0 AND seconds < {MAX_SEGMENT_S}
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (operator, from_stop_id, to_stop_id, hour_of_week) DO UPDATE SET {_MERGED},
        last_s = CASE WHEN excluded.last_at >= r.last_at THEN excluded.last_s ELSE r.last_s END,
        last_at = greatest(r.last_at, excluded.last_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM claimed) AS visits, (SELECT count(*) FROM segments) AS segments,
       (SELECT count(*) FROM dwells) AS dwells
"""


class InvalidVisitError(FleetError):
    """A stop visit that cannot be history: it leaves before it arrives."""

    code = "invalid_visit"


class SegmentTime(msgspec.Struct, frozen=True, kw_only=True):
    """A ``segment_times`` row as the ETA model reads it (``fleet_processing.eta.SegmentRow``)."""

    operator: str
    from_stop_id: str
    to_stop_id: str
    hour_of_week: int
    n: int
    mean_s: float
    var_s: float
    """sample variance (M2 / (n - 1)); 0 for one observation"""
    last_s: float
    last_ms: int
    """when that latest observation ended (the bus reached ``to_stop_id``)"""


class DwellTime(msgspec.Struct, frozen=True, kw_only=True):
    """A ``dwell_times`` row (``fleet_processing.eta.DwellRow``)."""

    operator: str
    stop_id: str
    hour_of_week: int
    n: int
    mean_s: float
    var_s: float


class HistoryRows(msgspec.Struct, frozen=True):
    segments: list[SegmentTime]
    dwells: list[DwellTime]


class RefreshReport(msgspec.Struct, frozen=True):
    visits: int
    """visits rolled up"""
    segment_rows: int
    dwell_rows: int


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _row(v: StopVisit) -> tuple[object, ...]:
    if v.departed_ms < v.arrived_ms:
        raise InvalidVisitError(
            f"bus {v.bus} trip {v.trip_id} stop_sequence {v.stop_sequence}: departed before it arrived"
        )
    return (
        v.operator,
        v.bus,
        v.feed_id,
        v.trip_id,
        v.start_date,
        v.start_time,
        v.stop_sequence,
        v.stop_id,
        _time(v.arrived_ms),
        _time(v.departed_ms),
        _time(v.scheduled_arrival_ms),
        _time(v.scheduled_departure_ms),
        v.interpolated,
    )


async def write_visits(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, visits: Sequence[StopVisit]
) -> int:
    """Store the visits not stored before (in the caller's transaction if there is one); return how many."""
    if not visits:
        return 0
    records = [_row(v) for v in visits]
    async with conn.transaction():
        await conn.execute(_PREPARE)
        await conn.copy_records_to_table(_STAGING, records=records, columns=VISIT_COLUMNS)
        status = await conn.execute(_MOVE)
    return int(status.split()[-1])


async def refresh_segment_times(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, visits_per_round: int = 20_000
) -> RefreshReport:
    """Roll every pending visit up, in rounds of one transaction each; safe to run twice at once."""
    visits = segments = dwells = 0
    while True:
        async with conn.transaction():
            row = await conn.fetchrow(_REFRESH, visits_per_round)
        assert row is not None  # an aggregate SELECT always returns its row
        if not row["visits"]:
            return RefreshReport(visits, segments, dwells)
        visits += row["visits"]
        segments += row["segments"]
        dwells += row["dwells"]


_SEGMENTS = (
    "SELECT operator, from_stop_id, to_stop_id, hour_of_week, n, mean_s,"
    " CASE WHEN n > 1 THEN greatest(m2 / (n - 1), 0) ELSE 0 END AS var_s, last_s,"
    " (extract(epoch FROM last_at) * 1000)::bigint AS last_ms"
    " FROM segment_times"
)


async def load_segment_history(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, operator: str
) -> HistoryRows:
    """Every rollup row of one operator, for ``fleet_processing.eta.SegmentHistory``."""
    segments = await conn.fetch(f"{_SEGMENTS} WHERE operator = $1", operator)
    dwells = await conn.fetch(
        "SELECT operator, stop_id, hour_of_week, n, mean_s,"
        " CASE WHEN n > 1 THEN greatest(m2 / (n - 1), 0) ELSE 0 END AS var_s"
        " FROM dwell_times WHERE operator = $1",
        operator,
    )
    return HistoryRows(
        [SegmentTime(**dict(r)) for r in segments],
        [DwellTime(**dict(r)) for r in dwells],
    )


async def segment_times_between(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    operator: str,
    from_stop_id: str,
    to_stop_id: str,
) -> list[SegmentTime]:
    """The rollup rows of one stop-to-stop segment, by hour of week (only the hours observed)."""
    rows = await conn.fetch(
        f"{_SEGMENTS} WHERE operator = $1 AND from_stop_id = $2 AND to_stop_id = $3 ORDER BY hour_of_week",
        operator,
        from_stop_id,
        to_stop_id,
    )
    return [SegmentTime(**dict(r)) for r in rows]


async def forget_visits(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, days: int) -> int:
    """Delete visits older than ``days`` (their rollups stay); return how many."""
    status = await conn.execute(
        "DELETE FROM stop_visits WHERE arrived < now() - make_interval(days => $1)", days
    )
    return int(status.split()[-1])
