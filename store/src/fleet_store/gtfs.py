"""GTFS feed versions in PostgreSQL: written with COPY, switched to atomically, read back whole.

Each import is a new version (a ``gtfs_feeds`` row) whose rows carry its id,
so writing it never touches the active version. ``activate`` makes it the
operator's active one in one transaction (and notifies ``fleet_gtfs`` with
the operator, so running services can reload); the previous version stays
readable with ``load_feed`` until ``drop_feed``. Times and distances are kept
as the normalized ``Feed`` has them (seconds from the service day's origin,
metres along the shape).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from fleet_schemas.gtfs import (
    Agency,
    Calendar,
    CalendarDate,
    Feed,
    Frequency,
    Route,
    Shape,
    Stop,
    StopTime,
    Trip,
)
from fleet_store.errors import FeedActiveError, FeedNotFoundError

NOTIFY_CHANNEL = "fleet_gtfs"
"""notified with the operator's id when its active feed changes"""

FeedState = Literal["loaded", "active", "inactive"]

Written = Callable[[str, int], None]
"""told each table's name and the rows copied into it"""


Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""a connection of its own or one lent by a pool"""


class FeedVersion(msgspec.Struct, frozen=True):
    id: int
    operator: str
    imported_at: datetime
    source: str
    sha256: str
    state: FeedState
    counts: dict[str, int]
    """rows stored per table"""


_COLUMNS: dict[str, tuple[str, ...]] = {
    "gtfs_agencies": ("agency_id", "name", "url", "timezone", "lang", "phone"),
    "gtfs_routes": ("route_id", "agency_id", "route_type", "short_name", "long_name", "color", "text_color"),
    "gtfs_stops": ("stop_id", "lat", "lon", "name", "code", "location_type", "parent_station", "timezone"),
    "gtfs_shapes": ("shape_id", "lats", "lons", "dist_m", "generated"),
    "gtfs_trips": ("trip_id", "route_id", "service_id", "shape_id", "direction_id", "block_id", "headsign"),
    "gtfs_stop_times": (
        "trip_id",
        "stop_sequence",
        "stop_id",
        "arrival_s",
        "departure_s",
        "dist_m",
        "timepoint",
        "interpolated",
        "pickup_type",
        "drop_off_type",
    ),
    "gtfs_calendars": ("service_id", "days", "start_date", "end_date"),
    "gtfs_calendar_dates": ("service_id", "date", "exception_type"),
    "gtfs_frequencies": ("trip_id", "start_s", "end_s", "headway_s", "exact_times"),
}
"""each table's columns after feed_id: the same names, in the same order, as its Struct's fields"""

_STRUCTS: dict[str, type[msgspec.Struct]] = {
    "gtfs_agencies": Agency,
    "gtfs_routes": Route,
    "gtfs_stops": Stop,
    "gtfs_shapes": Shape,
    "gtfs_trips": Trip,
    "gtfs_stop_times": StopTime,
    "gtfs_calendars": Calendar,
    "gtfs_calendar_dates": CalendarDate,
    "gtfs_frequencies": Frequency,
}

_ORDER = {
    "gtfs_stop_times": "trip_id, stop_sequence",
    "gtfs_frequencies": "trip_id, start_s",
    "gtfs_calendar_dates": "service_id, date",
}


_FEED_FIELDS = {
    "gtfs_agencies": "agencies",
    "gtfs_routes": "routes",
    "gtfs_stops": "stops",
    "gtfs_shapes": "shapes",
    "gtfs_trips": "trips",
    "gtfs_stop_times": "stop_times",
    "gtfs_calendars": "calendars",
    "gtfs_calendar_dates": "calendar_dates",
    "gtfs_frequencies": "frequencies",
}
"""which list of the Feed each table holds"""


def _record(feed_id: int, row: msgspec.Struct, columns: tuple[str, ...]) -> tuple[Any, ...]:
    return (feed_id, *(getattr(row, name) for name in columns))


async def write_feed(
    conn: asyncpg.Connection,
    operator: str,
    feed: Feed,
    *,
    source: str,
    sha256: str,
    report: object,
    written: Written | None = None,
) -> int:
    """Store ``feed`` as a new, not yet active version of ``operator``'s feed; its id.

    ``report`` (anything msgspec encodes: the import's notices and counts) is
    kept as JSON with it. One transaction: a failed write leaves nothing.
    """
    tables: dict[str, list[Any]] = {table: getattr(feed, field) for table, field in _FEED_FIELDS.items()}
    counts = {table: len(rows) for table, rows in tables.items()}
    async with conn.transaction():
        feed_id: int = await conn.fetchval(
            "INSERT INTO gtfs_feeds (operator, source, sha256, counts, report)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            operator,
            source,
            sha256,
            msgspec.json.encode(counts).decode(),
            msgspec.json.encode(report).decode(),
        )
        for table, rows in tables.items():
            columns = _COLUMNS[table]
            await conn.copy_records_to_table(
                table,
                records=[_record(feed_id, row, columns) for row in rows],
                columns=("feed_id", *columns),
            )
            if written is not None:
                written(table, len(rows))
    return feed_id


async def activate(conn: asyncpg.Connection, operator: str, feed_id: int) -> None:
    """Make ``feed_id`` the operator's active version in one transaction; the previous one turns inactive."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('fleet_gtfs:' || $1, 0))", operator)
        found = await conn.fetchval(
            "SELECT 1 FROM gtfs_feeds WHERE id = $1 AND operator = $2", feed_id, operator
        )
        if found is None:
            raise FeedNotFoundError(f"operator {operator!r} has no feed version {feed_id}")
        await conn.execute(
            "UPDATE gtfs_feeds SET state = 'inactive' WHERE operator = $1 AND state = 'active' AND id <> $2",
            operator,
            feed_id,
        )
        await conn.execute("UPDATE gtfs_feeds SET state = 'active' WHERE id = $1", feed_id)
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, operator)


async def active_feed_id(conn: Connection, operator: str) -> int | None:
    """The operator's active version, None before its first import."""
    value: int | None = await conn.fetchval(
        "SELECT id FROM gtfs_feeds WHERE operator = $1 AND state = 'active'", operator
    )
    return value


async def active_feeds(conn: Connection) -> dict[str, int]:
    """The active version of every operator that has one."""
    rows = await conn.fetch("SELECT operator, id FROM gtfs_feeds WHERE state = 'active'")
    return {row["operator"]: row["id"] for row in rows}


async def trip_routes(conn: Connection, feed_id: int) -> dict[str, str]:
    """Each trip's route in a version: what realtime feeds name beside the trip."""
    rows = await conn.fetch("SELECT trip_id, route_id FROM gtfs_trips WHERE feed_id = $1", feed_id)
    return {row["trip_id"]: row["route_id"] for row in rows}


async def stop_ids(conn: Connection, feed_id: int, location_type: int = 0) -> frozenset[str]:
    """The ids of a version's stops of one location type (0: where vehicles stop)."""
    rows = await conn.fetch(
        "SELECT stop_id FROM gtfs_stops WHERE feed_id = $1 AND location_type = $2", feed_id, location_type
    )
    return frozenset(row["stop_id"] for row in rows)


async def list_feeds(conn: asyncpg.Connection, operator: str | None = None) -> list[FeedVersion]:
    """Every stored version (of one operator), newest first."""
    rows = await conn.fetch(
        "SELECT id, operator, imported_at, source, sha256, state, counts FROM gtfs_feeds"
        " WHERE $1::text IS NULL OR operator = $1 ORDER BY operator, id DESC",
        operator,
    )
    return [_version(row) for row in rows]


async def stored_report(conn: asyncpg.Connection, feed_id: int) -> tuple[FeedVersion, bytes]:
    """A version and the report it was imported with, as the JSON ``write_feed`` was given."""
    row = await conn.fetchrow(
        "SELECT id, operator, imported_at, source, sha256, state, counts, report"
        " FROM gtfs_feeds WHERE id = $1",
        feed_id,
    )
    if row is None:
        raise FeedNotFoundError(f"no feed version {feed_id}")
    return _version(row), row["report"].encode()


def _version(row: asyncpg.Record) -> FeedVersion:
    fields = {name: row[name] for name in FeedVersion.__struct_fields__}
    return msgspec.convert({**fields, "counts": msgspec.json.decode(row["counts"])}, FeedVersion)


async def drop_feed(conn: asyncpg.Connection, feed_id: int) -> None:
    """Delete a version and all its rows; the active version is refused."""
    async with conn.transaction():
        state = await conn.fetchval("SELECT state FROM gtfs_feeds WHERE id = $1 FOR UPDATE", feed_id)
        if state is None:
            raise FeedNotFoundError(f"no feed version {feed_id}")
        if state == "active":
            raise FeedActiveError(
                f"feed version {feed_id} is active: activate another one before dropping it"
            )
        await conn.execute("DELETE FROM gtfs_feeds WHERE id = $1", feed_id)


async def prune(conn: asyncpg.Connection, operator: str, keep: int) -> list[int]:
    """Drop the operator's versions beyond the ``keep`` newest (never the active one); the ids dropped."""
    rows = await conn.fetch(
        "SELECT id FROM gtfs_feeds WHERE operator = $1 AND state <> 'active' AND id NOT IN"
        " (SELECT id FROM gtfs_feeds WHERE operator = $1 ORDER BY id DESC LIMIT $2)",
        operator,
        keep,
    )
    dropped = [row["id"] for row in rows]
    for feed_id in dropped:
        await drop_feed(conn, feed_id)
    return dropped


async def load_feed(conn: Connection, feed_id: int) -> Feed:
    """A stored version back as the ``Feed`` it was written from (what run-time networks are built from)."""
    if await conn.fetchval("SELECT 1 FROM gtfs_feeds WHERE id = $1", feed_id) is None:
        raise FeedNotFoundError(f"no feed version {feed_id}")
    parts: dict[str, list[Any]] = {}
    for table, columns in _COLUMNS.items():
        order = _ORDER.get(table, columns[0])
        records = await conn.fetch(
            f"SELECT {', '.join(columns)} FROM {table} WHERE feed_id = $1 ORDER BY {order}",  # noqa: S608 - names are ours
            feed_id,
        )
        struct = _STRUCTS[table]
        parts[table] = [_from_record(struct, record) for record in records]
    return Feed(**{field: parts[table] for table, field in _FEED_FIELDS.items()})


def _from_record(struct: type[msgspec.Struct], record: asyncpg.Record) -> Any:
    values = dict(record.items())
    if struct is Calendar:
        values["days"] = tuple(values["days"])
    return struct(**values)


async def has_trip(conn: Connection, operator: str, trip_id: str) -> bool:
    """Whether ``trip_id`` is in the operator's active feed (an API's 404 against an empty prediction)."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM gtfs_feeds f JOIN gtfs_trips t ON t.feed_id = f.id"
        " WHERE f.operator = $1 AND f.state = 'active' AND t.trip_id = $2)",
        operator,
        trip_id,
    )
    return found


async def has_stop(conn: Connection, operator: str, stop_id: str, trip_id: str | None = None) -> bool:
    """Whether ``stop_id`` is in the operator's active feed (and, given ``trip_id``, served by that trip)."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM gtfs_feeds f JOIN gtfs_stops s ON s.feed_id = f.id"
        " WHERE f.operator = $1 AND f.state = 'active' AND s.stop_id = $2 AND ($3::text IS NULL"
        " OR EXISTS (SELECT 1 FROM gtfs_stop_times st"
        " WHERE st.feed_id = f.id AND st.trip_id = $3 AND st.stop_id = $2)))",
        operator,
        stop_id,
        trip_id,
    )
    return found
