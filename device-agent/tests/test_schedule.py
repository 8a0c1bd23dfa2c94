"""A GTFS trip's timetable as the simulator reads it: times past 24:00, service days, blanks, calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_agent.route import TripNotFoundError
from fleet_agent.schedule import (
    ScheduleError,
    instance_at,
    load_calendar,
    load_trip,
    parse_time,
    running_at,
    service_origin_ms,
)
from fleet_testing.tiny_feed import write_feed

DAY = date(2026, 12, 1)


def _ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    """Epoch ms of a UTC wall time."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


@given(st.integers(min_value=0, max_value=99 * 3600 + 3599))
def test_gtfs_times_round_trip_including_past_24_hours(seconds: int) -> None:
    text = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["7:60:00", "12:00", "12:00:00\n", "", "-1:00:00", "noon"])
def test_malformed_times_are_refused_with_a_typed_error(text: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_time(text)
    assert caught.value.code == "schedule_invalid"


def test_service_day_counts_from_noon_minus_12_hours_in_the_agency_timezone() -> None:
    assert service_origin_ms(DAY, "Africa/Algiers") == _ms(2026, 11, 30, 23)  # UTC+1, no DST
    # The day Paris moves to summer time has 23 hours: its origin is 23:00 the evening before, not midnight.
    assert service_origin_ms(date(2026, 3, 29), "Europe/Paris") == _ms(2026, 3, 28, 22)
    with pytest.raises(ScheduleError, match="IANA"):
        service_origin_ms(DAY, "Mars/Olympus")


def test_blank_times_are_interpolated_by_distance_along_the_shape(tmp_path: Path) -> None:
    schedule = load_trip(write_feed(tmp_path), "T1")
    first, *middle, last = schedule.calls
    assert (first.departure_s, last.arrival_s) == (8 * 3600, 8 * 3600 + 720)
    total = last.distance_m - first.distance_m
    for call in middle:
        assert call.interpolated
        assert call.arrival_s == call.departure_s == round(8 * 3600 + 720 * call.distance_m / total)
    assert [round(c.distance_m, -1) for c in schedule.calls] == [0.0, 1500.0, 4000.0, 6000.0]
    assert schedule.timezone == "Africa/Algiers"


def test_a_trip_without_times_at_its_ends_is_refused(tmp_path: Path) -> None:
    blank_end = [("08:00:00", "08:00:00"), ("", ""), ("08:06:00", "08:06:00"), ("", "")]
    with pytest.raises(ScheduleError, match="missing_trip_edge"):
        load_trip(write_feed(tmp_path, t1_times=blank_end), "T1")


def test_an_unknown_trip_is_refused_with_its_own_code(tmp_path: Path) -> None:
    with pytest.raises(TripNotFoundError) as caught:
        load_trip(write_feed(tmp_path), "nope")
    assert caught.value.code == "trip_not_found"


def test_calendar_dates_remove_and_add_service_days(tmp_path: Path) -> None:
    calendar = load_calendar(write_feed(tmp_path))
    assert calendar.runs("daily", date(2026, 12, 24))
    assert not calendar.runs("daily", date(2026, 12, 25))  # removed
    assert not calendar.runs("daily", date(2028, 1, 1))  # past end_date
    assert calendar.runs("weekend", date(2026, 12, 5))  # a Saturday
    assert not calendar.runs("weekend", date(2026, 12, 2))  # a Wednesday
    assert calendar.runs("weekend", DAY)  # added on a Tuesday
    assert not calendar.runs("unknown", DAY)


def test_a_trip_past_midnight_belongs_to_the_previous_service_day(tmp_path: Path) -> None:
    feed = write_feed(tmp_path)
    schedule = load_trip(feed, "NIGHT")
    # 00:10 local on 2 December (23:10 UTC on the 1st): the coach that left at 23:50 on the 1st is under way.
    timetable = instance_at(schedule, load_calendar(feed), _ms(2026, 12, 1, 23, 10))
    assert timetable is not None
    assert timetable.start_date == "20261201"
    assert timetable.departures_ms[0] == _ms(2026, 12, 1, 22, 50)
    assert timetable.arrivals_ms[-1] == _ms(2026, 12, 1, 23, 30)  # 24:30:00 is 00:30 on the 2nd


def test_the_next_instance_is_chosen_once_today_s_has_ended(tmp_path: Path) -> None:
    feed = write_feed(tmp_path)
    timetable = instance_at(load_trip(feed, "T1"), load_calendar(feed), _ms(2026, 12, 1, 9))
    assert timetable is not None
    assert timetable.start_date == "20261202"


def test_running_at_lists_the_trips_under_way(tmp_path: Path) -> None:
    feed = write_feed(tmp_path)
    at_0805 = _ms(2026, 12, 1, 7, 5)  # 08:05 in Algiers on a Tuesday: T1, and T2 added that day
    assert sorted(t.trip_id for _, t in running_at(feed, at_0805)) == ["T1", "T2"]
    at_0805_wednesday = _ms(2026, 12, 2, 7, 5)
    assert [t.trip_id for _, t in running_at(feed, at_0805_wednesday)] == ["T1"]
    assert running_at(feed, _ms(2026, 12, 2, 12)) == []
