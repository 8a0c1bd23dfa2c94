"""The problem report: notices named and graded as MobilityData's gtfs-validator does.

Operators already know the validator's codes and severities (its
``RULES.md``), so the report uses them, with the validator's sample field
names (``filename``, ``csvRowNumber``, ``tripId``…). Each code is counted and
keeps its first few samples, so a feed with thousands of the same problem
stays a short report.
"""

from __future__ import annotations

from fleet_schemas.gtfs import Notice, Severity

SAMPLES_KEPT = 5

SEVERITIES: dict[str, Severity] = {
    "missing_required_file": "ERROR",
    "missing_calendar_and_calendar_date_files": "ERROR",
    "missing_required_column": "ERROR",
    "missing_required_field": "ERROR",
    "csv_parsing_failed": "ERROR",
    "duplicate_key": "ERROR",
    "foreign_key_violation": "ERROR",
    "invalid_integer": "ERROR",
    "invalid_float": "ERROR",
    "invalid_date": "ERROR",
    "invalid_time": "ERROR",
    "number_out_of_range": "ERROR",
    "stop_time_with_arrival_before_previous_departure_time": "ERROR",
    "stop_time_with_only_arrival_or_departure_time": "ERROR",
    "stop_time_with_departure_before_arrival_time": "ERROR",
    "stop_time_timepoint_without_times": "ERROR",
    "start_and_end_range_out_of_order": "ERROR",
    "invalid_timezone": "ERROR",
    "location_with_unexpected_stop_time": "ERROR",
    "missing_trip_edge": "ERROR",
    "decreasing_or_equal_stop_time_distance": "ERROR",
    "decreasing_shape_distance": "ERROR",
    "block_trips_with_overlapping_stop_times": "ERROR",
    "overlapping_frequency": "ERROR",
    "stop_too_far_from_shape": "WARNING",
    "fast_travel_between_consecutive_stops": "WARNING",
    "expired_calendar": "WARNING",
    "unusable_trip": "WARNING",
    "empty_row": "WARNING",
    "empty_file": "ERROR",
    "single_shape_point": "WARNING",
    "invalid_characters": "WARNING",
}
"""every code the importer emits, with gtfs-validator's severity"""

_ORDER = {"ERROR": 0, "WARNING": 1, "INFO": 2}

Sample = dict[str, str | int | float | None]


class Notices:
    """Collects notices while a feed is read: a count and the first few samples per code."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._samples: dict[str, list[Sample]] = {}

    def add(self, code: str, **sample: str | int | float | None) -> None:
        """Record one occurrence; ``code`` must be one of SEVERITIES (KeyError otherwise)."""
        if code not in SEVERITIES:
            raise KeyError(f"{code!r} is not a notice code the importer knows")
        self._counts[code] = self._counts.get(code, 0) + 1
        kept = self._samples.setdefault(code, [])
        if len(kept) < SAMPLES_KEPT:
            kept.append(sample)

    def count(self, code: str) -> int:
        return self._counts.get(code, 0)

    @property
    def has_errors(self) -> bool:
        return any(SEVERITIES[code] == "ERROR" for code in self._counts)

    def notices(self) -> list[Notice]:
        """Errors first, then warnings, each group by code."""
        codes = sorted(self._counts, key=lambda code: (_ORDER[SEVERITIES[code]], code))
        return [
            Notice(
                code=code, severity=SEVERITIES[code], count=self._counts[code], samples=self._samples[code]
            )
            for code in codes
        ]
