"""The feed's CSV files read into typed rows: what each file holds and which of its rows are usable.

stdlib ``csv`` does the quoting; each row becomes a msgspec Struct through
``msgspec.convert(..., strict=False)`` (lax: "12" is an int, "5.6" a float),
which checks types and ranges and names the field of every failure. Columns
are found by header name, in any order; unknown columns are ignored, values
are stripped of surrounding whitespace, an empty value is an absent one.
A row that fails is dropped with a notice; the rest of the file is kept.
"""

from __future__ import annotations

import csv
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TextIO, TypeVar

import msgspec

from fleet_processing.gtfs.notices import Notices

OpenFile = Callable[[str], TextIO | None]
"""a feed's file by name (``stops.txt``), None when the feed has none"""
Progress = Callable[[str, int], None]
"""called with a file name (or a step of the import) and the rows done so far"""

PROGRESS_EVERY = 50_000

Lat = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Lon = Annotated[float, msgspec.Meta(ge=-180, le=180)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Distance = Annotated[float, msgspec.Meta(ge=0)]
Flag = Annotated[int, msgspec.Meta(ge=0, le=1)]
Boarding = Annotated[int, msgspec.Meta(ge=0, le=3)]


class AgencyRow(msgspec.Struct, kw_only=True):
    agency_name: str
    agency_url: str
    agency_timezone: str
    agency_id: str | None = None
    agency_lang: str | None = None
    agency_phone: str | None = None


class StopRow(msgspec.Struct, kw_only=True):
    stop_id: str
    stop_lat: Lat
    stop_lon: Lon
    stop_name: str | None = None
    stop_code: str | None = None
    location_type: Annotated[int, msgspec.Meta(ge=0, le=4)] = 0
    parent_station: str | None = None
    stop_timezone: str | None = None


class RouteRow(msgspec.Struct, kw_only=True):
    route_id: str
    route_type: NonNegative
    agency_id: str | None = None
    route_short_name: str | None = None
    route_long_name: str | None = None
    route_color: str | None = None
    route_text_color: str | None = None


class TripRow(msgspec.Struct, kw_only=True):
    route_id: str
    service_id: str
    trip_id: str
    shape_id: str | None = None
    direction_id: Flag | None = None
    block_id: str | None = None
    trip_headsign: str | None = None


class StopTimeRow(msgspec.Struct, kw_only=True):
    trip_id: str
    stop_id: str
    stop_sequence: NonNegative
    arrival_time: str | None = None
    departure_time: str | None = None
    shape_dist_traveled: Distance | None = None
    timepoint: Flag | None = None
    pickup_type: Boarding = 0
    drop_off_type: Boarding = 0


class CalendarRow(msgspec.Struct, kw_only=True):
    service_id: str
    monday: Flag
    tuesday: Flag
    wednesday: Flag
    thursday: Flag
    friday: Flag
    saturday: Flag
    sunday: Flag
    start_date: str
    end_date: str


class CalendarDateRow(msgspec.Struct, kw_only=True):
    service_id: str
    date: str
    exception_type: Annotated[int, msgspec.Meta(ge=1, le=2)]


class ShapeRow(msgspec.Struct, kw_only=True):
    shape_id: str
    shape_pt_lat: Lat
    shape_pt_lon: Lon
    shape_pt_sequence: NonNegative
    shape_dist_traveled: Distance | None = None


class FrequencyRow(msgspec.Struct, kw_only=True):
    trip_id: str
    start_time: str
    end_time: str
    headway_secs: Annotated[int, msgspec.Meta(gt=0)]
    exact_times: Flag = 0


R = TypeVar("R", bound=msgspec.Struct)


@dataclass(frozen=True)
class Spec(Generic[R]):
    """One GTFS file: its row type and primary key (rows repeating a key are dropped)."""

    filename: str
    row_type: type[R]
    key: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(field.name for field in msgspec.structs.fields(self.row_type))

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(field.name for field in msgspec.structs.fields(self.row_type) if field.required)


AGENCY = Spec("agency.txt", AgencyRow, ("agency_id",))
STOPS = Spec("stops.txt", StopRow, ("stop_id",))
ROUTES = Spec("routes.txt", RouteRow, ("route_id",))
TRIPS = Spec("trips.txt", TripRow, ("trip_id",))
STOP_TIMES = Spec("stop_times.txt", StopTimeRow, ("trip_id", "stop_sequence"))
CALENDAR = Spec("calendar.txt", CalendarRow, ("service_id",))
CALENDAR_DATES = Spec("calendar_dates.txt", CalendarDateRow, ("service_id", "date"))
SHAPES = Spec("shapes.txt", ShapeRow, ("shape_id", "shape_pt_sequence"))
FREQUENCIES = Spec("frequencies.txt", FrequencyRow, ("trip_id", "start_time"))
FILES: tuple[Spec[Any], ...] = (
    AGENCY,
    STOPS,
    ROUTES,
    TRIPS,
    STOP_TIMES,
    CALENDAR,
    CALENDAR_DATES,
    SHAPES,
    FREQUENCIES,
)
"""every file the importer reads, in the order it reads and reports them"""
FILE_NAMES = tuple(spec.filename for spec in FILES)


@dataclass(frozen=True)
class Table(Generic[R]):
    """The usable rows of one file, each with its ``csvRowNumber`` (the header is row 1)."""

    present: bool
    read: int
    rows: list[tuple[int, R]]


_FIELD = re.compile(r"`\$\.(\w+)`")
_MISSING = re.compile(r"missing required field `(\w+)`")


def read_table(
    open_file: OpenFile, spec: Spec[R], notices: Notices, progress: Progress | None = None
) -> Table[R]:
    """Every usable row of ``spec``'s file; ``present`` is False when the feed has no such file."""
    stream = open_file(spec.filename)
    if stream is None:
        return Table(present=False, read=0, rows=[])
    with stream:
        reader = csv.reader(stream)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            notices.add("csv_parsing_failed", filename=spec.filename, csvRowNumber=1, message=str(exc))
            return Table(present=True, read=0, rows=[])
        if header is None:
            notices.add("empty_file", filename=spec.filename)
            return Table(present=True, read=0, rows=[])
        names = [name.strip().lstrip("\ufeff") for name in header]
        """a byte-order mark survives when the file was opened as plain utf-8"""
        absent = [name for name in spec.required if name not in names]
        for name in absent:
            notices.add("missing_required_column", filename=spec.filename, fieldName=name)
        wanted = set(spec.columns)
        known = [(index, name) for index, name in enumerate(names) if name in wanted]
        known_names = [name for _, name in known]
        width = max((index for index, _ in known), default=-1) + 1
        pick = operator.itemgetter(*(index for index, _ in known)) if len(known) > 1 else None
        records: list[tuple[int, dict[str, str]]] = []
        number = 1
        try:
            for number, raw in enumerate(reader, start=2):
                if pick is not None and len(raw) >= width:
                    values: Sequence[str] = pick(raw)
                else:
                    values = [raw[i] if i < len(raw) else "" for i, _ in known]
                record = {
                    name: text
                    for name, value in zip(known_names, values, strict=True)
                    if (text := value.strip())
                }
                if not record and not any(value.strip() for value in raw):
                    notices.add("empty_row", filename=spec.filename, csvRowNumber=number)
                    continue
                if any("\x00" in text for text in record.values()):
                    record = _without_nul(spec, number, record, notices)
                records.append((number, record))
                if progress is not None and len(records) % PROGRESS_EVERY == 0:
                    progress(spec.filename, len(records))
        except (csv.Error, UnicodeDecodeError) as exc:
            notices.add(
                "csv_parsing_failed", filename=spec.filename, csvRowNumber=number + 1, message=str(exc)
            )
    if progress is not None:
        progress(spec.filename, len(records))
    if absent:
        return Table(present=True, read=len(records), rows=[])
    rows = _convert(spec, records, notices)
    return Table(present=True, read=len(records), rows=_unique(spec, rows, notices))


def _without_nul(spec: Spec[R], number: int, record: dict[str, str], notices: Notices) -> dict[str, str]:
    """The record with NUL characters taken out (PostgreSQL text cannot hold them), each one reported."""
    cleaned = {}
    for name, text in record.items():
        if "\x00" in text:
            text = text.replace("\x00", "").strip()
            notices.add(
                "invalid_characters",
                filename=spec.filename,
                csvRowNumber=number,
                fieldName=name,
                fieldValue=text,
            )
        if text:
            cleaned[name] = text
    return cleaned


def _convert(
    spec: Spec[R], records: list[tuple[int, dict[str, str]]], notices: Notices
) -> list[tuple[int, R]]:
    """All rows at once when all are valid (the usual case, and much faster), else row by row."""
    try:
        converted = msgspec.convert([record for _, record in records], list[spec.row_type], strict=False)  # type: ignore[name-defined]
        return [(number, row) for (number, _), row in zip(records, converted, strict=True)]
    except msgspec.ValidationError:
        pass
    rows: list[tuple[int, R]] = []
    for number, record in records:
        try:
            rows.append((number, msgspec.convert(record, spec.row_type, strict=False)))
        except msgspec.ValidationError as exc:
            _report(spec, number, record, str(exc), notices)
    return rows


def _report(spec: Spec[R], number: int, record: dict[str, str], message: str, notices: Notices) -> None:
    missing = _MISSING.search(message)
    if missing is not None:
        notices.add(
            "missing_required_field", filename=spec.filename, csvRowNumber=number, fieldName=missing[1]
        )
        return
    field = _FIELD.search(message)
    name = field[1] if field is not None else ""
    value = record.get(name)
    if "got `str`" in message:
        kind = next(f.type for f in msgspec.structs.fields(spec.row_type) if f.name == name)
        code = "invalid_float" if "float" in repr(kind) else "invalid_integer"
    else:
        code = "number_out_of_range"
    notices.add(code, filename=spec.filename, csvRowNumber=number, fieldName=name, fieldValue=value)


def _unique(spec: Spec[R], rows: list[tuple[int, R]], notices: Notices) -> list[tuple[int, R]]:
    key_of = operator.attrgetter(*spec.key)
    keys = [key_of(row) for _, row in rows]
    if len(set(keys)) == len(keys):
        return rows
    seen: dict[tuple[object, ...], int] = {}
    kept: list[tuple[int, R]] = []
    for (number, row), found in zip(rows, keys, strict=True):
        key = found if len(spec.key) > 1 else (found,)
        first = seen.setdefault(key, number)
        if first != number:
            sample: dict[str, str | int | float | None] = {
                "filename": spec.filename,
                "oldCsvRowNumber": first,
                "newCsvRowNumber": number,
            }
            for i, (name, value) in enumerate(zip(spec.key, key, strict=True), start=1):
                sample[f"fieldName{i}"] = name
                sample[f"fieldValue{i}"] = (
                    value if isinstance(value, str | int) or value is None else str(value)
                )
            notices.add("duplicate_key", **sample)
            continue
        kept.append((number, row))
    return kept
