"""``fleet bench agent``: the device agent's footprint and backlog drain rate, measured on this machine.

Two measurements against the real broker, with the targets of the "Device agent" issue:

- footprint: a real ``fleet-agent run`` process fed by a simulated bus at 1 Hz.
  Every second its RSS is read from ``/proc/<pid>/status`` (VmRSS, VmHWM) and
  its CPU time from ``/proc/<pid>/stat`` (utime + stime, in clock ticks). The
  CPU figure leaves out the first seconds of start-up (imports, connect),
  which an onboard unit pays once per boot.
- drain: an outbox holding a day of 1 Hz frames (86,400) drained by an Agent
  whose outbox is ``durability = "full"`` (the default: every ack fsynced),
  while a subscriber verifies and counts every frame the broker delivers.

It measures; it asserts nothing about speed in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from fleet_agent.agent import Agent, Health, frame_from
from fleet_agent.config import AgentConfig, SourceConfig, load_config
from fleet_agent.outbox import Outbox
from fleet_agent.publisher import BrokerConfig
from fleet_agent.sources import EndedSource, open_source
from fleet_ingest.mqtt_consumer import Consumer, MqttError
from fleet_schemas import DeviceKey, FleetSchemaError, frames_topic, open_envelope, parse_topic
from fleet_schemas.keyfile import write_key_file
from fleet_store.errors import FleetError

RSS_TARGET_MB = 40.0
CPU_TARGET_PERCENT = 2.0
DRAIN_TARGET_FPS = 5_000.0
DAY_OF_FRAMES = 86_400
"""A day of 1 Hz frames: the backlog after a day without network."""
START_UP_S = 5.0
"""Left out of the CPU figure: interpreter start, imports, first connect."""
SAMPLE_EVERY_S = 1.0
PROGRESS_EVERY_S = 10.0
DRAIN_TIMEOUT_S = 600.0
ARRIVAL_TIMEOUT_S = 60.0
OPERATOR = "bench"

Report = Callable[[str], None]


class BenchError(FleetError):
    """A measurement could not be made: the agent died, the broker is unreachable, frames are missing."""

    code = "bench_error"


class ProcessSample(msgspec.Struct, frozen=True):
    """One reading of a process's memory and CPU time."""

    at_s: float
    """seconds since the process was started"""
    rss_kb: int
    peak_rss_kb: int
    cpu_ticks: int


class Footprint(msgspec.Struct, frozen=True):
    """Memory and CPU of one ``fleet-agent run`` process over the run."""

    duration_s: float
    samples: int
    rss_peak_mb: float
    rss_mean_mb: float
    cpu_percent: float
    """percent of one core, start-up left out"""
    cpu_window_s: float
    """the seconds the CPU figure covers (from START_UP_S to the end)"""
    frames_framed: int
    frames_acked: int


class Drain(msgspec.Struct, frozen=True):
    """One backlog drained into the broker."""

    frames: int
    durability: str
    seconds: float
    frames_per_s: float
    received: int
    """distinct frames the subscriber got, signature verified"""
    duplicates: int
    rejected_messages: int


class Target(msgspec.Struct, frozen=True):
    """One figure against its target."""

    name: str
    value: float
    unit: str
    goal: str
    passed: bool


class Machine(msgspec.Struct, frozen=True):
    """Where it was measured."""

    cpu: str
    cores: int
    memory_gib: float
    python: str


class AgentBench(msgspec.Struct, frozen=True):
    """The whole result of ``fleet bench agent``."""

    measured_at: str
    machine: Machine
    footprint: Footprint
    drain: Drain
    targets: list[Target]

    @property
    def passed(self) -> bool:
        return all(target.passed for target in self.targets)


# ------------------------------------------------------------ reading /proc (pure)


def status_kb(status: str, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM) of a /proc/<pid>/status text."""
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise BenchError(f"/proc status has no {field} line")


def cpu_ticks(stat: str) -> int:
    """utime + stime of a /proc/<pid>/stat text; the command name in parentheses may hold spaces."""
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return int(fields[11]) + int(fields[12])


def cpu_percent(samples: list[ProcessSample], start_up_s: float, ticks_per_s: int) -> tuple[float, float]:
    """Percent of one core from the first sample after ``start_up_s`` to the last, and that window in s."""
    settled = [sample for sample in samples if sample.at_s >= start_up_s]
    if len(settled) < 2:
        raise BenchError(f"too few samples after the first {start_up_s:g} s to measure CPU")
    first, last = settled[0], settled[-1]
    window = last.at_s - first.at_s
    return 100.0 * (last.cpu_ticks - first.cpu_ticks) / ticks_per_s / window, window


def read_sample(pid: int, at_s: float) -> ProcessSample:
    proc = Path("/proc", str(pid))
    try:
        status, stat = (proc / "status").read_text(), (proc / "stat").read_text()
    except OSError as exc:
        raise BenchError(f"cannot read {proc} (Linux only; did the process end?): {exc}") from exc
    return ProcessSample(at_s, status_kb(status, "VmRSS"), status_kb(status, "VmHWM"), cpu_ticks(stat))


def machine() -> Machine:
    """CPU model, cores, memory and Python of this machine, from /proc."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    with contextlib.suppress(OSError, BenchError):
        memory_kb = status_kb(Path("/proc/meminfo").read_text(), "MemTotal")
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 0,
        memory_gib=round(memory_kb / 1024 / 1024, 1),
        python=platform.python_version(),
    )


# ------------------------------------------------------------ agents to measure


def agent_toml(config: AgentConfig) -> str:
    """agent.toml for ``config``.

    tomli-w is only a dev dependency, and agent.toml is flat keys plus one level
    of tables, whose values JSON writes as valid TOML (unset options left out).
    """
    top: list[str] = []
    tables: list[str] = []
    for name, value in msgspec.to_builtins(config).items():
        if isinstance(value, dict):
            tables.append(f"\n[{name}]\n" + "".join(_toml_line(k, v) for k, v in value.items()))
        else:
            top.append(_toml_line(name, value))
    return "".join(top) + "".join(tables)


def _toml_line(key: str, value: object) -> str:
    return "" if value is None else f"{key} = {msgspec.json.encode(value).decode()}\n"


def write_agent(
    directory: Path, broker_url: str, device: str, source: SourceConfig
) -> tuple[Path, AgentConfig, DeviceKey]:
    """A key file and a 0600 agent.toml under ``directory`` (outbox durability: the default, full)."""
    key = DeviceKey(f"{device}-k1", device, os.urandom(32))
    write_key_file(directory / "key.toml", key)
    config = AgentConfig(
        operator=OPERATOR,
        device=device,
        bus=device.upper(),
        key_file=str(directory / "key.toml"),
        data_dir=str(directory / "data"),
        health_file=str(directory / "health.json"),
        broker=BrokerConfig(url=broker_url),
        source=source,
    )
    path = directory / "agent.toml"
    path.touch(mode=0o600)
    path.write_text(agent_toml(config))
    # What the agent will read, checked as the agent checks it.
    return path, load_config(path), key


# ------------------------------------------------------------ footprint of a running agent


def measure_footprint(directory: Path, broker_url: str, duration_s: float, report: Report) -> Footprint:
    """Run ``fleet-agent run`` (simulated bus, 1 Hz) for ``duration_s`` and sample it every second."""
    config_path, config, _ = write_agent(
        directory, broker_url, "bench-agent", SourceConfig(kind="sim", speedup=1.0, start_ago_s=0.0)
    )
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    log_path = directory / "agent.log"
    with log_path.open("wb") as agent_log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fleet_agent", "run", "--config", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=agent_log,
        )
    started = time.monotonic()
    report(f"bench agent: fleet-agent run (pid {process.pid}) for {duration_s:g} s; its log: {log_path}")
    samples: list[ProcessSample] = []
    try:
        while (elapsed := time.monotonic() - started) < duration_s:
            if process.poll() is not None:
                raise BenchError(f"fleet-agent run exited with {process.returncode}: {_tail(log_path)}")
            samples.append(read_sample(process.pid, elapsed))
            if len(samples) % int(PROGRESS_EVERY_S / SAMPLE_EVERY_S) == 0:
                report(_footprint_progress(samples, duration_s, ticks_per_s, _read_health(config)))
            time.sleep(max(0.0, started + len(samples) * SAMPLE_EVERY_S - time.monotonic()))
    finally:
        returncode = _stop(process)
    if returncode != 0:
        raise BenchError(f"fleet-agent run ended with {returncode} on SIGTERM: {_tail(log_path)}")
    cpu, window = cpu_percent(samples, START_UP_S, ticks_per_s)
    health = _read_health(config)
    return Footprint(
        duration_s=round(samples[-1].at_s, 1),
        samples=len(samples),
        rss_peak_mb=round(max(s.peak_rss_kb for s in samples) / 1024, 1),
        rss_mean_mb=round(sum(s.rss_kb for s in samples) / len(samples) / 1024, 1),
        cpu_percent=round(cpu, 2),
        cpu_window_s=round(window, 1),
        frames_framed=health.fixes.framed if health else 0,
        frames_acked=health.publisher.frames_sent if health else 0,
    )


def _footprint_progress(
    samples: list[ProcessSample], duration_s: float, ticks_per_s: int, health: Health | None
) -> str:
    last = samples[-1]
    cpu = (
        f"{cpu_percent(samples, START_UP_S, ticks_per_s)[0]:.2f} %"
        if last.at_s >= START_UP_S + 2 * SAMPLE_EVERY_S
        else "-"
    )
    link = (
        f"{health.fixes.framed} frames, {health.publisher.frames_sent} acked"
        f"{'' if health.connected else ', NOT connected'}"
        if health
        else "no health file yet"
    )
    return (
        f"bench agent: {last.at_s:5.0f}/{duration_s:g} s  RSS {last.rss_kb / 1024:.1f} MB"
        f" (peak {last.peak_rss_kb / 1024:.1f})  CPU {cpu} of one core  {link}"
    )


def _read_health(config: AgentConfig) -> Health | None:
    if config.health_file is None:
        return None
    try:
        return msgspec.json.decode(Path(config.health_file).read_bytes(), type=Health)
    except (OSError, msgspec.DecodeError):
        return None


def _stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as the unit's supervisor stops the agent; SIGKILL if it does not end in 30 s."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-1_500:].strip() or "(nothing logged)"


# ------------------------------------------------------------ draining a day of backlog


class _Arrivals:
    """Verifies and counts one device's frames as the broker delivers them, acking every message."""

    def __init__(self, key: DeviceKey) -> None:
        self._keys = {key.key_id: key}
        self.seqs: set[int] = set()
        self.frames = 0
        self.rejected_messages = 0

    async def run(self, consumer: Consumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            messages = await consumer.receive(1_000, 0.2)
            for message in messages:
                try:
                    batch = open_envelope(message.payload, self._keys.get, parse_topic(message.topic).device)
                except FleetSchemaError:
                    self.rejected_messages += 1
                    continue
                self.frames += len(batch.frames)
                self.seqs.update(frame.seq for frame in batch.frames)
            consumer.ack([message.packet_id for message in messages])

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seqs) < count and time.monotonic() < deadline:  # noqa: ASYNC110 - polled counter
            await asyncio.sleep(0.1)


async def fill_outbox(config: AgentConfig, frames: int, report: Report, start_ms: int | None = None) -> None:
    """Store ``frames`` simulated 1 Hz frames ending about now, as a unit offline for that long holds them.

    Filled with durability "normal" to be quick: only the drain is measured.
    The drive starts at ``start_ms`` (default ``frames`` seconds ago; a drive
    that parks makes fewer frames a second, so its last ones may be ahead).
    """
    outbox = Outbox(Path(config.data_dir), msgspec.structs.replace(config.outbox, durability="normal"))
    start_ms = start_ms if start_ms is not None else int(time.time() * 1000) - frames * 1000
    source = open_source(msgspec.structs.replace(config.source, speedup=0), start_ms=start_ms)
    started = time.monotonic()
    try:
        async for fix in source.fixes():
            outbox.append(functools.partial(frame_from, config, fix))
            if outbox.next_seq >= frames:
                break
            if outbox.next_seq % 20_000 == 0:
                report(f"bench agent: outbox filled with {outbox.next_seq:,} of {frames:,} frames")
    finally:
        outbox.close()
    report(f"bench agent: outbox holds {frames:,} frames ({time.monotonic() - started:.1f} s to fill)")


async def measure_drain(directory: Path, broker_url: str, frames: int, report: Report) -> Drain:
    """Fill an outbox with ``frames`` frames, then time an Agent draining it while a subscriber counts."""
    _, config, key = write_agent(directory, broker_url, "bench-drain", SourceConfig(kind="sim"))
    await fill_outbox(config, frames, report)
    arrivals = _Arrivals(key)
    try:
        async with Consumer(
            broker_url,
            f"bench-{key.device}",
            frames_topic(config.operator, config.device),
            clean_start=True,
            session_expiry_s=0,
        ) as consumer:
            stop_counting = asyncio.Event()
            counting = asyncio.create_task(arrivals.run(consumer, stop_counting))
            started = time.monotonic()
            agent = Agent(config, EndedSource())
            progress = asyncio.create_task(_drain_progress(agent, arrivals, frames, report))
            try:
                await asyncio.wait_for(agent.run(asyncio.Event(), exit_when_drained=True), DRAIN_TIMEOUT_S)
            except TimeoutError as exc:
                raise BenchError(f"the backlog did not drain within {DRAIN_TIMEOUT_S:g} s") from exc
            finally:
                progress.cancel()
            seconds = time.monotonic() - started
            await arrivals.wait_for(frames, ARRIVAL_TIMEOUT_S)
            stop_counting.set()
            await counting
    except MqttError as exc:
        raise BenchError(f"subscriber: {exc}") from exc
    report(f"bench agent: drained {frames:,} frames in {seconds:.1f} s; {len(arrivals.seqs):,} arrived")
    return Drain(
        frames=frames,
        durability=config.outbox.durability,
        seconds=round(seconds, 2),
        frames_per_s=round(frames / seconds),
        received=len(arrivals.seqs),
        duplicates=arrivals.frames - len(arrivals.seqs),
        rejected_messages=arrivals.rejected_messages,
    )


async def _drain_progress(agent: Agent, arrivals: _Arrivals, frames: int, report: Report) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S / 5)
        report(
            f"bench agent: drain {agent.publisher.state.frames_sent:,}/{frames:,} acked,"
            f" {len(arrivals.seqs):,} received"
        )


# ------------------------------------------------------------ the whole bench


def judge(footprint: Footprint, drain: Drain) -> list[Target]:
    """Each figure against the issue's target."""
    return [
        Target(
            "peak RSS",
            footprint.rss_peak_mb,
            "MB",
            f"< {RSS_TARGET_MB:g} MB",
            footprint.rss_peak_mb < RSS_TARGET_MB,
        ),
        Target(
            "CPU",
            footprint.cpu_percent,
            "% of one core",
            f"< {CPU_TARGET_PERCENT:g} %",
            footprint.cpu_percent < CPU_TARGET_PERCENT,
        ),
        Target(
            "drain rate",
            drain.frames_per_s,
            "frames/s",
            f">= {DRAIN_TARGET_FPS:,.0f} frames/s",
            drain.frames_per_s >= DRAIN_TARGET_FPS,
        ),
        Target(
            "frames arrived",
            drain.received,
            "frames",
            f"all {drain.frames:,}, verified",
            drain.received == drain.frames and drain.rejected_messages == 0,
        ),
    ]


def run_agent_bench(
    broker_url: str, work_dir: Path, *, duration_s: float, backlog_frames: int, report: Report
) -> AgentBench:
    """Both measurements, in a scratch folder under ``work_dir`` removed afterwards."""
    work_dir.mkdir(parents=True, exist_ok=True)
    measured_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
    with tempfile.TemporaryDirectory(prefix="bench-agent-", dir=work_dir) as scratch:
        footprint = measure_footprint(Path(scratch) / "run", broker_url, duration_s, report)
        drain = asyncio.run(measure_drain(Path(scratch) / "drain", broker_url, backlog_frames, report))
    return AgentBench(measured_at, machine(), footprint, drain, judge(footprint, drain))


def summary_text(bench: AgentBench) -> str:
    """The summary a person reads: figures, targets, pass or fail."""
    m, f, d = bench.machine, bench.footprint, bench.drain
    lines = [
        f"fleet bench agent, {bench.measured_at} on {m.cpu} ({m.cores} cores, {m.memory_gib:g} GiB), "
        f"Python {m.python}",
        f"  agent process: fleet-agent run, simulated bus at 1 Hz, {f.duration_s:g} s, {f.samples} samples;"
        f" {f.frames_framed} frames made, {f.frames_acked} acked",
        f"    RSS mean {f.rss_mean_mb:g} MB, peak {f.rss_peak_mb:g} MB;"
        f" CPU over the last {f.cpu_window_s:g} s (first {START_UP_S:g} s of start-up left out)",
        f"  backlog drain: {d.frames:,} frames, outbox durability {d.durability}, {d.seconds:g} s;"
        f" {d.received:,} arrived verified, {d.duplicates} duplicates,"
        f" {d.rejected_messages} messages rejected",
    ]
    return "\n".join(lines + target_lines(bench.targets))


def target_lines(targets: list[Target]) -> list[str]:
    """Each figure against its target, then the verdict (shared by every ``fleet bench``)."""
    lines = []
    for t in targets:
        value = f"{t.value:,.0f}" if t.value >= 1_000 else f"{t.value:g}"
        lines.append(
            f"  {t.name:<15} {value:>10} {t.unit:<14} target {t.goal:<24} {'pass' if t.passed else 'FAIL'}"
        )
    lines.append(
        "result: every target met" if all(t.passed for t in targets) else "result: a target was MISSED"
    )
    return lines
