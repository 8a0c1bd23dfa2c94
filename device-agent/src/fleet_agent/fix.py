"""A GNSS fix as every source produces it, before sampling and signing.

Sources (NMEA, gpsd, simulator) turn what they read into ``Fix`` values; the
agent decides which fixes become frames. Units are SI; ``mode`` follows gpsd
(0 unknown, 1 no fix, 2 2D, 3 3D). Sources never yield a fix with mode < 2.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Literal, Protocol

import msgspec

Source = Literal["gps", "phone", "sim"]


class Fix(msgspec.Struct, frozen=True, kw_only=True):
    """One position solution from a receiver."""

    time_ms: int
    lat: float
    lon: float
    mode: int
    speed_mps: float | None = None
    heading_deg: float | None = None
    altitude_m: float | None = None
    hdop: float | None = None
    satellites: int | None = None
    accuracy_m: float | None = None
    ignition: bool | None = None
    trip_id: str | None = None
    """the GTFS trip the driver declared (a driver's console, or a simulated bus told to send it)"""
    source: Source = "gps"

    @property
    def time_iso(self) -> str:
        """Fix time as ISO 8601 UTC with milliseconds, as gpsd prints it."""
        moment = datetime.fromtimestamp(self.time_ms / 1000, tz=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.time_ms % 1000:03d}Z"


class FixSource(Protocol):
    """Anything that yields fixes; it ends when its input ends (a file) or never (a receiver)."""

    def fixes(self) -> AsyncIterator[Fix]: ...
