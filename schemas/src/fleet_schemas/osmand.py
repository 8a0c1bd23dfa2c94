"""The OsmAnd protocol, as Traccar Client and OsmAnd send it, decoded into SI frames.

Read from Traccar's ``OsmAndProtocolDecoder`` and the apps' sources (Traccar
Client Android ``ProtocolFormatter``, the Flutter Traccar Client's location
template, OsmAnd's ``LiveMonitoringHelper``); written here because no library
decodes it and its units differ by app:

* **query or form parameters** (GET, or POST with the parameters in the URL
  or a form body): ``id``/``deviceid``, ``lat``, ``lon`` (or
  ``location=lat,lon``), ``timestamp`` (epoch seconds, epoch milliseconds
  when ≥ 2**31 - 1 as Traccar tells them apart, ISO 8601, or
  ``yyyy-MM-dd HH:mm:ss``, read as UTC), ``speed`` in **knots** (what the
  protocol defines and Traccar Client sends), ``speed_mps`` in m/s (fleet's
  name for what OsmAnd's ``{5}`` gives), ``bearing``/``heading`` in degrees,
  ``altitude`` m, ``accuracy`` m, ``hdop``, ``batt`` percent, ``charge``
  true/false. Other parameters (``cell``, ``wifi``, ``alarm``, ``mock``,
  ``valid``, ...) are read by Traccar into attributes fleet has no column for;
  they are ignored.
* **the JSON body** newer Traccar Client versions POST (its background
  geolocation plugin): ``{"device_id": ..., "location": {"timestamp": ISO,
  "coords": {"latitude", "longitude", "accuracy", "speed" (m/s), "heading",
  "altitude"}, "battery": {"level" 0..1, "is_charging"}, ...}}``, with
  ``location`` a list when the app sends a batch; -1 means unknown for speed,
  heading, accuracy and battery level.

Every value is checked against the frame's ranges; a bad one raises
:class:`InvalidFieldError` or :class:`OutOfRangeError` naming the parameter as
the app sent it. The apps send no sequence number, so a fix's is its fix time
in milliseconds: a request the app retries is the same frames again, stored
once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import msgspec

from fleet_schemas.errors import InvalidFieldError, OutOfRangeError, UndecodableError
from fleet_schemas.frames import (
    AccuracyM,
    AltitudeM,
    BatteryPct,
    FixTimeMs,
    Frame,
    Hdop,
    HeadingDeg,
    Latitude,
    Longitude,
    SpeedMps,
)

KNOT_MPS = 1852.0 / 3600.0
"""one knot in m/s"""
SECONDS_BELOW = 2**31 - 1
"""an integer timestamp under this is in seconds, from it in milliseconds (Traccar's rule)"""
MAX_FIXES = 1_000
"""fixes in one JSON body at most (the app's batch)"""
MAX_VALUE_CHARS = 64


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_LOCAL_TIME = "%Y-%m-%d %H:%M:%S"
_RANGE_MESSAGE = re.compile(r"(?:>=|<=|>|<) ")
_AT_FIELD = re.compile(r" - at `\$\.(\w+)`")
_AT_PATH = re.compile(r" - at `\$\.([^`]+)`")


class PhoneFix(msgspec.Struct, frozen=True, kw_only=True):
    """One fix as a phone reported it, in SI units; ranges as the frame's."""

    time_ms: FixTimeMs
    lat: Latitude
    lon: Longitude
    accuracy_m: AccuracyM | None = None
    speed_mps: SpeedMps | None = None
    heading_deg: HeadingDeg | None = None
    altitude_m: AltitudeM | None = None
    hdop: Hdop | None = None
    battery_pct: BatteryPct | None = None
    charging: bool | None = None


class PhoneReport(msgspec.Struct, frozen=True):
    """What one request carried: the device identifier it named (the credential), and its fixes."""

    device_id: str | None
    fixes: list[PhoneFix]


# ---------------------------------------------------------------- query and form parameters

_QUERY_FIELDS = {
    "lat": "lat",
    "lon": "lon",
    "speed": "speed_mps",
    "speed_mps": "speed_mps",
    "bearing": "heading_deg",
    "heading": "heading_deg",
    "altitude": "altitude_m",
    "accuracy": "accuracy_m",
    "hdop": "hdop",
    "batt": "battery_pct",
}


def decode_query(params: Iterable[tuple[str, str]]) -> PhoneReport:
    """Decode OsmAnd query or form parameters (in the order sent; a repeated one: the last wins)."""
    values: dict[str, object] = {}
    names: dict[str, str] = {}
    device_id: str | None = None
    for name, raw in params:
        if name in ("id", "deviceid"):
            device_id = raw
            continue
        if name == "timestamp":
            values["time_ms"], names["time_ms"] = _timestamp(raw, name), name
        elif name == "location":
            lat, sep, lon = raw.partition(",")
            if not sep:
                raise InvalidFieldError(f"location: expected 'lat,lon', got {_shown(raw)}")
            values["lat"], values["lon"] = _number(lat, name), _number(lon, name)
            names["lat"] = names["lon"] = name
        elif name == "charge":
            values["charging"], names["charging"] = _boolean(raw, name), name
        elif name in _QUERY_FIELDS:
            field = _QUERY_FIELDS[name]
            number = _number(raw, name)
            values[field] = number * KNOT_MPS if name == "speed" else number
            names[field] = name
    for field, name in (("lat", "lat"), ("lon", "lon"), ("time_ms", "timestamp")):
        if field not in values:
            raise InvalidFieldError(f"{name}: required")
    if values.get("heading_deg") == 360.0:
        values["heading_deg"] = 0.0
    return PhoneReport(device_id=device_id, fixes=[_fix(values, names)])


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= MAX_VALUE_CHARS else raw[:MAX_VALUE_CHARS] + "...")


def _number(raw: str, name: str) -> float:
    text = raw.strip()
    if len(text) > MAX_VALUE_CHARS or not _NUMBER.fullmatch(text):
        raise InvalidFieldError(f"{name}: expected a number, got {_shown(raw)}")
    return float(text)


def _boolean(raw: str, name: str) -> bool:
    text = raw.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise InvalidFieldError(f"{name}: expected true or false, got {_shown(raw)}")


def _timestamp(raw: str, name: str) -> int:
    """Epoch seconds or milliseconds, ISO 8601, or ``yyyy-MM-dd HH:mm:ss`` (UTC) -> epoch ms."""
    text = raw.strip()
    if len(text) > MAX_VALUE_CHARS:
        raise InvalidFieldError(f"{name}: expected a time, got {_shown(raw)}")
    if _INTEGER.fullmatch(text):
        number = int(text)
        return number * 1000 if number < SECONDS_BELOW else number
    try:
        moment = datetime.fromisoformat(text) if "T" in text else datetime.strptime(text, _LOCAL_TIME)
    except ValueError:
        raise InvalidFieldError(
            f"{name}: expected epoch seconds or milliseconds, ISO 8601 or 'yyyy-MM-dd HH:mm:ss',"
            f" got {_shown(raw)}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def _fix(values: dict[str, object], names: dict[str, str]) -> PhoneFix:
    """Check the values against the ranges; an error names the parameter the app sent."""
    try:
        return msgspec.convert(values, PhoneFix)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = _AT_FIELD.search(text)
        field = at.group(1) if at else ""
        message = f"{names.get(field, field)}: {text[: at.start()] if at else text}"
        if field == "speed_mps" and names.get(field) == "speed":
            message += " (m/s; the app sent knots)"
        if _RANGE_MESSAGE.search(text):
            raise OutOfRangeError(message) from None
        raise InvalidFieldError(message) from None


# ---------------------------------------------------------------- the JSON body


class _Coords(msgspec.Struct, frozen=True):
    latitude: float
    longitude: float
    accuracy: float | None = None
    speed: float | None = None
    heading: float | None = None
    altitude: float | None = None


class _Battery(msgspec.Struct, frozen=True):
    level: float | None = None
    is_charging: bool | None = None


class _Location(msgspec.Struct, frozen=True):
    timestamp: str
    coords: _Coords
    battery: _Battery | None = None


class _Body(msgspec.Struct, frozen=True):
    location: _Location | list[_Location]
    device_id: str | None = None


_BODY = msgspec.json.Decoder(_Body)
_DECODE_ERRORS = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)


def decode_json(body: bytes) -> PhoneReport:
    """Decode the JSON body of Traccar Client (one location, or a list of them)."""
    try:
        decoded = _BODY.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        path = _AT_PATH.search(text)
        raise InvalidFieldError(f"{path.group(1)}: {text[: path.start()]}" if path else text) from None
    except _DECODE_ERRORS as exc:
        reason = "nested too deeply to decode" if isinstance(exc, RecursionError) else str(exc)
        raise UndecodableError(f"body: {reason}") from None
    locations = decoded.location if isinstance(decoded.location, list) else [decoded.location]
    if not 1 <= len(locations) <= MAX_FIXES:
        raise InvalidFieldError(f"location: {len(locations)} locations, allowed 1..{MAX_FIXES}")
    fixes = []
    for index, location in enumerate(locations):
        where = "location" if len(locations) == 1 else f"location[{index}]"
        fixes.append(_json_fix(location, where))
    return PhoneReport(device_id=decoded.device_id, fixes=fixes)


def _known(value: float | None) -> float | None:
    """The plugin's -1 (any negative) means unknown."""
    return None if value is None or value < 0 else value


def _json_fix(location: _Location, where: str) -> PhoneFix:
    coords = location.coords
    values: dict[str, object] = {
        "time_ms": _timestamp(location.timestamp, f"{where}.timestamp"),
        "lat": coords.latitude,
        "lon": coords.longitude,
        "accuracy_m": _known(coords.accuracy),
        "speed_mps": _known(coords.speed),
        "heading_deg": _known(coords.heading),
        "altitude_m": coords.altitude,
    }
    if values["heading_deg"] == 360.0:
        values["heading_deg"] = 0.0
    names = {
        "time_ms": f"{where}.timestamp",
        "lat": f"{where}.coords.latitude",
        "lon": f"{where}.coords.longitude",
        "accuracy_m": f"{where}.coords.accuracy",
        "speed_mps": f"{where}.coords.speed",
        "heading_deg": f"{where}.coords.heading",
        "altitude_m": f"{where}.coords.altitude",
        "battery_pct": f"{where}.battery.level",
    }
    if location.battery is not None:
        level = _known(location.battery.level)
        values["battery_pct"] = None if level is None else level * 100
        values["charging"] = location.battery.is_charging
    return _fix(values, names)


# ---------------------------------------------------------------- frames


def to_frames(fixes: Sequence[PhoneFix], device: str, bus: str) -> list[Frame]:
    """The frames of a phone's fixes: sequence = fix time in ms (stable across the app's retries)."""
    return [
        Frame(
            device=device,
            bus=bus,
            seq=fix.time_ms,
            time_ms=fix.time_ms,
            lat=fix.lat,
            lon=fix.lon,
            accuracy_m=fix.accuracy_m,
            speed_mps=fix.speed_mps,
            heading_deg=fix.heading_deg,
            altitude_m=fix.altitude_m,
            hdop=fix.hdop,
            source="phone",
            battery_pct=fix.battery_pct,
            charging=fix.charging,
        )
        for fix in fixes
    ]
