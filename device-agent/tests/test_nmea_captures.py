"""The NMEA parser against gpsd, on real receiver captures from gpsd's regression suite.

Each ``*.log`` in ../shared/data/nmea (beside the repository) is parsed and its
fixes are compared with the TPV reports (mode >= 2) of the matching ``.log.chk``,
which gpsd 3.20 printed for the same capture: time, latitude and longitude
within 1e-6 degrees, speed (gpsd prints 3 decimals) and mode.

gpsd prints three kinds of TPV with a fix, and each is checked differently:

* End-of-epoch TPVs, the last one for a given time. gpsd sends one when the
  sentence that it learnt closes the receiver's cycle arrives, which is the rule
  the parser follows, so every one must match, except the few listed in
  ``KNOWN_DIFFERENCES`` with the reason.
* In-progress TPVs: earlier ones for the same time. gpsd sends them before it
  has learnt the cycle, and for some receivers it learns two closing sentences
  (haicom, motorola: GGA and RMC), so it reports at GGA before RMC has brought
  the speed. It then fills the speed in from the position change since the
  previous fix. The receiver never said that speed, and the parser reports each
  epoch once, complete, so these cannot be reproduced. They are counted and
  printed; they are matched only when the epoch was already complete.
* Untimed TPVs: a position gpsd reported before any RMC or ZDA had given it a
  date. A ``Fix`` always has a time, so these are only looked up by position:
  the parser has them when the date arrived later in the same epoch.

Both sides also differ in the other direction. The parser reports a few epochs
gpsd never printed with a time: the epoch open at the end of a capture, the one
cut by a capture join, and the first fix, whose date came after gpsd's report.
gpsd drops an epoch whose closing sentence never comes; the parser reports it
when the next epoch starts, or at ``flush()``.

Week rollover: gpsd 3.20 moves every date before 2017 forward by 1024 GPS weeks
(7168 days). The README's "chk shift" column says which captures this affects
(``SHIFTED``), and only for those is 7168 days added to the parser's time
before comparing. The parser itself reports the receiver's date.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fleet_agent.fix import Fix
from fleet_agent.nmea import NmeaParser, parse_lines

REPO = Path(__file__).resolve().parents[2]
CAPTURES_DIR = REPO.parent / "shared" / "data" / "nmea"
CAPTURES = sorted(CAPTURES_DIR.glob("*.log")) if CAPTURES_DIR.is_dir() else []

DAY_MS = 86_400_000
GPS_WEEK_ROLLOVER_MS = 1024 * 7 * DAY_MS
SHIFTED = {
    "beidou-bd.log", "bt451.log", "bu353-glonass.log", "et-332.log", "haicom-305N.log", "iTrek.log",
    "isync.log", "motorola-t805.log", "nl2008u.log", "rx210.log", "skytraq-dgps.log", "sl869.log",
}  # fmt: skip
UNSHIFTED = {
    "gp-320fw-2019-04-07-coldboot.log", "sirfstarv-nmea.log", "telit-he910.log", "ublox-8.log",
    "ublox-zed-f9p-nmea.log",
}  # fmt: skip

DEGREES = 1e-6
SPEED_MPS = 6e-4
MAX_EPOCHS_GPSD_DROPPED = 2

KNOWN_DIFFERENCES: dict[str, dict[str, str]] = {
    "bt451.log": {
        "2029-07-26T14:33:06.000Z": (
            "two captures joined: the time jumps back from 15:25:08 to 14:33:06 on the same day. gpsd "
            "takes any hour that goes backwards for midnight and moves to the next day; the parser "
            "waits for a drop of more than an hour. That epoch also has no RMC or VTG, so gpsd "
            "derived a speed (0.023 m/s) where the parser has none."
        ),
    },
    "haicom-305N.log": {
        "2026-11-22T09:53:07.801Z": (
            "the receiver's GSA in that epoch says 2D ($GPGSA,A,2,...); gpsd keeps the 3D of the "
            "previous epoch (its 'don't downgrade' rule), the parser reports the receiver's 2D."
        ),
    },
    "iTrek.log": {
        "2025-03-12T04:59:23.000Z": (
            "the GSA just before that RMC says 2D ($GPGSA,A,2,,,...) and no GGA follows; gpsd keeps "
            "the previous 3D, the parser reports the receiver's 2D."
        ),
    },
    "sl869.log": {
        "2032-07-11T10:21:43.990Z": (
            "GGA counts 3 satellites and the receiver's GSAs say 2D; gpsd reports 3D, the parser 2D."
        ),
        "2032-07-11T10:21:44.000Z": (
            "GGA counts 3 satellites and the receiver's GSAs say 2D; gpsd reports 3D, the parser 2D."
        ),
    },
}


class Tpv(msgspec.Struct):
    """The fields of a gpsd TPV report that are compared."""

    mode: int = 0
    time: str | None = None
    lat: float | None = None
    lon: float | None = None
    speed: float | None = None


@dataclass
class Comparison:
    """How one capture's fixes line up with gpsd's reports."""

    name: str
    fixes: int
    epochs: int = 0
    epochs_matched: int = 0
    unmatched: dict[str, str] = field(default_factory=dict)
    in_progress: int = 0
    in_progress_matched: int = 0
    untimed: int = 0
    untimed_located: int = 0
    dropped_by_gpsd: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.name}: {self.epochs_matched}/{self.epochs} end-of-epoch TPVs matched, "
            f"in-progress {self.in_progress_matched}/{self.in_progress}, "
            f"untimed located {self.untimed_located}/{self.untimed}, "
            f"{self.fixes} fixes, {len(self.dropped_by_gpsd)} epochs gpsd did not report"
        )


def _tpvs(chk: Path) -> list[Tpv]:
    decoder = msgspec.json.Decoder(Tpv)
    with chk.open("rb") as lines:
        return [decoder.decode(line) for line in lines if line.startswith(b'{"class":"TPV"')]


def _ms(iso: str) -> int:
    return (datetime.fromisoformat(iso) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _same_place(fix: Fix, tpv: Tpv) -> bool:
    assert tpv.lat is not None
    assert tpv.lon is not None
    return abs(fix.lat - tpv.lat) <= DEGREES and abs(fix.lon - tpv.lon) <= DEGREES


def _same(fix: Fix, tpv: Tpv) -> bool:
    if fix.speed_mps is None or tpv.speed is None:
        same_speed = fix.speed_mps is None and tpv.speed is None
    else:
        same_speed = abs(fix.speed_mps - tpv.speed) <= SPEED_MPS
    return _same_place(fix, tpv) and same_speed and fix.mode == tpv.mode


def _difference(fix: Fix | None, tpv: Tpv) -> str:
    ours: dict[str, Any] = {} if fix is None else {
        "time": fix.time_iso, "lat": fix.lat, "lon": fix.lon, "speed": fix.speed_mps, "mode": fix.mode,
    }  # fmt: skip
    return f"gpsd {msgspec.structs.asdict(tpv)} parser {ours or 'no fix'}"


def compare(log: Path) -> Comparison:
    shift = GPS_WEEK_ROLLOVER_MS if log.name in SHIFTED else 0
    with log.open("rb") as lines:
        fixes = list(parse_lines(lines, NmeaParser()))
    by_gpsd_time = {fix.time_ms + shift: fix for fix in fixes}
    assert len(by_gpsd_time) == len(fixes), "the parser reported an epoch twice"

    result = Comparison(log.name, fixes=len(fixes))
    epochs: dict[int, list[Tpv]] = defaultdict(list)
    untimed: list[Tpv] = []
    for tpv in _tpvs(log.with_name(log.name + ".chk")):
        if tpv.mode < 2 or tpv.lat is None:
            continue  # no fix, or a mode from GSA before any position
        if tpv.time is None:
            untimed.append(tpv)
        else:
            epochs[_ms(tpv.time)].append(tpv)

    accounted: set[int] = set()
    for gpsd_ms, reports in epochs.items():
        *in_progress, end = reports
        fix = by_gpsd_time.get(gpsd_ms) or next(
            (f for f in fixes if (f.time_ms + shift - gpsd_ms) % DAY_MS == 0 and _same_place(f, end)), None
        )  # the same epoch on another day: gpsd's midnight rule moved it
        result.epochs += 1
        if fix is not None:
            accounted.add(fix.time_ms)
        if fix is not None and fix.time_ms + shift == gpsd_ms and _same(fix, end):
            result.epochs_matched += 1
        else:
            assert end.time is not None
            result.unmatched[end.time] = _difference(fix, end)
        result.in_progress += len(in_progress)
        result.in_progress_matched += sum(fix is not None and _same(fix, tpv) for tpv in in_progress)

    result.untimed = len(untimed)
    for tpv in untimed:
        hits = [fix.time_ms for fix in fixes if _same_place(fix, tpv)]
        accounted.update(hits)
        result.untimed_located += bool(hits)
    result.dropped_by_gpsd = [fix.time_iso for fix in fixes if fix.time_ms not in accounted]
    return result


def test_every_capture_says_whether_gpsd_shifted_its_dates() -> None:
    if not CAPTURES:
        pytest.skip(f"no NMEA captures in {CAPTURES_DIR}")
    assert {log.name for log in CAPTURES} == SHIFTED | UNSHIFTED
    assert not SHIFTED & UNSHIFTED


@pytest.mark.parametrize(
    "log",
    [pytest.param(log, id=log.name) for log in CAPTURES]
    or [pytest.param(None, marks=pytest.mark.skip(reason=f"no NMEA captures in {CAPTURES_DIR}"))],
)
def test_parser_reports_the_epochs_gpsd_reports(log: Path) -> None:
    result = compare(log)
    print(result.summary())
    for gpsd_time, difference in result.unmatched.items():
        print(f"  {gpsd_time}: {difference}")
    if result.dropped_by_gpsd:
        print(f"  reported by the parser only: {', '.join(result.dropped_by_gpsd)}")

    known = KNOWN_DIFFERENCES.get(log.name, {})
    assert result.epochs > 0, result.summary()
    assert set(result.unmatched) == set(known), f"{result.summary()}\n{result.unmatched}"
    assert result.epochs_matched == result.epochs - len(known), result.summary()
    assert len(result.dropped_by_gpsd) <= MAX_EPOCHS_GPSD_DROPPED, result.summary()


def test_known_differences_name_real_captures() -> None:
    if not CAPTURES:
        pytest.skip(f"no NMEA captures in {CAPTURES_DIR}")
    assert set(KNOWN_DIFFERENCES) <= {log.name for log in CAPTURES}
