"""The gpsd source against a real gpsd, fed a real capture through a pseudo-terminal.

The test does what gpsd's gpsfake does, without gpsfake's package (whose
Debian dependencies weigh half a gigabyte): it starts a private gpsd reading a
pty, lets the source connect and watch, then writes the capture into the pty
line by line. gpsd 3.22 (Debian 12) reports the same TPVs for this capture as
the gpsd 3.20 that wrote the ``.chk`` file, so the source must yield exactly
those.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from fleet_agent.fix import Fix
from fleet_agent.gpsd import GpsdCounters, GpsdSource
from fleet_devtools.stack import free_port

CAPTURE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nmea" / "sirfstarv-nmea.log"
GPSD = shutil.which("gpsd", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
TIMEOUT_S = 30

needs_gpsd = pytest.mark.skipif(
    GPSD is None, reason="gpsd is not installed (Debian: gpsd; see scripts/bootstrap)"
)


class Report(msgspec.Struct):
    name: str = msgspec.field(name="class")
    mode: int = 0
    time: str | None = None
    lat: float | None = None
    lon: float | None = None
    speed: float | None = None
    hdop: float | None = None
    satellites: list[dict[str, object]] | None = None


def expected_fixes(chk: Path) -> list[tuple[object, ...]]:
    """gpsd's TPVs with a fix, each with the HDOP and satellites used of the SKY before it."""
    decoder = msgspec.json.Decoder(Report)
    hdop: float | None = None
    used: int | None = None
    expected: list[tuple[object, ...]] = []
    for line in chk.read_bytes().splitlines():
        if not line.startswith(b"{"):
            continue
        report = decoder.decode(line)
        if report.name == "SKY":
            hdop = report.hdop if report.hdop is not None else hdop
            used = sum(s.get("used") is True for s in report.satellites) if report.satellites else used
        elif report.name == "TPV" and report.mode >= 2 and report.time is not None:
            expected.append((report.time, report.lat, report.lon, report.speed, report.mode, hdop, used))
    return expected


def seen(fix: Fix) -> tuple[object, ...]:
    speed = None if fix.speed_mps is None else round(fix.speed_mps, 3)
    return (fix.time_iso, round(fix.lat, 9), round(fix.lon, 9), speed, fix.mode, fix.hdop, fix.satellites)


class Gpsd(msgspec.Struct):
    """A private gpsd on ``port`` reading a pty; ``play`` writes the capture into the pty."""

    port: int
    master: int
    player: threading.Thread | None = None

    def play(self) -> None:
        def write() -> None:
            for line in CAPTURE.read_bytes().splitlines(keepends=True):
                if not line.startswith(b"#"):
                    os.write(self.master, line)
                    time.sleep(0.002)

        self.player = threading.Thread(target=write, daemon=True)
        self.player.start()


@pytest.fixture
def gpsd() -> Iterator[Gpsd]:
    """A private gpsd whose pty gets ``CAPTURE`` only when the test says so."""
    if not CAPTURE.exists():
        pytest.skip(f"capture {CAPTURE} is absent")
    assert GPSD is not None
    master, slave = os.openpty()
    device = os.ttyname(slave)
    os.chmod(device, 0o666)  # noqa: S103 - a test's pty; gpsd started as root reads it as its own user
    port = free_port()
    process = subprocess.Popen([GPSD, "-N", "-n", "-b", "-S", str(port), device], stderr=subprocess.DEVNULL)
    served = Gpsd(port=port, master=master)
    try:
        yield served
    finally:
        process.terminate()
        process.wait(timeout=10)
        if served.player is not None:
            served.player.join(timeout=30)
        os.close(master)
        os.close(slave)


async def take(source: GpsdSource, count: int) -> list[Fix]:
    fixes: list[Fix] = []
    async for fix in source.fixes():
        fixes.append(fix)
        if len(fixes) == count:
            break
    return fixes


async def play_once_watching(source: GpsdSource, gpsd: Gpsd) -> None:
    """Starts the capture once gpsd has answered the source's WATCH, so no sentence precedes the watch."""
    while source.counters.skipped < 2:  # VERSION on connect, then DEVICES/WATCH for the watch
        await asyncio.sleep(0.02)
    gpsd.play()


async def take_capture(source: GpsdSource, gpsd: Gpsd, count: int) -> list[Fix]:
    player = asyncio.create_task(play_once_watching(source, gpsd))
    try:
        return await take(source, count)
    finally:
        player.cancel()


@needs_gpsd
def test_source_yields_every_fix_gpsd_reports_for_a_real_capture(gpsd: Gpsd) -> None:
    expected = expected_fixes(CAPTURE.with_name(CAPTURE.name + ".chk"))
    # gpsd may not be listening yet when the source first connects: that exercises the retry too.
    source = GpsdSource("127.0.0.1", gpsd.port, retry_s=0.1, max_retry_s=0.5)
    fixes = asyncio.run(asyncio.wait_for(take_capture(source, gpsd, len(expected)), TIMEOUT_S))
    print(f"{CAPTURE.name}: {len(fixes)} fixes from gpsd, {len(expected)} TPVs with a fix in the .chk")
    print(source.counters)
    assert [seen(fix) for fix in fixes] == expected
    assert source.counters.sky > 0
    assert source.counters.skipped > 0  # VERSION, DEVICES, WATCH at least


def test_reports_without_a_fix_other_classes_and_bad_json_are_counted() -> None:
    source = GpsdSource()
    lines = [
        b'{"class":"VERSION","release":"3.22","proto_major":3,"proto_minor":14}\n',
        b'{"class":"TPV","device":"/dev/ttyACM0","mode":1}\n',
        b'{"class":"SKY","hdop":0.9,"satellites":[{"PRN":15,"used":true},{"PRN":17,"used":false}]}\n',
        b"not json\n",
        b'{"class":"TPV","mode":"3D"}\n',
        b'{"class":"TPV","mode":3,"time":"2019-02-05T02:09:37.000Z","lat":44.06,"lon":-121.31,"altMSL":1123.8}\n',
    ]
    fixes = [fix for line in lines if (fix := source.read_report(line)) is not None]
    assert fixes == [
        Fix(time_ms=1549332577000, lat=44.06, lon=-121.31, mode=3, altitude_m=1123.8, hdop=0.9, satellites=1)
    ]
    assert source.counters == GpsdCounters(connects=0, fixes=1, no_fix=1, sky=1, skipped=1, bad_json=2)
