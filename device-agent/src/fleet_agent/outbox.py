"""The durable outbox: every frame is stored before any send and removed only after PUBACK.

SQLite in WAL mode. A frame's sequence number is assigned in the same
transaction that stores it, from a counter kept in the same file, so a crash
can neither reuse a number nor leave a gap. A second record of the sequence,
reserved ahead in blocks in a small side file, survives a corrupt database:
the agent then skips ahead (a reported gap), never backwards.

The outbox is bounded (``max_frames``). When it is full the policy is: first
thin frames older than ``thin_after_s`` to one per ``thin_interval_s``, then
drop the oldest; both are counted and ``full`` is raised until it drains.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import msgspec

from fleet_agent.errors import OutboxError
from fleet_schemas import Frame, encode_frame

log = logging.getLogger("fleet_agent.outbox")

SEQUENCE_RESERVE_BLOCK = 10_000
WAL_CHECKPOINT_PAGES = 64
"""fold the WAL into the database every 64 pages (256 KiB at SQLite's 4 KiB page)"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    seq     INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    body    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class OutboxLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bounds and durability of the outbox ([outbox] in agent.toml)."""

    max_frames: int = 200_000
    """At least 48 h of 1 Hz frames (172,800)."""
    thin_after_s: float = 3_600.0
    thin_interval_s: float = 30.0
    durability: Literal["full", "normal"] = "full"
    """'full' fsyncs every commit (survives a power cut); 'normal' only survives a crash of the agent."""


class StoredFrame(msgspec.Struct, frozen=True):
    seq: int
    time_ms: int
    body: bytes


class OutboxCounters(msgspec.Struct, frozen=True):
    """Totals since the outbox was created; they survive restarts."""

    stored: int
    acked: int
    thinned: int
    dropped_full: int
    lost_disk_full: int
    recovered_corrupt: int


_COUNTER_NAMES = ("stored", "acked", "thinned", "dropped_full", "lost_disk_full", "recovered_corrupt")


class Outbox:
    """Store-and-forward queue of encoded frames for one device."""

    def __init__(self, directory: Path, limits: OutboxLimits | None = None) -> None:
        self.limits = limits or OutboxLimits()
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / "outbox.sqlite"
        self._sequence_file = directory / "sequence"
        self._conn = self._open()
        # Kept in memory: count(*) scans the table, and the hot path asks on every frame.
        self._count: int = self._conn.execute("SELECT count(*) FROM frames").fetchone()[0]
        self._next_seq = self._initial_sequence()
        self._reserved = 0
        self._reserve(self._next_seq)
        self.full = self.count() >= self.limits.max_frames

    # ------------------------------------------------------------ open and recover

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.limits.durability == 'full' else 'NORMAL'}")
        # SQLite checkpoints by default once the WAL passes 1,000 pages (4 MiB), and never shrinks it:
        # on a unit with less free than that, the WAL filled the disk before its first checkpoint and
        # no commit, not even a DELETE, succeeded again. A small WAL, truncated after each checkpoint,
        # leaves the disk's room to the frames.
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
        conn.executescript(_SCHEMA)
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = self._connect()
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            return conn
        except sqlite3.DatabaseError as exc:
            return self._recover(exc)

    def _recover(self, exc: sqlite3.DatabaseError) -> sqlite3.Connection:
        """Move a corrupt file aside, keep every row still readable, start a fresh file."""
        aside = self._path.with_name(f"outbox.corrupt-{int(time.time())}.sqlite")
        log.error("outbox %s is corrupt (%s); moved to %s, salvaging readable frames", self._path, exc, aside)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self._path}{suffix}", f"{aside}{suffix}")
        salvaged = list(_readable_rows(aside))
        conn = self._connect()
        with _transaction(conn):
            conn.executemany("INSERT OR IGNORE INTO frames (seq, time_ms, body) VALUES (?, ?, ?)", salvaged)
            _bump(conn, "recovered_corrupt", 1)
        log.error("outbox recovered %d frames from the corrupt file", len(salvaged))
        return conn

    def _initial_sequence(self) -> int:
        """The next sequence: never below the stored counter, any stored frame or the reserved block."""
        stored = self._conn.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
        highest = self._conn.execute("SELECT max(seq) FROM frames").fetchone()[0]
        candidates = [0, stored[0] if stored else 0, (highest + 1) if highest is not None else 0]
        if stored is None:  # a new or recovered file: the side file knows how far we got
            candidates.append(self._read_reserved())
        return max(candidates)

    def _read_reserved(self) -> int:
        try:
            return int(self._sequence_file.read_text().strip())
        except (OSError, ValueError):
            return 0

    def _reserve(self, upto: int) -> None:
        """Record in the side file that sequences below ``upto`` + a block may be in use."""
        if upto < self._reserved:
            return
        self._reserved = upto + SEQUENCE_RESERVE_BLOCK
        temporary = self._sequence_file.with_name("sequence.tmp")
        with open(temporary, "w") as out:
            out.write(f"{self._reserved}\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self._sequence_file)

    # ------------------------------------------------------------ writing

    def append(self, make_frame: Callable[[int], Frame]) -> Frame | None:
        """Store the frame built for the next sequence number; None if the disk is full.

        The sequence is committed with the frame, so a crash after this returns
        keeps both, and a crash before keeps neither.
        """
        seq = self._next_seq
        frame = make_frame(seq)
        body = encode_frame(frame)
        if self.count() >= self.limits.max_frames:
            self._make_room(frame.time_ms)
        try:
            self._insert(seq, frame.time_ms, body)
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise OutboxError(f"outbox write failed: {exc}") from exc
            log.error("disk full while storing seq %d; thinning the backlog to make room", seq)
            try:
                self._make_room(frame.time_ms, force=True)
                self._insert(seq, frame.time_ms, body)
            except sqlite3.OperationalError as again:
                if not _disk_full(again):
                    raise OutboxError(f"outbox write failed: {again}") from again
                # Never stored, never sent: the number may be used again, which no receiver can notice.
                log.error("disk full: frame seq %d cannot be stored and is lost", seq)
                with contextlib.suppress(sqlite3.OperationalError), _transaction(self._conn):
                    _bump(self._conn, "lost_disk_full", 1)
                return None
        self._next_seq = seq + 1
        if self._next_seq >= self._reserved:
            self._reserve(self._next_seq)
        return frame

    def _insert(self, seq: int, time_ms: int, body: bytes) -> None:
        with _transaction(self._conn):
            self._conn.execute(
                "INSERT INTO frames (seq, time_ms, body) VALUES (?, ?, ?)", (seq, time_ms, body)
            )
            self._conn.execute(
                "INSERT INTO counters (name, value) VALUES ('next_seq', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (seq + 1,),
            )
            _bump(self._conn, "stored", 1)
        self._count += 1

    def _make_room(self, newest_ms: int, *, force: bool = False) -> None:
        """Thin old frames to one per interval, then drop the oldest, until below the limit."""
        if not self.full:
            log.warning(
                "outbox full (%d frames): thinning frames older than %.0f s",
                self.count(),
                self.limits.thin_after_s,
            )
        self.full = True
        cutoff = newest_ms - int(self.limits.thin_after_s * 1000)
        bucket = max(1, int(self.limits.thin_interval_s * 1000))
        with _transaction(self._conn):
            thinned = self._conn.execute(
                "DELETE FROM frames WHERE time_ms < ? AND seq NOT IN"
                " (SELECT min(seq) FROM frames WHERE time_ms < ? GROUP BY time_ms / ?)",
                (cutoff, cutoff, bucket),
            ).rowcount
            _bump(self._conn, "thinned", thinned)
            excess = self.count() - self.limits.max_frames + 1
            if force:
                excess = max(excess, min(self.count(), 1_000))
            dropped = 0
            if excess > 0:
                dropped = self._conn.execute(
                    "DELETE FROM frames WHERE seq IN (SELECT seq FROM frames ORDER BY seq LIMIT ?)", (excess,)
                ).rowcount
                _bump(self._conn, "dropped_full", dropped)
        self._count -= thinned + dropped
        if thinned or dropped:
            log.warning("outbox full: thinned %d and dropped %d oldest frames", thinned, dropped)

    # ------------------------------------------------------------ reading and acking

    def oldest(self, limit: int, above: int = -1, below: int | None = None) -> list[StoredFrame]:
        """Up to ``limit`` frames in sequence order with ``above`` < seq < ``below``."""
        rows = self._conn.execute(
            "SELECT seq, time_ms, body FROM frames WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?",
            (above, below if below is not None else 2**63 - 1, limit),
        ).fetchall()
        return [StoredFrame(*row) for row in rows]

    def newest(self, limit: int, above: int) -> list[StoredFrame]:
        """The newest ``limit`` frames with seq > ``above``, in sequence order."""
        rows = self._conn.execute(
            "SELECT seq, time_ms, body FROM frames WHERE seq > ? ORDER BY seq DESC LIMIT ?", (above, limit)
        ).fetchall()
        return [StoredFrame(*row) for row in reversed(rows)]

    def ack(self, seqs: list[int]) -> None:
        """Forget frames the broker acknowledged.

        On a full disk (a DELETE needs room in the WAL too) they are kept and
        sent again later: a duplicate downstream, never a crash or a loss.
        """
        try:
            deleted = self._delete(seqs)
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise  # the publisher is restarted, and says why in the health file
            log.error("disk full: %d acknowledged frames kept, to be sent again", len(seqs))
            return
        self._count -= deleted
        if self.full and self.count() < self.limits.max_frames * 0.9:
            self.full = False
            log.info("outbox below its limit again (%d frames)", self.count())

    def _delete(self, seqs: list[int]) -> int:
        with _transaction(self._conn):
            deleted: int = self._conn.executemany(
                "DELETE FROM frames WHERE seq = ?", [(s,) for s in seqs]
            ).rowcount
            _bump(self._conn, "acked", deleted)
        return deleted

    def count(self) -> int:
        """Frames waiting for a PUBACK."""
        return self._count

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def counters(self) -> OutboxCounters:
        values = dict(self._conn.execute("SELECT name, value FROM counters").fetchall())
        return OutboxCounters(*(int(values.get(name, 0)) for name in _COUNTER_NAMES))

    def close(self) -> None:
        self._conn.close()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite already rolled back after some errors (SQLITE_FULL)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _disk_full(exc: sqlite3.OperationalError) -> bool:
    return "full" in str(exc)


def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + ?",
        (name, by, by),
    )


def _readable_rows(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """Rows of a damaged outbox that can still be read, one by one, skipping damage."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.DatabaseError:
        return
    try:
        cursor = conn.execute("SELECT seq, time_ms, body FROM frames ORDER BY seq")
        while True:
            try:
                row = cursor.fetchone()
            except sqlite3.DatabaseError:
                break
            if row is None:
                break
            if isinstance(row[0], int) and isinstance(row[1], int) and isinstance(row[2], bytes):
                yield row[0], row[1], row[2]
    except sqlite3.DatabaseError:
        return
    finally:
        conn.close()
