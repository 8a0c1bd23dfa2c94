"""Faults on the bus: the agent killed, killed while it fsyncs every frame, its disk full, a day offline."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from fleet_devtools.bench_agent import fill_outbox
from fleet_testing.broker import PrivateBroker
from fleet_testing.chaos import AgentProcess, MakePipeline, Outcome, Pipeline, Repair, keep, run_fault

DAY = 86_400
DRAIN_STATED_FRAMES_S = 5_000
"""README, Performance > Device agent: a backlog drains at least this fast (500 frames a message)"""


def _kill_and_restart(agents: list[AgentProcess]) -> None:
    for agent in agents:
        assert agent.signal(signal.SIGKILL) == -signal.SIGKILL
    time.sleep(2.0)
    for agent in agents:
        agent.start()


def _assert_restarts_whole(outcome: Outcome) -> None:
    """Nothing lost or stored twice, and no sequence number used for two frames (``seq_conflict``).

    A restarted simulated agent starts its drive again at the route's start
    (a real bus does not jump): ingest refuses its first fixes as ``teleport``
    until three agree, and keeps them in rejected_frames. That is the only
    refusal allowed here.
    """
    assert outcome.lost == 0, outcome.lost_seqs
    assert outcome.duplicated == 0
    assert set(outcome.rejected_reasons) <= {"teleport"}, outcome.rejected_reasons
    assert outcome.events_duplicated == 0


def test_agents_killed_lose_nothing_and_reuse_no_sequence(pipeline: Pipeline) -> None:
    outcome = keep(
        run_fault(
            pipeline,
            "agent SIGKILL (2 of 4, restarted after 2 s)",
            lambda: _kill_and_restart(pipeline.agents[:2]),
            lambda: None,
            outage_s=0.0,
        )
    )
    _assert_restarts_whole(outcome)


def test_agents_killed_while_they_fsync_every_frame_lose_nothing(make_pipeline: MakePipeline) -> None:
    pipeline = make_pipeline(durability="full", speedup=40.0)
    outcome = keep(
        run_fault(
            pipeline,
            "agent power loss (SIGKILL of all 4 under fsync per frame)",
            lambda: _kill_and_restart(pipeline.agents),
            lambda: None,
            outage_s=0.0,
        )
    )
    _assert_restarts_whole(outcome)


@contextlib.contextmanager
def _small_disk(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``directory``, unmounted afterwards whatever happens."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until its file system is full (the agent writes meanwhile: no size is exact)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4_096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return
    finally:
        os.close(fd)


def test_agent_disk_full_while_offline_loses_no_frame_it_stored(
    make_pipeline: MakePipeline, broker: PrivateBroker
) -> None:
    """The outbox must grow (the broker is away) on a full disk: whatever it cannot keep, it counts.

    SQLite writes into the pages its file and its WAL already have (the WAL
    is kept at 64 pages), so a short outage on a full disk may cost nothing.
    """
    pipeline = make_pipeline(speedup=40.0)
    agent = pipeline.agents[0]
    filler = Path(agent.config.data_dir) / "filler"

    def inject() -> None:
        broker.stop()
        _fill(filler)

    def repair() -> None:
        filler.unlink()
        broker.start()

    with _small_disk(Path(agent.config.data_dir), "8m"):
        outcome = run_fault(
            pipeline,
            "agent disk full, broker away (8 MiB tmpfs, 30 s)",
            inject,
            repair,
            outage_s=30.0,
            notes="lost: frames the agent dropped to make room, and counted; those it could not store at all"
            " (lost_disk_full) were never published.",
        )
        _, counters, _ = agent.counters()
    outcome.notes += (
        f" Agent on the full disk: {counters.thinned} thinned, {counters.dropped_full} dropped,"
        f" {counters.lost_disk_full} not stored."
    )
    keep(outcome)
    assert outcome.lost == counters.thinned + counters.dropped_full, "a frame lost the agent did not count"
    assert outcome.duplicated == 0
    assert outcome.events_duplicated == 0


def test_a_day_of_backlog_drains_within_its_stated_time(make_pipeline: MakePipeline) -> None:
    """Each bus's outbox holds 24 h of 1 Hz frames (a simulated clock), then the broker is reachable."""
    pipeline = make_pipeline(buses=2)
    # A simulated clock: the drive starts 36 h ago, so no frame of the day ends up ahead of now.
    start_ms = int((time.time() - 1.5 * DAY) * 1000)
    for agent in pipeline.agents:
        asyncio.run(fill_outbox(agent.config, DAY, lambda _: None, start_ms=start_ms))
    pipeline.start()
    time.sleep(5.0)
    made = pipeline.finish()
    started = pipeline.agents_started_at
    outcome = keep(
        pipeline.outcome(
            "24 h broker outage backlog (2 buses x 86,400 frames)",
            made,
            Repair(started, {a.device: DAY for a in pipeline.agents}, float(DAY)),
            notes=f"drained from the agents' start; stated: {DRAIN_STATED_FRAMES_S:,} frames/s per bus",
        )
    )
    _assert_restarts_whole(outcome)
    assert outcome.recovery_s is not None
    assert outcome.recovery_s <= DAY / DRAIN_STATED_FRAMES_S * len(pipeline.agents) * 2 + 30
