"""Replaying NMEA: the dry run of a capture, and the file, pipe and serial sources that feed the agent."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import tty
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest

from fleet_agent.fix import Fix
from fleet_agent.nmea import NmeaParser, parse_lines, sentence
from fleet_agent.nmea_source import NmeaFileSource, SerialNmeaSource
from fleet_agent.replay import dry_run_lines

CAPTURE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nmea" / "rx210.log"
needs_capture = pytest.mark.skipif(not CAPTURE.exists(), reason=f"capture {CAPTURE} is absent")
KEYS = ["time_ms", "time", "lat", "lon", "speed_mps", "course", "altitude_m", "mode", "hdop", "satellites"]


def receiver(first_s: int, count: int) -> list[bytes]:
    """``count`` one-second epochs (RMC, GGA) of a receiver driving north, ``first_s`` s after 10:00."""
    lines = []
    for n in range(first_s, first_s + count):
        hhmmss = f"10{n // 60:02d}{n % 60:02d}.00"
        lat = f"48{7 + n * 0.001:07.4f}"
        lines.append(sentence(f"GPRMC,{hhmmss},A,{lat},N,01131.000,E,10.0,0.0,250526,,,A").encode())
        lines.append(sentence(f"GPGGA,{hhmmss},{lat},N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,").encode())
    return lines


def seconds(fixes: list[Fix]) -> list[int]:
    return [fix.time_ms // 1000 % 3600 for fix in fixes]


async def take(fixes: AsyncIterator[Fix], count: int) -> list[Fix]:
    taken: list[Fix] = []
    async for fix in fixes:
        taken.append(fix)
        if len(taken) == count:
            break
    return taken


@needs_capture
def test_dry_run_prints_one_json_line_per_fix_of_a_capture() -> None:
    parser = NmeaParser()
    lines = list(dry_run_lines(CAPTURE, parser))
    assert len(lines) == parser.counters.fixes == 40
    first = msgspec.json.decode(lines[0])
    assert list(first) == KEYS
    assert first == {
        "time_ms": 1459708862000, "time": "2016-04-03T18:41:02.000Z", "lat": 50.002386333, "lon": 8.6439525,
        "speed_mps": 0.216, "course": None, "altitude_m": 159.6, "mode": 3, "hdop": 3.62, "satellites": 5,
    }  # fmt: skip
    times = [msgspec.json.decode(line)["time_ms"] for line in lines]
    assert times == sorted(times)


def test_file_source_reads_a_file_as_fast_as_possible(tmp_path: Path) -> None:
    capture = tmp_path / "trip.nmea"
    capture.write_bytes(b"".join(receiver(0, 50)))
    source = NmeaFileSource(capture)
    started = time.monotonic()
    fixes = asyncio.run(take(source.fixes(), 100))
    assert time.monotonic() - started < 1
    assert fixes == list(parse_lines(receiver(0, 50)))
    assert source.counters.sentences == 100


def test_file_source_paces_fixes_at_the_capture_rate(tmp_path: Path) -> None:
    capture = tmp_path / "trip.nmea"
    capture.write_bytes(b"".join(receiver(0, 5)))
    source = NmeaFileSource(capture, speedup=20)  # 1 s between fixes becomes 50 ms
    started = time.monotonic()
    fixes = asyncio.run(take(source.fixes(), 10))
    elapsed = time.monotonic() - started
    assert seconds(fixes) == [0, 1, 2, 3, 4]
    assert 0.19 <= elapsed < 1.0


def test_file_source_reads_a_pipe_as_the_writer_writes(tmp_path: Path) -> None:
    fifo = tmp_path / "receiver"
    os.mkfifo(fifo)
    data = b"".join(receiver(0, 10))

    def write() -> None:
        with fifo.open("wb", buffering=0) as pipe:
            for at in range(0, len(data), 37):  # lines cut across writes, as a pipe delivers them
                pipe.write(data[at : at + 37])
                time.sleep(0.001)

    writer = threading.Thread(target=write)
    writer.start()
    fixes = asyncio.run(take(NmeaFileSource(fifo).fixes(), 100))
    writer.join()
    assert seconds(fixes) == list(range(10))


@contextmanager
def pseudo_terminal(link: Path) -> Iterator[int]:
    """A serial-like device, reachable at ``link`` (as udev's /dev/serial/by-id links); yields its master."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link.unlink(missing_ok=True)
    link.symlink_to(os.ttyname(slave))
    try:
        yield master
    finally:
        os.close(master)
        os.close(slave)


async def feed(master: int, lines: list[bytes], stop: asyncio.Event) -> None:
    """Write the receiver's lines to the terminal's master side, once every 10 ms, until told to stop."""
    for line in lines:
        if stop.is_set():
            return
        os.write(master, line)
        await asyncio.sleep(0.01)


def test_serial_source_reopens_the_port_after_the_receiver_disappears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = tmp_path / "gps"
    source = SerialNmeaSource(str(link), 9600, retry_s=0.05, max_retry_s=0.1, read_timeout_s=0.1)

    async def scenario() -> tuple[list[Fix], list[Fix]]:
        fixes = source.fixes()
        stop = asyncio.Event()
        with pseudo_terminal(link) as master:
            writer = asyncio.create_task(feed(master, receiver(0, 100), stop))
            before = await take(fixes, 3)
            stop.set()
            await writer
        # The device is gone: the source logs it, retries, and finds the receiver back at the same link.
        stop.clear()
        with pseudo_terminal(link) as master:
            writer = asyncio.create_task(feed(master, receiver(200, 100), stop))
            after = await take(fixes, 3)
            stop.set()
            await writer
        await fixes.aclose()
        return before, after

    with caplog.at_level(logging.INFO, logger="fleet_agent.nmea_source"):
        before, after = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert len(before) == len(after) == 3
    assert all(fix.time_ms < later.time_ms for fix in before for later in after)
    assert source.reopens >= 1
    assert "serial port lost, reopening" in caplog.messages
