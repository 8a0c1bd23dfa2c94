"""One onboard agent: fixes in, checked and sampled, stored in the outbox, published.

Three tasks share the outbox: the producer (source → clock check → sampling
→ outbox), the publisher (outbox → broker) and the health writer (a small JSON
file the unit's watchdog reads). Stopping lets the publisher finish the
message in flight and make one last pass over what was stored up to the stop
(its newest frames and one backlog message); whatever is not acked stays in
the outbox.

The publisher is supervised: an error it does not handle itself (the outbox
failing under it, e.g. ``sqlite3.OperationalError`` on a full or locked disk)
is logged, shown in the health file, and the publisher is started again with
backoff, so the agent never goes on producing while nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from fleet_agent import __version__
from fleet_agent.clock import check_fix_time
from fleet_agent.config import AgentConfig
from fleet_agent.fix import Fix, FixSource
from fleet_agent.keys import KeyRing
from fleet_agent.outbox import Outbox, OutboxCounters
from fleet_agent.publisher import Publisher, PublisherState
from fleet_agent.sampling import SamplerState, sample
from fleet_schemas import DeviceStatus, Frame
from fleet_schemas.backoff import sleep_unless_stopped

log = logging.getLogger("fleet_agent.agent")

HEALTH_EVERY_S = 5.0


class FixCounters(msgspec.Struct):
    """What happened to the fixes the source gave."""

    received: int = 0
    framed: int = 0
    skipped_by_sampling: int = 0
    rollover_corrected: int = 0
    rejected_future: int = 0
    rejected_implausible: int = 0
    rejected_out_of_range: int = 0
    lost_disk_full: int = 0


class Supervision(msgspec.Struct):
    """What the supervisor saw of the publisher task."""

    restarts: int = 0
    last_error: str | None = None
    """type and message of the last error that ended the publisher (never payload bytes)"""
    last_error_ms: int | None = None


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """The health file: enough for a watchdog and for ``fleet-agent status``."""

    time_ms: int
    device: str
    agent_version: str
    pid: int
    connected: bool
    backlog: int
    outbox_full: bool
    next_seq: int
    key_id: str
    last_fix_ms: int | None
    last_ack_ms: int | None
    clock_offset_ms: int | None
    fixes: FixCounters
    outbox: OutboxCounters
    publisher: PublisherState
    publisher_restarts: int
    publisher_error: str | None


class Agent:
    """Everything one device runs; ``run`` until ``stop`` is set or the source ends and the outbox drained."""

    def __init__(
        self,
        config: AgentConfig,
        source: FixSource,
        clock: Callable[[], float] = time.time,
        *,
        check_clock: bool = True,
    ) -> None:
        """``check_clock=False`` keeps fix times as they are: replays of old field logs."""
        self.config = config
        self._check_clock = check_clock
        self._source = source
        self._clock = clock
        self.keys = KeyRing(Path(config.key_file), config.device)
        self.outbox = Outbox(Path(config.data_dir), config.outbox)
        self.fixes = FixCounters()
        self._sampler = SamplerState()
        self._last_fix: Fix | None = None
        self._clock_offset_ms: int | None = None
        self.publisher = Publisher(
            config.broker, config.operator, config.device, self.outbox, self.keys, self.status
        )
        self.supervision = Supervision()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def status(self) -> DeviceStatus:
        return DeviceStatus(
            state="online",
            device=self.config.device,
            agent_version=__version__,
            time_ms=self._now_ms(),
            backlog=self.outbox.count(),
            outbox_full=self.outbox.full,
            last_fix_ms=self._last_fix.time_ms if self._last_fix else None,
            key_id=self.keys.current().key_id,
            clock_offset_ms=self._clock_offset_ms,
            refusals=dict(self.publisher.state.refusals) or None,
            last_refusal_code=last.code if (last := self.publisher.state.last_refusal) else None,
        )

    def health(self) -> Health:
        return Health(
            time_ms=self._now_ms(),
            device=self.config.device,
            agent_version=__version__,
            pid=os.getpid(),
            connected=self.publisher.state.connected,
            backlog=self.outbox.count(),
            outbox_full=self.outbox.full,
            next_seq=self.outbox.next_seq,
            key_id=self.keys.current().key_id,
            last_fix_ms=self._last_fix.time_ms if self._last_fix else None,
            last_ack_ms=self.publisher.state.last_ack_ms,
            clock_offset_ms=self._clock_offset_ms,
            fixes=self.fixes,
            outbox=self.outbox.counters(),
            publisher=self.publisher.state,
            publisher_restarts=self.supervision.restarts,
            publisher_error=self.supervision.last_error,
        )

    def accept(self, fix: Fix) -> Frame | None:
        """Check, sample and store one fix; the frame stored, if any."""
        self.fixes.received += 1
        now_ms = self._now_ms()
        fix_ms, verdict = (
            check_fix_time(self.config.clock, fix.time_ms, now_ms)
            if self._check_clock
            else (fix.time_ms, "ok")
        )
        if fix_ms is None:
            if verdict == "future":
                self.fixes.rejected_future += 1
            else:
                self.fixes.rejected_implausible += 1
            log.warning(
                "fix time rejected",
                extra={
                    "device": self.config.device,
                    "reason": verdict,
                    "fix_ms": fix.time_ms,
                    "system_ms": now_ms,
                },
            )
            return None
        if verdict == "rollover_corrected":
            self.fixes.rollover_corrected += 1
            fix = msgspec.structs.replace(fix, time_ms=fix_ms)
        problem = out_of_range(frame_from(self.config, fix, 0))
        if problem is not None:
            self.fixes.rejected_out_of_range += 1
            log.warning("fix out of range", extra={"device": self.config.device, "detail": problem})
            return None
        self._clock_offset_ms = now_ms - fix_ms
        self._last_fix = fix
        self._sampler, send = sample(self.config.sampling, self._sampler, fix)
        if not send:
            self.fixes.skipped_by_sampling += 1
            return None
        frame = self.outbox.append(lambda seq: frame_from(self.config, fix, seq))
        if frame is None:
            self.fixes.lost_disk_full += 1
            return None
        self.fixes.framed += 1
        self.publisher.wake.set()
        return frame

    async def _produce(self) -> None:
        async for fix in self._source.fixes():
            self.accept(fix)

    async def _supervise_publisher(self, stop: asyncio.Event) -> None:
        """Run the publisher until ``stop``, starting it again with backoff whenever it dies."""
        broker = self.config.broker
        backoff = broker.backoff()
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.publisher.run(stop)
            except Exception as exc:  # whatever kills it, the agent must not go on without a publisher
                delay = backoff.next_delay(time.monotonic() - started)
                self.supervision.restarts += 1
                self.supervision.last_error = f"{type(exc).__name__}: {exc}"
                self.supervision.last_error_ms = self._now_ms()
                log.error(
                    "publisher failed; restarting it",
                    extra={
                        "device": self.config.device,
                        "error_type": type(exc).__name__,
                        "error": str(exc),
                        "restarts": self.supervision.restarts,
                        "retry_in_s": round(delay, 2),
                        "backlog": self.outbox.count(),
                    },
                )
                await sleep_unless_stopped(stop, delay)

    async def _write_health(self, stop: asyncio.Event) -> None:
        if self.config.health_file is None:
            return
        path = Path(self.config.health_file)
        while not stop.is_set():
            write_health(path, self.health())
            await sleep_unless_stopped(stop, HEALTH_EVERY_S)
        write_health(path, self.health())

    async def run(self, stop: asyncio.Event, *, exit_when_drained: bool = False) -> None:
        """Run until ``stop``; ``exit_when_drained`` also ends it once the source ended and all is acked."""
        log.info(
            "agent starting",
            extra={
                "device": self.config.device,
                "backlog": self.outbox.count(),
                "next_seq": self.outbox.next_seq,
            },
        )
        stop_publishing = asyncio.Event()
        publisher = asyncio.create_task(self._supervise_publisher(stop_publishing))
        health = asyncio.create_task(self._write_health(stop))
        producer = asyncio.create_task(self._produce())
        try:
            await _until_stopped_or_drained(self, stop, producer, exit_when_drained)
        finally:
            stop.set()
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            stop_publishing.set()  # only now: the publisher's last pass sees every frame stored
            await asyncio.gather(publisher, health, return_exceptions=True)
            self.outbox.close()
            log.info("agent stopped", extra={"device": self.config.device})


async def _until_stopped_or_drained(
    agent: Agent, stop: asyncio.Event, producer: asyncio.Task[None], exit_when_drained: bool
) -> None:
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([stopping, producer], return_when=asyncio.FIRST_COMPLETED)
        if producer.done() and not producer.cancelled() and producer.exception() is not None:
            raise producer.exception()  # type: ignore[misc]
        while exit_when_drained and not stop.is_set() and agent.outbox.count() > 0:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the outbox is SQLite: polled, it has no event to await
        if not exit_when_drained:
            await stopping
    finally:
        stopping.cancel()


def write_health(path: Path, health: Health) -> None:
    """Write the health file atomically so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(msgspec.json.encode(health))
    os.replace(temporary, path)


def out_of_range(frame: Frame) -> str | None:
    """Why ``frame`` breaks the wire format's ranges (impossible coordinates, speeds…), or None.

    Building a Struct does not check its constraints; decoding does, so the
    frame is checked as the server will check it, from the same types.
    """
    try:
        msgspec.convert(msgspec.structs.astuple(frame), Frame)
    except msgspec.ValidationError as exc:
        return str(exc)
    return None


def frame_from(config: AgentConfig, fix: Fix, seq: int) -> Frame:
    """The frame a fix becomes under sequence number ``seq``."""
    return Frame(
        device=config.device,
        bus=config.bus,
        seq=seq,
        time_ms=fix.time_ms,
        lat=fix.lat,
        lon=fix.lon,
        accuracy_m=fix.accuracy_m,
        speed_mps=fix.speed_mps,
        heading_deg=fix.heading_deg % 360.0 if fix.heading_deg is not None else None,
        altitude_m=fix.altitude_m,
        satellites=fix.satellites,
        hdop=fix.hdop,
        ignition=fix.ignition,
        trip_id=fix.trip_id,
        source=fix.source,
    )
