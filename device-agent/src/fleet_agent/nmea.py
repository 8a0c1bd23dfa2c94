"""Incremental NMEA 0183 parser: receiver lines in, one ``Fix`` per navigation epoch out.

Pure: no I/O and no clock, so the same code serves a serial port, a pipe, a
replayed capture and the property tests. It reports what the receiver said
(dates included: GPS week-rollover repair is the agent's job, not this one).

Receivers spread one epoch (one position solution) over several sentences:
RMC gives date, time, position, speed and course; GGA time, position, fix
quality, satellites, HDOP and altitude; GSA the 2D/3D mode and DOPs; VTG speed
and course; GLL time and position. As gpsd does, a timestamped sentence whose
time differs from the current epoch's opens a new epoch, and the last
timestamped sentence type of an epoch is learnt as the one that closes the
next: the epoch is reported once, complete, when that sentence arrives. An
epoch whose closing sentence never came (lost line, first epoch of a stream)
is reported as soon as the next epoch starts, so nothing is dropped and every
``Fix`` carries the whole epoch (an agent sampling the first fix of each second
would otherwise send a fix without speed).

The mode (gpsd's 0-3) comes from the receiver's own GSA when the epoch has one;
else from GGA (3D with an altitude from four satellites or more); else RMC and
GLL, which cannot tell 2D from 3D, keep the previous epoch's. A sentence that
says "no fix" (RMC V, GGA quality 0, GSA mode 1, VTG/GLL mode N) adds nothing,
and an epoch without a position, a mode of 2 or more, and a date (from RMC or
ZDA; GGA has the time of day only) gives no ``Fix``.

pynmea2 frames the sentence, verifies the checksum and names the fields. Its
typed accessors are not used as they are: on a malformed field they return the
raw string instead of failing, an empty latitude reads as 0.0 (Null Island) and
a hemisphere other than N/S/E/W gives 0.0, so every value goes through the
strict converters below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, time, timedelta
from decimal import Decimal

import pynmea2

from fleet_agent.fix import Fix

KNOTS_TO_MPS = 1852.0 / 3600.0
MS_PER_DAY = 86_400_000
UNIX_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
MIDNIGHT_MARGIN_MS = 3_600_000
"""A time of day that drops by more than this means midnight passed; less is a receiver glitch."""
MAX_SENTENCE_CHARS = 160
"""NMEA allows 82 characters; proprietary and NMEA 4.x sentences run longer, binary floods far longer."""

TIMED_TYPES = frozenset({"RMC", "GGA", "GNS", "GLL"})
"""Sentences whose time opens and closes epochs; ZDA is left out as gpsd does (some chips send it
only with a fix, which would make the cycle look irregular)."""

_FRAME = re.compile(r"\$[^*]*\*[0-9A-Fa-f]{2}")


@dataclass(slots=True)
class NmeaCounters:
    """What the parser did with its input, one counter per reason a line or sentence was dropped."""

    lines: int = 0
    sentences: int = 0
    """Standard sentences with a good checksum that were decoded (used or not)."""
    fixes: int = 0
    blank: int = 0
    comments: int = 0
    """Lines starting with ``#``: capture headers and notes."""
    garbage: int = 0
    """Text that is not framed as ``$...*hh``: binary noise, partial or cut sentences, console output."""
    no_checksum: int = 0
    bad_checksum: int = 0
    proprietary: int = 0
    """``$P...`` sentences (SiRF, SkyTraq, u-blox ...): vendor formats this parser does not read."""
    unknown_type: int = 0
    """A well-formed talker sentence of a type pynmea2 does not know."""
    bad_fields: int = 0
    """Good checksum but a field that does not parse (bad number, bad date, short sentence)."""


class _BadField(ValueError):
    """A field of a checksummed sentence holds something that is not a value."""


@dataclass(slots=True)
class _Epoch:
    """Everything the sentences of one navigation epoch said so far."""

    tod_ms: int | None = None
    carried_mode: int = 0
    """The previous epoch's mode: RMC and GLL cannot tell 2D from 3D, and a GSA often trails the report."""
    last_timed: str | None = None
    reported: bool = False
    gsa_mode: int | None = None
    gga_mode: int | None = None
    lat: float | None = None
    lon: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    altitude_m: float | None = None
    gga_hdop: float | None = None
    gga_satellites: int | None = None
    gsa_hdop: float | None = None
    gsa_used: int = 0

    @property
    def mode(self) -> int:
        """The receiver's GSA first, then what GGA/GNS imply, else RMC/GLL (see the module doc)."""
        if self.gsa_mode is not None:
            return self.gsa_mode
        if self.lat is None:
            return 1
        if self.gga_mode is not None:
            return self.gga_mode
        return max(self.carried_mode, 2)


def _text(value: object) -> str:
    """A field as the receiver sent it ('' when absent); pynmea2 may already have converted it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise _BadField(f"unexpected field value {value!r}")


def _float(value: object) -> float | None:
    if isinstance(value, float | Decimal):
        return float(value)
    raw = _text(value)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise _BadField(f"not a number: {raw!r}") from exc


def _int(value: object) -> int | None:
    if isinstance(value, int):
        return value
    raw = _text(value)
    if not raw:
        return None
    if not raw.isdigit():
        raise _BadField(f"not an integer: {raw!r}")
    return int(raw)


def _tod_ms(value: object) -> int | None:
    """Time of day in ms from pynmea2's ``timestamp`` (a ``time``, or the raw text when invalid)."""
    if isinstance(value, time):
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1000 + value.microsecond // 1000
    if _text(value):
        raise _BadField(f"bad time of day: {value!r}")
    return None


def _coordinate(msg: pynmea2.NMEASentence) -> tuple[float, float] | None:
    """Signed degrees, or None when the sentence carries no position."""
    if not msg.lat and not msg.lon:
        return None
    if msg.lat_dir not in ("N", "S") or msg.lon_dir not in ("E", "W") or not msg.lat or not msg.lon:
        raise _BadField(f"incomplete position {msg.lat!r},{msg.lat_dir!r},{msg.lon!r},{msg.lon_dir!r}")
    lat, lon = float(msg.latitude), float(msg.longitude)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise _BadField(f"position out of range: {lat}, {lon}")
    return lat, lon


def sentence(body: str) -> str:
    """``$body*hh`` with CR LF, the checksum being the XOR of the body's bytes: how a receiver writes one."""
    checksum = 0
    for char in body.encode("ascii"):
        checksum ^= char
    return f"${body}*{checksum:02X}\r\n"


def parse_lines(lines: Iterable[bytes | str], parser: NmeaParser | None = None) -> Iterator[Fix]:
    """Every fix of a finite input such as a capture file, the epoch open at its end included.

    Pass your own ``parser`` to read its counters afterwards.
    """
    parser = parser if parser is not None else NmeaParser()
    for line in lines:
        yield from parser.feed(line)
    yield from parser.flush()


def _split(text: str) -> list[str]:
    """One piece per ``$``: receivers that drop a line end glue two sentences together."""
    head, *rest = text.split("$")
    return ([head] if head else []) + ["$" + body for body in rest]


class NmeaParser:
    """Feed it lines as they come; it returns the fixes they complete.

    Example::

        parser = NmeaParser()
        for line in capture:
            for fix in parser.feed(line):
                ...
        last = parser.flush()  # the epoch still open at the end of a file
    """

    def __init__(self) -> None:
        self.counters = NmeaCounters()
        self._date: date | None = None
        self._date_tod_ms: int | None = None
        self._closer: str | None = None
        self._epoch = _Epoch()
        self._handlers: dict[str, Callable[[pynmea2.TalkerSentence, int | None], None]] = {
            "RMC": self._rmc,
            "GGA": self._gga,
            "GNS": self._gns,
            "GLL": self._gll,
            "GSA": self._gsa,
            "VTG": self._vtg,
            "GSV": self._gsv,
            "ZDA": self._zda,
        }

    def feed(self, line: bytes | str) -> list[Fix]:
        """Parse one line (any line ending); return the fixes it completed, usually none or one."""
        self.counters.lines += 1
        text = line.decode("ascii", "replace") if isinstance(line, bytes) else line
        text = text.strip()
        if not text:
            self.counters.blank += 1
            return []
        if text.startswith("#"):
            self.counters.comments += 1
            return []
        fixes: list[Fix] = []
        for piece in _split(text):
            self._sentence(piece, fixes)
        return fixes

    def flush(self) -> list[Fix]:
        """Report the epoch still open when the input ends (a file); a live receiver never needs it."""
        fixes: list[Fix] = []
        self._report_unreported(fixes)
        return fixes

    def _sentence(self, piece: str, fixes: list[Fix]) -> None:
        if (
            not piece.startswith("$")
            or len(piece) > MAX_SENTENCE_CHARS
            or not (piece.isascii() and piece.isprintable())
        ):
            self.counters.garbage += 1
            return
        if piece.startswith("$P"):
            self.counters.proprietary += 1
            return
        if "*" not in piece:
            self.counters.no_checksum += 1
            return
        if _FRAME.fullmatch(piece) is None:
            self.counters.garbage += 1
            return
        try:
            msg = pynmea2.parse(piece, check=True)
        except pynmea2.ChecksumError:
            self.counters.bad_checksum += 1
            return
        except pynmea2.SentenceTypeError:
            self.counters.unknown_type += 1
            return
        except pynmea2.ParseError:
            self.counters.garbage += 1
            return
        if not isinstance(msg, pynmea2.TalkerSentence):
            self.counters.garbage += 1
            return
        self._apply(msg, fixes)

    def _apply(self, msg: pynmea2.TalkerSentence, fixes: list[Fix]) -> None:
        kind: str = msg.sentence_type
        handler = self._handlers.get(kind)
        try:
            tod_ms = _tod_ms(msg.timestamp) if kind in TIMED_TYPES else None
            if tod_ms is not None and tod_ms != self._epoch.tod_ms:
                self._start_epoch(tod_ms, fixes)
            if handler is not None:
                handler(msg, tod_ms)
        except (_BadField, ValueError, TypeError):
            self.counters.bad_fields += 1
            return
        self.counters.sentences += 1
        if tod_ms is None:
            return
        self._epoch.last_timed = kind
        if kind == self._closer and not self._epoch.reported:
            self._report(fixes)

    def _start_epoch(self, tod_ms: int, fixes: list[Fix]) -> None:
        self._report_unreported(fixes)
        if self._epoch.last_timed is not None:
            self._closer = self._epoch.last_timed
        date_tod_ms = self._date_tod_ms
        if self._date is not None and date_tod_ms is not None and tod_ms < date_tod_ms - MIDNIGHT_MARGIN_MS:
            # Past midnight before an RMC or ZDA has brought the new date (gpsd does the same).
            self._set_date(self._date + timedelta(days=1), tod_ms)
        self._epoch = _Epoch(tod_ms=tod_ms, carried_mode=self._epoch.mode)

    def _set_date(self, day: date, tod_ms: int | None) -> None:
        self._date, self._date_tod_ms = day, tod_ms

    def _report_unreported(self, fixes: list[Fix]) -> None:
        if not self._epoch.reported:
            self._report(fixes)

    def _report(self, fixes: list[Fix]) -> None:
        fix = self._current_fix()
        if fix is None:
            return
        self._epoch.reported = True
        self.counters.fixes += 1
        fixes.append(fix)

    def _current_fix(self) -> Fix | None:
        e = self._epoch
        if e.mode < 2 or e.lat is None or e.lon is None or e.tod_ms is None or self._date is None:
            return None
        satellites = e.gga_satellites if e.gga_satellites is not None else (e.gsa_used or None)
        return Fix(
            time_ms=(self._date.toordinal() - UNIX_EPOCH_ORDINAL) * MS_PER_DAY + e.tod_ms,
            lat=e.lat,
            lon=e.lon,
            mode=e.mode,
            speed_mps=e.speed_mps,
            heading_deg=e.heading_deg,
            altitude_m=e.altitude_m,
            hdop=e.gga_hdop if e.gga_hdop is not None else e.gsa_hdop,
            satellites=satellites,
        )

    # One handler per sentence type: parse every field first, then change the epoch,
    # so a bad field leaves the state untouched.

    def _rmc(self, msg: pynmea2.TalkerSentence, tod_ms: int | None) -> None:
        day = msg.datestamp
        if day is not None and not isinstance(day, date):
            raise _BadField(f"bad RMC date {day!r}")
        valid = msg.status == "A" and msg.mode_indicator != "N"
        position = _coordinate(msg) if valid else None
        speed_kn, course = _float(msg.spd_over_grnd), _float(msg.true_course)
        if position is None:
            return  # and ignore the date: MTK3301 and RGM-3800 send junk ones without a fix (gpsd)
        if day is not None:
            self._set_date(day, tod_ms)
        e = self._epoch
        e.lat, e.lon = position
        if speed_kn is not None:
            e.speed_mps = speed_kn * KNOTS_TO_MPS
        if course is not None:
            e.heading_deg = course

    def _gga(self, msg: pynmea2.TalkerSentence, tod_ms: int | None) -> None:
        self._solution(msg, valid=bool(_int(msg.gps_qual)), hdop=_float(msg.horizontal_dil))

    def _gns(self, msg: pynmea2.TalkerSentence, tod_ms: int | None) -> None:
        """GGA's NMEA 4 successor: one mode letter per constellation, N for no fix."""
        valid = any(c in "ADEFPR" for c in _text(msg.mode_indicator))
        self._solution(msg, valid=valid, hdop=_float(msg.hdop))

    def _solution(self, msg: pynmea2.TalkerSentence, *, valid: bool, hdop: float | None) -> None:
        """Position, altitude, satellites used and HDOP of a GGA or GNS."""
        position = _coordinate(msg) if valid else None
        altitude, satellites = _float(msg.altitude), _int(msg.num_sats)
        if position is None:
            return
        e = self._epoch
        e.lat, e.lon = position
        e.gga_hdop, e.gga_satellites = hdop, satellites
        e.altitude_m = altitude
        if altitude is None:
            e.gga_mode = 2  # old SiRF chips leave the altitude empty when they have no 3D solution
        elif satellites is None or satellites >= 4:
            e.gga_mode = 3
        else:
            # Three satellites cannot give a 3D solution: the receiver holds the altitude of its
            # last one, so the epoch keeps the previous epoch's dimension (gpsd does the same).
            e.gga_mode = 3 if e.carried_mode == 3 else 2

    def _gll(self, msg: pynmea2.TalkerSentence, tod_ms: int | None) -> None:
        valid = msg.status == "A" and msg.faa_mode != "N"
        position = _coordinate(msg) if valid else None
        if position is None:
            return
        e = self._epoch
        e.lat, e.lon = position

    def _gsa(self, msg: pynmea2.TalkerSentence, tod_ms: int | None) -> None:
        if len(msg.data) < 17:
            raise _BadField(f"GSA with {len(msg.data)} fields")
        mode = _int(msg.mode_fix_type)
        hdop = _float(msg.hdop)
        used = sum(1 for prn in msg.data[2:14] if prn)
        if mode not in (1, 2, 3):
            raise _BadField(f"GSA mode {mode!r}")
        e = self._epoch
        e.gsa_mode = mode
        e.gsa_hdop = hdop if hdop is not None else e.gsa_hdop
        e.gsa_used += used

    def _vtg(self, msg: pynmea2.TalkerSentence, tod_ms: int | None) -> None:
        course, speed_kn = _float(msg.true_track), _float(msg.spd_over_grnd_kts)
        if msg.faa_mode in ("N", "E") or speed_kn is None:
            return
        e = self._epoch
        e.speed_mps = speed_kn * KNOTS_TO_MPS
        if course is not None:
            e.heading_deg = course

    def _gsv(self, msg: pynmea2.TalkerSentence, tod_ms: int | None) -> None:
        """Satellites in view: nothing a Fix holds, only checked so a broken one is counted."""
        if _int(msg.num_messages) is None or _int(msg.msg_num) is None:
            raise _BadField("GSV without message numbers")

    def _zda(self, msg: pynmea2.TalkerSentence, tod_ms: int | None) -> None:
        """Date and time: supplies the date to GGA/GLL-only receivers; not part of epoch detection."""
        if msg.year is not None:
            self._set_date(msg.datestamp, _tod_ms(msg.timestamp))
