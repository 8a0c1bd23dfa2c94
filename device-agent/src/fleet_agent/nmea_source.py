"""Fix sources that read NMEA 0183: a capture file or pipe, and a serial receiver.

Both hand bytes to ``NmeaParser``; only the I/O differs. Blocking reads run in a
worker thread so the agent's event loop never waits on a device.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import serial  # type: ignore[import-untyped]

from fleet_agent.fix import Fix
from fleet_agent.nmea import NmeaCounters, NmeaParser
from fleet_schemas.backoff import Backoff

log = logging.getLogger("fleet_agent.nmea_source")

CHUNK_BYTES = 4096
MAX_LINE_BYTES = 1024
"""A receiver line is under 100 bytes; past this the bytes are noise and go to the parser as one line."""


class LineSplitter:
    """Cuts a byte stream into lines, whatever the line ending, and bounds a line with no end."""

    def __init__(self) -> None:
        self._pending = b""

    def push(self, chunk: bytes) -> list[bytes]:
        """Return the complete lines ``chunk`` finishes, keeping the unfinished tail."""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > MAX_LINE_BYTES:
            lines.append(self._pending)
            self._pending = b""
        return lines

    def rest(self) -> bytes:
        """The unfinished last line, when the stream ends (a capture's last line may be cut)."""
        rest, self._pending = self._pending, b""
        return rest


class NmeaFileSource:
    """Fixes from an NMEA capture file or a pipe, as fast as possible or at the capture's pace.

    ``speedup`` 0 reads as fast as possible (a pipe from a live receiver, a
    dry run); above 0 each fix is held back by the time since the previous
    fix divided by ``speedup`` (at most ``max_gap_s``), so 1 replays a
    recorded trip in real time. The source ends when the file or pipe does.

    Example::

        async for fix in NmeaFileSource(Path("trip.nmea"), speedup=1).fixes():
            ...
    """

    def __init__(self, path: Path, *, speedup: float = 0.0, max_gap_s: float = 5.0) -> None:
        if speedup < 0:
            raise ValueError(f"speedup must be 0 (as fast as possible) or more, not {speedup}")
        self.path = path
        self.speedup = speedup
        self.max_gap_s = max_gap_s
        self.parser = NmeaParser()

    @property
    def counters(self) -> NmeaCounters:
        return self.parser.counters

    def _gap_s(self, previous: Fix, fix: Fix) -> float:
        """Replay time between two fixes: never negative (capture joins), never a long stall."""
        return min(max(fix.time_ms - previous.time_ms, 0) / 1000 / self.speedup, self.max_gap_s)

    async def fixes(self) -> AsyncGenerator[Fix, None]:
        loop = asyncio.get_running_loop()
        splitter = LineSplitter()
        previous: Fix | None = None
        due = loop.time()
        # Unbuffered, so a read from a pipe returns as soon as the writer has written something.
        with await asyncio.to_thread(self.path.open, "rb", buffering=0) as stream:
            log.info("reading NMEA", extra={"path": str(self.path), "speedup": self.speedup})
            while chunk := await asyncio.to_thread(stream.read, CHUNK_BYTES):
                for line in splitter.push(chunk):
                    for fix in self.parser.feed(line):
                        if self.speedup and previous is not None:
                            due += self._gap_s(previous, fix)
                            await asyncio.sleep(max(due - loop.time(), 0))
                        previous = fix
                        yield fix
        for fix in [*self.parser.feed(splitter.rest()), *self.parser.flush()]:
            yield fix
        log.info("end of NMEA input", extra={"path": str(self.path), **dataclasses.asdict(self.counters)})


class SerialNmeaSource:
    """Fixes from a receiver on a serial port; reopens the port whenever it goes away.

    A USB receiver that is unplugged or reset disappears and comes back, maybe
    later: the loss is logged, and the port is retried with a full-jitter
    backoff from ``retry_s`` up to ``max_retry_s``, one log line per attempt.
    The parser and its counters live on across reopens. The source never ends
    on its own.

    Example::

        async for fix in SerialNmeaSource("/dev/ttyACM0", baudrate=9600).fixes():
            ...
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        *,
        retry_s: float = 1.0,
        max_retry_s: float = 30.0,
        read_timeout_s: float = 1.0,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.read_timeout_s = read_timeout_s
        self.parser = NmeaParser()
        self.reopens = 0

    @property
    def counters(self) -> NmeaCounters:
        return self.parser.counters

    async def fixes(self) -> AsyncGenerator[Fix, None]:
        backoff = Backoff(self.retry_s, self.max_retry_s)
        while True:
            try:
                device = await asyncio.to_thread(self._open)
            except (serial.SerialException, OSError) as exc:
                retry = backoff.next_delay()
                failure = {"port": self.port, "error": str(exc), "retry_in_s": round(retry, 2)}
                log.warning("cannot open serial port", extra=failure)
                await asyncio.sleep(retry)
                continue
            log.info("reading NMEA", extra={"port": self.port, "baudrate": self.baudrate})
            try:
                async with contextlib.aclosing(self._read(device)) as reads:
                    async for fix in reads:
                        backoff.reset()
                        yield fix
            except (serial.SerialException, OSError) as exc:
                self.reopens += 1
                log.warning("serial port lost, reopening", extra={"port": self.port, "error": str(exc)})
            finally:
                with contextlib.suppress(serial.SerialException, OSError):
                    device.cancel_read()
                    device.close()

    def _open(self) -> Any:
        return serial.Serial(self.port, self.baudrate, timeout=self.read_timeout_s, exclusive=True)

    async def _read(self, device: Any) -> AsyncGenerator[Fix, None]:
        splitter = LineSplitter()
        while True:
            chunk: bytes = await asyncio.to_thread(device.read, max(1, device.in_waiting))
            for line in splitter.push(chunk):
                for fix in self.parser.feed(line):
                    yield fix
