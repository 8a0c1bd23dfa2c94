"""Fix source for gpsd's JSON socket, for units where gpsd already owns the receiver.

gpsd sends one JSON report per line once watched. TPV reports carry the
position; SKY reports carry the DOPs and the satellites, so the latest SKY's
HDOP and count of satellites used are merged into the fixes that follow it.
Other classes (VERSION, DEVICES, WATCH, GST, ...) are skipped. Each TPV with a
fix and a time becomes a ``Fix``, as gpsd reported it: gpsd may send more than
one for the same time while it learns the receiver's cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from fleet_agent.fix import Fix
from fleet_schemas.backoff import Backoff

log = logging.getLogger("fleet_agent.gpsd")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2947
WATCH = b'?WATCH={"enable":true,"json":true}\n'
MAX_REPORT_BYTES = 1 << 20
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class GpsdCounters:
    """What came from gpsd, one counter per kind of line."""

    connects: int = 0
    fixes: int = 0
    no_fix: int = 0
    """TPV reports without a fix (mode < 2) or without a time or position."""
    sky: int = 0
    skipped: int = 0
    """Reports of other classes."""
    bad_json: int = 0
    """Lines that are not JSON, or a TPV/SKY whose fields have the wrong type."""


class _Class(msgspec.Struct):
    name: str = msgspec.field(name="class", default="")


class _Tpv(msgspec.Struct):
    mode: int = 0
    time: str | None = None
    lat: float | None = None
    lon: float | None = None
    alt_msl: float | None = msgspec.field(name="altMSL", default=None)
    alt: float | None = None
    """Altitude MSL in gpsd before 3.20, kept as an alias since."""
    speed: float | None = None
    track: float | None = None


class _Satellite(msgspec.Struct):
    used: bool = False


class _Sky(msgspec.Struct):
    hdop: float | None = None
    satellites: list[_Satellite] | None = None


_CLASS = msgspec.json.Decoder(_Class)
_TPV = msgspec.json.Decoder(_Tpv)
_SKY = msgspec.json.Decoder(_Sky)


def _time_ms(iso: str) -> int:
    return (datetime.fromisoformat(iso) - _UNIX_EPOCH) // timedelta(milliseconds=1)


class GpsdSource:
    """Fixes from gpsd at ``host:port``; reconnects with a backoff whenever the connection drops.

    The source never ends on its own: a restarted gpsd is picked up again, each
    failure logged once, retried after a full-jitter delay whose ceiling doubles from
    ``retry_s`` up to ``max_retry_s`` (:mod:`fleet_schemas.backoff`).

    Example::

        async for fix in GpsdSource().fixes():
            ...
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        retry_s: float = 0.5,
        max_retry_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.counters = GpsdCounters()
        self._hdop: float | None = None
        self._satellites: int | None = None

    async def fixes(self) -> AsyncGenerator[Fix, None]:
        backoff = Backoff(self.retry_s, self.max_retry_s)
        where = {"host": self.host, "port": self.port}
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_REPORT_BYTES)
            except OSError as exc:
                retry = backoff.next_delay()
                log.warning(
                    "cannot reach gpsd", extra={**where, "error": str(exc), "retry_in_s": round(retry, 2)}
                )
                await asyncio.sleep(retry)
                continue
            self.counters.connects += 1
            self._hdop = self._satellites = None
            log.info("connected to gpsd", extra=where)
            try:
                writer.write(WATCH)
                await writer.drain()
                while line := await reader.readline():
                    fix = self.read_report(line)
                    if fix is not None:
                        backoff.reset()
                        yield fix
                retry = backoff.next_delay()
                log.warning("gpsd closed the connection", extra={**where, "retry_in_s": round(retry, 2)})
            except (OSError, ValueError) as exc:  # ValueError: a line longer than MAX_REPORT_BYTES
                retry = backoff.next_delay()
                log.warning("lost gpsd", extra={**where, "error": str(exc), "retry_in_s": round(retry, 2)})
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            await asyncio.sleep(retry)

    def read_report(self, line: bytes) -> Fix | None:
        """Take in one line from gpsd; return the fix it carries, if any."""
        try:
            kind = _CLASS.decode(line).name
            if kind == "TPV":
                return self._tpv(_TPV.decode(line))
            if kind == "SKY":
                self._sky(_SKY.decode(line))
            else:
                self.counters.skipped += 1
        except (msgspec.DecodeError, ValueError):
            self.counters.bad_json += 1
        return None

    def _tpv(self, tpv: _Tpv) -> Fix | None:
        if tpv.mode < 2 or tpv.time is None or tpv.lat is None or tpv.lon is None:
            self.counters.no_fix += 1
            return None
        fix = Fix(
            time_ms=_time_ms(tpv.time),
            lat=tpv.lat,
            lon=tpv.lon,
            mode=tpv.mode,
            speed_mps=tpv.speed,
            heading_deg=tpv.track,
            altitude_m=tpv.alt_msl if tpv.alt_msl is not None else tpv.alt,
            hdop=self._hdop,
            satellites=self._satellites,
        )
        self.counters.fixes += 1
        return fix

    def _sky(self, sky: _Sky) -> None:
        self.counters.sky += 1
        if sky.hdop is not None:
            self._hdop = sky.hdop
        if sky.satellites is not None:
            self._satellites = sum(satellite.used for satellite in sky.satellites)
