"""Position frames and batches: the records a device sends.

Units are SI and times are integer milliseconds since the Unix epoch (UTC).
Every range lives in the type, so a decoded frame is always in range.

Frames and batches are encoded as arrays (``array_like``), so the field order
is the wire contract. Evolution rules (as msgspec's schema-evolution guide):

* a new field is only ever appended, after every existing one, with a default;
* no field is removed, reordered or has its type narrowed;
* decoders ignore trailing fields they do not know, so an older server reads a
  newer agent's frames, and a newer server reads an older agent's frames.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from fleet_schemas.topics import IDENTIFIER_PATTERN

EARLIEST_FIX_MS = 946_684_800_000
"""2000-01-01T00:00:00Z: older fix times are GPS week-rollover or unset clocks."""
LATEST_FIX_MS = 4_102_444_800_000
"""2100-01-01T00:00:00Z: the upper bound of a representable fix time."""

Identifier = Annotated[str, msgspec.Meta(pattern=IDENTIFIER_PATTERN, description="operator-chosen id")]
Sequence = Annotated[
    int,
    msgspec.Meta(ge=0, le=2**63 - 1, description="per-device counter; never reused, survives restarts"),
]
FixTimeMs = Annotated[
    int,
    msgspec.Meta(ge=EARLIEST_FIX_MS, le=LATEST_FIX_MS, description="GNSS fix time, ms since epoch, UTC"),
]
Latitude = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0, description="WGS84 latitude, degrees")]
Longitude = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0, description="WGS84 longitude, degrees")]
AccuracyM = Annotated[
    float, msgspec.Meta(ge=0.0, le=100_000.0, description="horizontal accuracy (1 sigma), m")
]
SpeedMps = Annotated[float, msgspec.Meta(ge=0.0, le=150.0, description="ground speed, m/s")]
HeadingDeg = Annotated[
    float, msgspec.Meta(ge=0.0, lt=360.0, description="course over ground, degrees from true north")
]
AltitudeM = Annotated[
    float, msgspec.Meta(ge=-1_000.0, le=20_000.0, description="altitude above mean sea level, m")
]
Satellites = Annotated[int, msgspec.Meta(ge=0, le=255, description="satellites used in the fix")]
Hdop = Annotated[float, msgspec.Meta(ge=0.0, le=100.0, description="horizontal dilution of precision")]
Passengers = Annotated[int, msgspec.Meta(ge=0, le=1_000, description="passengers on board")]
FuelPct = Annotated[float, msgspec.Meta(ge=0.0, le=100.0, description="fuel level, percent of tank")]
BatteryPct = Annotated[
    float, msgspec.Meta(ge=0.0, le=100.0, description="the device's battery level, percent (phones)")
]
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*\Z"
"""Free text on the wire: any Unicode but control characters. PostgreSQL text cannot hold NUL, and
no id or name needs a newline or escape; lone surrogates never decode (msgpack strings are UTF-8,
msgspec's JSON decoder refuses them), so whatever passes can be stored."""
TripId = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=128, pattern=TEXT_PATTERN, description="GTFS trip_id as imported"),
]
Source = Literal["gps", "phone", "sim"]


class Frame(msgspec.Struct, array_like=True, frozen=True, kw_only=True):
    """One position fix of one bus, as the device measured it.

    ``(device, seq)`` identifies a frame: a repeated sequence number is a
    duplicate (QoS 1 and agent retries make those normal).
    """

    device: Identifier
    bus: Identifier
    seq: Sequence
    time_ms: FixTimeMs
    lat: Latitude
    lon: Longitude
    accuracy_m: AccuracyM | None = None
    speed_mps: SpeedMps | None = None
    heading_deg: HeadingDeg | None = None
    altitude_m: AltitudeM | None = None
    satellites: Satellites | None = None
    hdop: Hdop | None = None
    ignition: bool | None = None
    door_open: bool | None = None
    passengers: Passengers | None = None
    fuel_pct: FuelPct | None = None
    trip_id: TripId | None = None
    source: Source = "gps"
    battery_pct: BatteryPct | None = None
    charging: bool | None = None
    """whether the device's battery is charging (a phone on the dashboard's charger)"""


class Batch(msgspec.Struct, array_like=True, frozen=True):
    """1..MAX_FRAMES_PER_BATCH frames of one device: the signed payload."""

    device: Identifier
    frames: list[Frame]
