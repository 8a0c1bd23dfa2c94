"""GTFS times: H:MM:SS from the service day's origin, past 24:00:00 included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_schemas.gtfs import MAX_HOURS, format_time, parse_time


@given(st.integers(min_value=0, max_value=MAX_HOURS * 3600 + 3599))
def test_every_valid_time_round_trips_through_its_text(seconds: int) -> None:
    assert parse_time(format_time(seconds)) == seconds


@given(st.integers(0, MAX_HOURS), st.integers(0, 59), st.integers(0, 59), st.booleans())
def test_written_times_parse_to_their_seconds_with_or_without_a_leading_zero(
    hours: int, minutes: int, seconds: int, padded: bool
) -> None:
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}" if padded else f"{hours}:{minutes:02d}:{seconds:02d}"
    assert parse_time(text) == hours * 3600 + minutes * 60 + seconds
    assert format_time(parse_time(text)) == f"{hours:02d}:{minutes:02d}:{seconds:02d}"


def test_a_time_past_midnight_counts_on_from_the_same_service_day() -> None:
    assert parse_time("25:35:00") == 92_100
    assert format_time(92_100) == "25:35:00"


@pytest.mark.parametrize(
    "text", ["24:60:00", "08:00:60", "8:0:0", "08:00", "-1:00:00", "08:00:00\n", "", "ab:cd:ef"]
)
def test_malformed_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a GTFS time"):
        parse_time(text)
