"""The fault-injection harness: a sustained stream of signed frames through the real chain, then the count.

A :class:`Pipeline` is simulated agents (each a ``fleet-agent run`` process
with its own SQLite outbox, as on a bus) publishing through a real Mosquitto
into two real ``fleet ingest`` processes that share the frames, storing in
the stack's PostgreSQL and Redis. A scenario starts it, injects one fault,
repairs it, lets the stream run on, then stops the agents, drains what their
outboxes still hold and counts:

* published: every frame an agent made (its outbox's sequence: the frames
  it stored before any send, numbered without gaps);
* stored: distinct ``(device, seq)`` in ``positions``; rejected: refused by
  ingest's checks, kept in ``rejected_frames`` with the reason; lost =
  published - stored - rejected; duplicated = rows beyond one per
  ``(device, seq)``;
* events duplicated: an event repeated for a bus without what closes it in
  between (``bus_online`` twice without ``bus_offline``, a geofence entered
  twice without an exit, ...), or a one-off event (a trip started) twice:
  what a lost or rolled-back processing state would produce;
* recovery: from the repair until the last frame made before the repair was
  stored (``received_at`` is PostgreSQL's clock, on this machine).

Nothing here is mocked: faults are signals to real processes, restarts of
real servers, and (fleet_testing.netns) packets dropped in the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import msgspec
from click.testing import CliRunner

from fleet_agent.agent import Agent
from fleet_agent.config import AgentConfig
from fleet_agent.outbox import Outbox, OutboxCounters
from fleet_agent.sources import EndedSource
from fleet_cli.cli import main
from fleet_devtools.demo_feed import feed_dir
from fleet_schemas.keyfile import write_key_file
from fleet_store.settings import load_settings
from fleet_testing.agents import agent_config, config_toml
from fleet_testing.broker import scratch_dir
from fleet_testing.database import run_on
from fleet_testing.ingest import IngestProcesses, register_devices

INGEST_INSTANCES = ("a", "b")
STARTUP_TIMEOUT_S = 180.0
BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}
"""processes started again and again compile once (an environment may forbid it for its own reasons)"""
DRAIN_TIMEOUT_S = 120.0

PAIRED_KINDS = {
    "bus_online": "bus_offline",
    "bus_offline": "bus_online",
    "geofence_entered": "geofence_exited",
    "geofence_exited": "geofence_entered",
    "deviation_started": "deviation_ended",
    "deviation_ended": "deviation_started",
    "trip_assigned": "trip_unassigned",
    "trip_unassigned": "trip_assigned",
    "stop_arrived": "stop_departed",
    "stop_departed": "stop_arrived",
}
"""kinds that alternate per bus and subject: the same one twice in a row is a duplicate"""
ONCE_KINDS = ("trip_started", "trip_completed", "stop_skipped")
"""kinds a bus has once per subject"""


@dataclass
class Outcome:
    """One fault's row of the table."""

    fault: str
    published: int
    stored: int
    lost: int
    duplicated: int
    events: int
    events_duplicated: int
    recovery_s: float | None
    rejected: int = 0
    """frames ingest's checks refused (kept in rejected_frames with the reason): refused, not lost"""
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    outage_s: float = 0.0
    notes: str = ""
    lost_seqs: dict[str, list[int]] = field(default_factory=dict)


class AgentProcess:
    """One simulated bus: ``fleet-agent run`` in a process of its own, its outbox on disk."""

    def __init__(self, config: AgentConfig, directory: Path, prefix: tuple[str, ...] = ()) -> None:
        self.config = config
        self.directory = directory
        self.prefix = prefix
        """a command to run the agent under (``ip netns exec NS``)"""
        self.config_path = directory / "agent.toml"
        self.config_path.write_bytes(config_toml(config))
        self.config_path.chmod(0o600)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def device(self) -> str:
        return self.config.device

    def start(self) -> None:
        log = (self.directory / "agent.log").open("ab")
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "fleet_agent", "run", "--config", str(self.config_path)],
            stderr=log,
            stdout=log,
            env={**os.environ, **BYTECODE},
        )
        log.close()

    def signal(self, sig: signal.Signals) -> int:
        """Send ``sig`` and wait for the process to end; its exit code."""
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        self.process = None
        return code

    def next_seq(self) -> int:
        """The next sequence number the outbox would give: every frame below it was made."""
        path = Path(self.config.data_dir) / "outbox.sqlite"
        for _ in range(50):  # the agent's first transaction may not be committed yet
            with contextlib.suppress(sqlite3.OperationalError):
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
                try:
                    row = conn.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
                    return int(row[0]) if row else 0
                finally:
                    conn.close()
            time.sleep(0.1)
        raise AssertionError(f"cannot read the outbox of {self.device}")

    def counters(self) -> tuple[int, OutboxCounters, int]:
        """(next sequence, counters, frames still waiting) of the stopped agent's outbox."""
        outbox = Outbox(Path(self.config.data_dir), self.config.outbox)
        try:
            return outbox.next_seq, outbox.counters(), outbox.count()
        finally:
            outbox.close()

    async def drain(self, broker_url: str) -> None:
        """Publish what the outbox still holds, with no new fixes, until it is empty."""
        config = msgspec.structs.replace(
            self.config, broker=msgspec.structs.replace(self.config.broker, url=broker_url)
        )
        await Agent(config, EndedSource()).run(asyncio.Event(), exit_when_drained=True)


@dataclass
class Pipeline:
    """Agents → a broker → two ingest processes → the stack's PostgreSQL and Redis, for one scenario."""

    ingest: IngestProcesses
    operator: str
    buses: int = 4
    speedup: float = 15.0
    durability: str = "normal"
    agent_broker_url: str = ""
    """the URL agents use (default the ingest's broker); a namespaced agent reaches it elsewhere"""
    agent_prefix: tuple[str, ...] = ()
    agents: list[AgentProcess] = field(default_factory=list)
    agents_started_at: float = 0.0
    """when :meth:`start` started the agents (this machine's clock)"""

    def __post_init__(self) -> None:
        url = self.agent_broker_url or self.ingest.urls.mqtt_url
        imported = CliRunner().invoke(
            main,
            ["geofences", "import", str(feed_dir() / "geofences.geojson"), "--operator", self.operator],
            env=self.ingest.env(),
        )
        assert imported.exit_code == 0, imported.output
        devices, keys = asyncio.run(
            register_devices(self.ingest.database_url, self.ingest.kek, self.operator, self.buses)
        )
        for n, key in enumerate(keys):
            home = scratch_dir()
            config, _ = agent_config(
                home,
                url,
                operator=self.operator,
                device=key.device,
                speedup=self.speedup,
                seed=n + 1,
                durability=self.durability,
            )
            write_key_file(home / "key.toml", key)
            config = msgspec.structs.replace(config, bus=devices[key.device])
            self.agents.append(AgentProcess(config, home, self.agent_prefix))

    # ------------------------------------------------------------ running

    def start(self, warm_frames: int = 20) -> None:
        """Ingest sessions first (nothing published is missed), both instances subscribed, then the agents."""
        asyncio.run(self.ingest.open_sessions(*INGEST_INSTANCES))
        for instance in INGEST_INSTANCES:
            self.ingest.start(instance, burst_s=None)
        for instance in INGEST_INSTANCES:
            self.wait_subscribed(instance)
        self.agents_started_at = time.time()
        for agent in self.agents:
            agent.start()
        flowing = self.wait_stored({a.device: warm_frames for a in self.agents}, timeout=90)
        if not flowing:
            logs = "\n".join((a.directory / "agent.log").read_text()[-1500:] for a in self.agents)
            raise AssertionError(
                f"the stream never reached PostgreSQL: {self.stored_counts(self.made())} of {self.made()};"
                f" agents' logs:\n{logs}"
            )

    def wait_subscribed(self, instance: str, times: int = 1) -> None:
        """Wait until ``instance`` logged its ``times``-th subscription (a loaded machine imports slowly)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while self.ingest.log(instance, tail=10**9).count('"msg":"subscribed"') < times:
            process = self.ingest.running[instance]
            assert process.poll() is None, f"ingest {instance} ended: {self.ingest.log(instance)}"
            assert time.monotonic() < deadline, f"ingest {instance} never subscribed"
            time.sleep(0.1)

    def made(self) -> dict[str, int]:
        """Frames made so far, by device."""
        return {a.device: a.next_seq() for a in self.agents}

    def stored_counts(self, below: dict[str, int]) -> dict[str, int]:
        """Distinct frames stored, by device, among those numbered below ``below[device]``."""

        async def query(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                "SELECT f.device, count(*) AS n FROM frame_ids f"
                " JOIN unnest($1::text[], $2::bigint[]) AS t(device, upto)"
                " ON f.device = t.device AND f.seq < t.upto GROUP BY f.device",
                list(below),
                list(below.values()),
            )

        found = {r["device"]: r["n"] for r in run_on(self.ingest.database_url, query)}
        return {device: found.get(device, 0) for device in below}

    def wait_stored(self, below: dict[str, int], timeout: float) -> bool:
        """Wait until every frame below ``below`` is stored, or until nothing more arrives for 15 s."""
        deadline = time.monotonic() + timeout
        last, still_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            counts = self.stored_counts(below)
            if all(counts[d] >= n for d, n in below.items()):
                return True
            total = sum(counts.values())
            if total != last:
                last, still_since = total, time.monotonic()
            elif time.monotonic() - still_since > 15:
                return False
            time.sleep(0.25)
        return False

    def finish(self) -> dict[str, int]:
        """SIGTERM the agents, drain their outboxes, wait for ingest and stop it; frames made, by device."""
        for agent in self.agents:
            if agent.process is not None:
                assert agent.signal(signal.SIGTERM) == 0, (agent.directory / "agent.log").read_text()[-2000:]

        async def drain_all() -> None:
            await asyncio.wait_for(
                asyncio.gather(*(a.drain(self.ingest.urls.mqtt_url) for a in self.agents)),
                DRAIN_TIMEOUT_S,
            )

        asyncio.run(drain_all())
        made = {a.device: a.counters()[0] for a in self.agents}
        self.wait_stored(made, timeout=DRAIN_TIMEOUT_S)
        for instance in list(self.ingest.running):
            self.ingest.terminate(instance)
        return made

    # ------------------------------------------------------------ counting

    def outcome(self, fault: str, made: dict[str, int], repaired: Repair, notes: str = "") -> Outcome:
        """The row of the table for ``fault`` after :meth:`finish`."""
        database_url = self.ingest.database_url

        async def query(conn: asyncpg.Connection) -> dict[str, Any]:
            rows = await conn.fetch(
                "SELECT device, seq, count(*) AS n, min(received_at) AS received FROM positions"
                " WHERE operator = $1 GROUP BY device, seq",
                self.operator,
            )
            events = await conn.fetch(
                "SELECT bus, kind, subject, time, cause_time, cause_seq FROM events WHERE operator = $1"
                " ORDER BY bus, time, cause_time, cause_seq",
                self.operator,
            )
            rejected = await conn.fetch(
                "SELECT device, seq, reason FROM rejected_frames WHERE device = ANY($1::text[])", list(made)
            )
            return {"rows": rows, "events": events, "rejected": rejected}

        found = run_on(database_url, query)
        seqs: dict[str, set[int]] = {d: set() for d in made}
        duplicated, recovered_at = 0, None
        for row in found["rows"]:
            seqs.setdefault(row["device"], set()).add(row["seq"])
            duplicated += row["n"] - 1
            if row["seq"] < repaired.made.get(row["device"], 0):
                received = row["received"].timestamp()
                recovered_at = received if recovered_at is None else max(recovered_at, received)
        rejected: dict[str, set[int]] = {d: set() for d in made}
        reasons: dict[str, int] = {}
        for row in found["rejected"]:
            rejected[row["device"]].add(row["seq"])
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        lost_seqs = {d: sorted(set(range(n)) - seqs[d] - rejected[d]) for d, n in made.items()}
        lost_seqs = {d: s for d, s in lost_seqs.items() if s}
        for agent in self.agents:
            _, counters, waiting = agent.counters()
            lost_at_agent = counters.thinned + counters.dropped_full + counters.lost_disk_full
            if lost_at_agent or waiting:
                notes += (
                    f" {agent.device}: {waiting} still in the outbox, {counters.thinned} thinned,"
                    f" {counters.dropped_full} dropped full, {counters.lost_disk_full} lost to a full disk."
                )
        recovery = None if recovered_at is None else max(0.0, recovered_at - repaired.wall)
        return Outcome(
            fault=fault,
            published=sum(made.values()),
            stored=sum(len(s & set(range(made.get(d, 0)))) for d, s in seqs.items()),
            lost=sum(len(s) for s in lost_seqs.values()),
            duplicated=duplicated,
            events=len(found["events"]),
            events_duplicated=duplicated_events(found["events"]),
            recovery_s=None if recovery is None else round(recovery, 1),
            rejected=sum(reasons.values()),
            rejected_reasons=reasons,
            outage_s=round(repaired.outage_s, 1),
            notes=notes.strip(),
            lost_seqs={d: s[:50] for d, s in lost_seqs.items()},
        )


class MakePipeline(Protocol):
    """The ``make_pipeline`` fixture: a :class:`Pipeline` of the test's own, with these options."""

    def __call__(
        self,
        *,
        buses: int = ...,
        speedup: float = ...,
        durability: str = ...,
        agent_broker_url: str = ...,
        agent_prefix: tuple[str, ...] = ...,
    ) -> Pipeline: ...


@dataclass(frozen=True)
class Repair:
    """When a fault was repaired (this machine's clock) and the frames made by then."""

    wall: float
    made: dict[str, int]
    outage_s: float


def duplicated_events(events: list[asyncpg.Record] | list[dict[str, Any]]) -> int:
    """Events that repeat for a bus without their counterpart between, or one-off events seen twice."""
    duplicates = 0
    last: dict[tuple[str, str, str], str] = {}
    once: set[tuple[str, str, str]] = set()
    for event in events:
        bus, kind, subject = event["bus"], event["kind"], event["subject"]
        if kind in PAIRED_KINDS:
            family = (bus, min(kind, PAIRED_KINDS[kind]), subject)
            if last.get(family) == kind:
                duplicates += 1
            last[family] = kind
        elif kind in ONCE_KINDS:
            if (bus, kind, subject) in once:
                duplicates += 1
            once.add((bus, kind, subject))
    return duplicates


def run_fault(
    pipeline: Pipeline,
    fault: str,
    inject: Callable[[], object],
    repair: Callable[[], object],
    *,
    outage_s: float = 10.0,
    after_s: float = 10.0,
    notes: str = "",
) -> Outcome:
    """Stream, inject, wait ``outage_s``, repair, stream ``after_s`` more, finish and count."""
    pipeline.start()
    injected = time.monotonic()
    inject()
    time.sleep(outage_s)
    repair()
    repaired = Repair(time.time(), pipeline.made(), time.monotonic() - injected)
    time.sleep(after_s)
    made = pipeline.finish()
    return pipeline.outcome(fault, made, repaired, notes)


# ---------------------------------------------------------------- the report


def report_dir() -> Path:
    """Where the suite keeps its report and table: ``$FLEET_STATE_DIR/chaos``."""
    return load_settings().state_dir / "chaos"


def report_path(directory: Path) -> Path:
    return directory / "report.json"


def keep(outcome: Outcome) -> Outcome:
    """Add (or replace) ``outcome``'s row in the report, print it, and return it for the assertions."""
    directory = report_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = report_path(directory)
    rows = json.loads(path.read_text()) if path.exists() else {}
    rows[outcome.fault] = asdict(outcome)
    path.write_text(json.dumps(rows, indent=1) + "\n")
    print(outcome)
    return outcome


def _rejected(row: dict[str, Any]) -> str:
    reasons = row.get("rejected_reasons") or {}
    detail = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
    return f"{row['rejected']:,}" + (f" ({detail})" if detail else "")


def render_table(rows: dict[str, dict[str, Any]]) -> str:
    """The README's table: one line per fault, in the order they ran."""
    lines = [
        "| fault | published | stored | rejected | lost | duplicated rows | events (duplicated) | outage s"
        " | recovery s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows.values():
        recovery = "-" if row["recovery_s"] is None else f"{row['recovery_s']:.1f}"
        lines.append(
            f"| {row['fault']} | {row['published']:,} | {row['stored']:,} | {_rejected(row)} |"
            f" {row['lost']:,} | {row['duplicated']:,} | {row['events']:,} ({row['events_duplicated']}) |"
            f" {row['outage_s']:.1f} | {recovery} |"
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([*lines, "", f"({stamp}, {os.cpu_count()} cores)"])
