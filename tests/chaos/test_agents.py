"""Faults on the bus: the agent killed, killed while it fsyncs every frame, its disk full, a day offline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from fleet_devtools.bench_agent import fill_outbox
from fleet_testing.chaos import AgentProcess, MakePipeline, Pipeline, Repair, keep, run_fault

DAY = 86_400
DRAIN_STATED_FRAMES_S = 5_000
"""README, Performance > Device agent: a backlog drains at least this fast (500 frames a message)"""


def _kill_and_restart(agents: list[AgentProcess]) -> None:
    for agent in agents:
        assert agent.signal(signal.SIGKILL) == -signal.SIGKILL
    time.sleep(2.0)
    for agent in agents:
        agent.start()


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
    assert outcome.lost == 0, outcome.lost_seqs
    assert outcome.duplicated == 0
    assert outcome.rejected == 0, "a sequence number used for two frames is rejected as seq_conflict"
    assert outcome.events_duplicated == 0


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
    assert outcome.lost == 0, outcome.lost_seqs
    assert outcome.duplicated == 0
    assert outcome.rejected == 0
    assert outcome.events_duplicated == 0


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
    """Take every free byte of ``path``'s file system."""
    fs = os.statvfs(path.parent)
    with path.open("wb") as out:
        out.write(b"\0" * (fs.f_bavail * fs.f_frsize))
    fs = os.statvfs(path.parent)
    assert fs.f_bavail == 0, f"{fs.f_bavail} blocks still free"


def test_agent_disk_full_loses_no_frame_it_stored(pipeline: Pipeline) -> None:
    agent = pipeline.agents[0]
    filler = Path(agent.config.data_dir) / "filler"
    with _small_disk(Path(agent.config.data_dir), "8m"):
        outcome = run_fault(
            pipeline,
            "agent disk full (outbox on a full 8 MiB tmpfs for 10 s)",
            lambda: _fill(filler),
            lambda: filler.unlink(),
            notes="frames the agent could not store are counted by it (lost_disk_full), never published.",
        )
        assert agent.process is None, "the agent was stopped at the end, not crashed before"
    keep(outcome)
    assert outcome.lost == 0, outcome.lost_seqs
    assert outcome.duplicated == 0
    assert outcome.events_duplicated == 0


def test_a_day_of_backlog_drains_within_its_stated_time(make_pipeline: MakePipeline) -> None:
    """Each bus's outbox holds 24 h of 1 Hz frames (a simulated clock), then the broker is reachable."""
    pipeline = make_pipeline(buses=2)
    for agent in pipeline.agents:
        asyncio.run(fill_outbox(agent.config, DAY, lambda _: None))
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
    assert outcome.lost == 0, outcome.lost_seqs
    assert outcome.duplicated == 0
    assert outcome.events_duplicated == 0
    assert outcome.recovery_s is not None
    assert outcome.recovery_s <= DAY / DRAIN_STATED_FRAMES_S * len(pipeline.agents) * 2 + 30
