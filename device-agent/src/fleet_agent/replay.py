"""``fleet-agent replay FILE --dry-run``: the fixes the agent would take from an NMEA capture.

One JSON object per line and per fix, so a capture can be checked, diffed or
piped into ``jq`` before it is replayed to a broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from fleet_agent.fix import Fix
from fleet_agent.nmea import NmeaParser, parse_lines


class DryRunFix(msgspec.Struct):
    """One line of the dry run; the field order is the key order printed."""

    time_ms: int
    time: str
    lat: float
    lon: float
    speed_mps: float | None
    course: float | None
    altitude_m: float | None
    mode: int
    hdop: float | None
    satellites: int | None


_ENCODER = msgspec.json.Encoder()


def dry_run_line(fix: Fix) -> str:
    """The JSON line for one fix: degrees to 9 decimals (as gpsd prints), speed to the mm/s."""
    line = DryRunFix(
        time_ms=fix.time_ms,
        time=fix.time_iso,
        lat=round(fix.lat, 9),
        lon=round(fix.lon, 9),
        speed_mps=None if fix.speed_mps is None else round(fix.speed_mps, 3),
        course=fix.heading_deg,
        altitude_m=fix.altitude_m,
        mode=fix.mode,
        hdop=fix.hdop,
        satellites=fix.satellites,
    )
    return _ENCODER.encode(line).decode()


def dry_run_lines(path: Path, parser: NmeaParser | None = None) -> Iterator[str]:
    """One JSON line per fix of the NMEA file at ``path``; pass ``parser`` to read its counters after."""
    with path.open("rb") as lines:
        for fix in parse_lines(lines, parser):
            yield dry_run_line(fix)
