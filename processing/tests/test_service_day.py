"""Service days: the origin of GTFS times on DST days, running services, frequencies, instances running."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_processing.errors import UnknownTimezoneError
from fleet_processing.service_day import (
    ServiceCalendar,
    frequency_starts,
    instances_between,
    local_date,
    origin_ms,
)
from fleet_schemas.gtfs import Calendar, CalendarDate, Frequency
from fleet_testing.trips import line, network

HOUR_MS = 3_600_000


def utc_ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 1000


def test_origin_is_noon_minus_twelve_hours_on_dst_days() -> None:
    # Paris springs forward on 2026-03-29: noon is 10:00 UTC, the origin 22:00 UTC the day before
    assert origin_ms(date(2026, 3, 29), "Europe/Paris") == utc_ms(2026, 3, 28, 22)
    # and falls back on 2026-10-25: noon is 11:00 UTC, the origin 23:00 UTC the day before (01:00 local)
    assert origin_ms(date(2026, 10, 25), "Europe/Paris") == utc_ms(2026, 10, 24, 23)
    # on an ordinary day the origin is local midnight; Algiers has no DST (UTC+1 all year)
    assert origin_ms(date(2026, 12, 1), "Africa/Algiers") == utc_ms(2026, 11, 30, 23)
    # 25:35:00 of the fall-back day is 92,100 s after its origin: 01:35 CET the next day, 00:35 UTC
    assert origin_ms(date(2026, 10, 25), "Europe/Paris") + 92_100_000 == utc_ms(2026, 10, 26, 0, 35)


@settings(max_examples=200, deadline=None)
@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2037, 12, 31)),
    tz=st.sampled_from(["Africa/Algiers", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "UTC"]),
)
def test_origin_plus_twelve_hours_is_always_local_noon(day: date, tz: str) -> None:
    noon = datetime.fromtimestamp((origin_ms(day, tz) + 12 * HOUR_MS) / 1000, ZoneInfo(tz))
    assert (noon.date(), noon.hour, noon.minute) == (day, 12, 0)
    assert local_date(origin_ms(day, tz) + 12 * HOUR_MS, tz) == day


def test_an_unknown_timezone_is_a_typed_error() -> None:
    with pytest.raises(UnknownTimezoneError) as caught:
        origin_ms(date(2026, 1, 1), "Mars/Olympus_Mons")
    assert caught.value.code == "unknown_timezone"


def test_services_follow_the_week_the_range_and_the_exceptions() -> None:
    weekdays = Calendar(
        service_id="wk",
        days=(True,) * 5 + (False,) * 2,
        start_date=date(2026, 1, 1),
        end_date=date(2026, 6, 30),
    )
    calendar = ServiceCalendar(
        [weekdays],
        [
            CalendarDate(service_id="wk", date=date(2026, 5, 1), exception_type=2),  # Labour Day, a Friday
            CalendarDate(service_id="wk", date=date(2026, 5, 2), exception_type=1),  # a Saturday added
            CalendarDate(
                service_id="eid", date=date(2026, 3, 20), exception_type=1
            ),  # only by calendar_dates
        ],
    )
    assert calendar.services_on(date(2026, 4, 30)) == {"wk"}  # a Thursday
    assert calendar.services_on(date(2026, 5, 1)) == set()
    assert calendar.services_on(date(2026, 5, 2)) == {"wk"}
    assert calendar.services_on(date(2026, 5, 3)) == set()  # Sunday
    assert calendar.services_on(date(2026, 3, 20)) == {"wk", "eid"}
    assert calendar.services_on(date(2026, 7, 1)) == set()  # past end_date


@given(
    start=st.integers(0, 30 * 3600),
    span=st.integers(1, 6 * 3600),
    headway=st.integers(60, 3600),
    exact=st.booleans(),
)
def test_frequencies_start_an_instance_every_headway_within_start_and_end(
    start: int, span: int, headway: int, exact: bool
) -> None:
    rows = [Frequency(trip_id="t", start_s=start, end_s=start + span, headway_s=headway, exact_times=exact)]
    starts = frequency_starts(rows)
    assert starts[0] == start
    assert all(b - a == headway for a, b in itertools.pairwise(starts))
    assert starts[-1] < start + span <= starts[-1] + headway


def test_instances_running_include_yesterdays_trips_past_midnight() -> None:
    # a line leaving at 25:00:00 (01:00 the next morning); one every 30 min from 10:00 to noon
    _, net = network(
        [
            line("straight", name="late", departures_s=[25 * 3600]),
            line("loop", name="freq", departures_s=[], frequency=(10 * 3600, 12 * 3600, 1800)),
        ]
    )
    one_am = origin_ms(date(2026, 12, 2), "Africa/Algiers") + HOUR_MS
    running = instances_between(net, one_am, one_am + 60_000, slack_s=0)
    assert [(i.plan.trip_id, i.start_date, i.start_time) for i in running] == [
        ("late-0", "20261201", "25:00:00")
    ]
    ten_forty = origin_ms(date(2026, 12, 1), "Africa/Algiers") + 10 * HOUR_MS + 40 * 60_000
    running = instances_between(net, ten_forty, ten_forty + 25 * 60_000, slack_s=0)
    assert sorted(i.start_time for i in running) == ["10:30:00", "11:00:00"]  # a loop takes about 14 min
    assert {i.offset_s for i in running} == {1800, 3600}
