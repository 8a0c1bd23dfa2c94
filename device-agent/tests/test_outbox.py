"""The outbox keeps every frame until acked, never reuses a sequence, and stays bounded."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fleet_agent.outbox import SEQUENCE_RESERVE_BLOCK, WAL_CHECKPOINT_PAGES, Outbox, OutboxLimits
from fleet_schemas import Frame

START_MS = 1_795_000_000_000


def make(seq: int, time_ms: int | None = None) -> Frame:
    return Frame(
        device="unit-1", bus="B1", seq=seq, time_ms=time_ms or START_MS + seq * 1000, lat=36.7, lon=3.0
    )


def test_sequence_continues_after_reopen(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for _ in range(5):
        outbox.append(make)
    outbox.ack([0, 1, 2, 3, 4])
    outbox.close()
    reopened = Outbox(tmp_path)
    frame = reopened.append(make)
    assert frame is not None
    assert frame.seq == 5


def test_acked_frames_leave_and_others_stay_in_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for _ in range(10):
        outbox.append(make)
    outbox.ack([1, 3, 5])
    assert [f.seq for f in outbox.oldest(100)] == [0, 2, 4, 6, 7, 8, 9]
    assert [f.seq for f in outbox.newest(2, above=-1)] == [8, 9]
    assert [f.seq for f in outbox.newest(10, above=7)] == [8, 9]
    assert msgspec.msgpack.decode(outbox.oldest(1)[0].body, type=Frame) == make(0)


def test_full_outbox_thins_old_frames_then_drops_oldest(tmp_path: Path) -> None:
    limits = OutboxLimits(max_frames=100, thin_after_s=20, thin_interval_s=10)
    outbox = Outbox(tmp_path, limits)
    for _ in range(150):
        outbox.append(make)
    counters = outbox.counters()
    assert outbox.count() <= 100
    assert outbox.full
    assert counters.thinned > 0
    assert counters.stored == 150
    assert counters.stored == outbox.count() + counters.thinned + counters.dropped_full
    newest = [f.seq for f in outbox.newest(20, above=-1)]
    assert newest == list(range(130, 150)), "the most recent frames are never thinned"


def test_corrupt_outbox_is_moved_aside_and_sequence_never_goes_back(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for _ in range(3):
        outbox.append(make)
    outbox.close()
    (tmp_path / "outbox.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"outbox.sqlite{suffix}").unlink(missing_ok=True)
    recovered = Outbox(tmp_path)
    frame = recovered.append(make)
    assert frame is not None
    assert frame.seq >= 3, "a sequence number is never used twice"
    assert frame.seq <= SEQUENCE_RESERVE_BLOCK + 3
    assert recovered.counters().recovered_corrupt == 1
    assert any(p.name.startswith("outbox.corrupt-") for p in tmp_path.iterdir())


def test_full_disk_thins_the_backlog_and_never_crashes(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, OutboxLimits(thin_after_s=5, thin_interval_s=30))
    # SQLite's page limit raises the very error a full disk raises (SQLITE_FULL).
    outbox._conn.execute("PRAGMA max_page_count = 40")
    stored = [outbox.append(make) for _ in range(3_000)]
    counters = outbox.counters()
    assert counters.thinned + counters.dropped_full > 0
    assert stored[-1] is not None, "after making room the newest frame is stored"
    kept = {f.seq for f in outbox.oldest(10_000)}
    assert max(kept) == stored[-1].seq
    assert counters.stored == len(kept) + counters.thinned + counters.dropped_full + counters.acked


def test_the_wal_stays_small_so_a_nearly_full_disk_keeps_its_room_for_frames(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, OutboxLimits(durability="normal"))
    wal = tmp_path / "outbox.sqlite-wal"
    largest = 0
    for n in range(2_000):
        outbox.append(make)
        if n % 3 == 2:
            outbox.ack([f.seq for f in outbox.oldest(10)])
        largest = max(largest, wal.stat().st_size)
    assert largest <= (WAL_CHECKPOINT_PAGES + 8) * 4_120, f"the WAL grew to {largest} bytes"


@contextlib.contextmanager
def _tmpfs(directory: Path, size: str) -> Iterator[Path]:
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root")
def test_an_outbox_on_a_disk_smaller_than_sqlites_default_wal_keeps_every_frame(tmp_path: Path) -> None:
    """512 KiB: SQLite's default WAL (4 MiB before its first checkpoint) filled it and every commit,
    acks included, failed from then on (found by the fault-injection suite)."""
    with _tmpfs(tmp_path / "small", "512k") as small:
        outbox = Outbox(small, OutboxLimits(durability="normal"))
        stored = 0
        for n in range(3_000):
            stored += outbox.append(make) is not None
            if n % 3 == 2:
                outbox.ack([f.seq for f in outbox.oldest(10)])
        counters = outbox.counters()
        outbox.close()
    assert stored == 3_000
    assert counters.lost_disk_full == 0


class OutboxMachine(RuleBasedStateMachine):
    """Whatever the order of appends, acks, crashes and reopens: no frame lost, no sequence reused."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.directory = Path(tempfile.mkdtemp(prefix="outbox-"))
        self.outbox = Outbox(self.directory, OutboxLimits(durability="normal"))
        self.unacked: set[int] = set()
        self.issued: set[int] = set()

    @rule()
    def append(self) -> None:
        frame = self.outbox.append(make)
        assert frame is not None
        assert frame.seq not in self.issued
        self.issued.add(frame.seq)
        self.unacked.add(frame.seq)

    @precondition(lambda self: bool(self.unacked))
    @rule(data=st.data())
    def ack_some(self, data: st.DataObject) -> None:
        chosen = data.draw(st.sets(st.sampled_from(sorted(self.unacked)), min_size=1))
        self.outbox.ack(sorted(chosen))
        self.unacked -= chosen

    @rule()
    def crash_and_reopen(self) -> None:
        self.outbox.close()
        self.outbox = Outbox(self.directory, OutboxLimits(durability="normal"))

    @invariant()
    def every_unacked_frame_is_still_there(self) -> None:
        stored = {f.seq for f in self.outbox.oldest(10_000)}
        assert stored == self.unacked
        assert self.outbox.count() == len(self.unacked)

    @invariant()
    def next_sequence_is_above_every_issued_one(self) -> None:
        assert self.outbox.next_seq > max(self.issued, default=-1)

    def teardown(self) -> None:
        self.outbox.close()


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
