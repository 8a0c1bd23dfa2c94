"""Service days as the cross-row checks see them: calendars, added and removed dates."""

from __future__ import annotations

from datetime import date

from fleet_processing.service_day import ServiceCalendar
from fleet_schemas.gtfs import Calendar, CalendarDate

WEEKDAYS = (True, True, True, True, True, False, False)


def _calendar(service_id: str, start: date, end: date, days: tuple[bool, ...] = WEEKDAYS) -> Calendar:
    return Calendar(service_id=service_id, days=days, start_date=start, end_date=end)  # type: ignore[arg-type]


def test_a_calendar_to_2099_runs_to_its_last_weekday() -> None:
    days = ServiceCalendar([_calendar("WK", date(2020, 1, 1), date(2099, 12, 31))], [])
    assert days.last_date("WK") == date(2099, 12, 31)  # a Thursday


def test_removed_dates_at_the_end_move_the_last_date_back() -> None:
    removed = [
        CalendarDate(service_id="WK", date=date(2026, 12, d), exception_type=2) for d in (28, 29, 30, 31)
    ]
    days = ServiceCalendar([_calendar("WK", date(2026, 1, 1), date(2026, 12, 31))], removed)
    assert days.last_date("WK") == date(2026, 12, 25)


def test_a_service_of_added_dates_only_ends_on_its_last_one() -> None:
    added = [CalendarDate(service_id="FEST", date=date(2027, 7, d), exception_type=1) for d in (4, 5)]
    days = ServiceCalendar([], added)
    assert days.last_date("FEST") == date(2027, 7, 5)
    assert days.last_date("NONE") is None


def test_weekday_and_weekend_services_share_no_date_unless_one_is_added() -> None:
    weekend = (False, False, False, False, False, True, True)
    calendars = [
        _calendar("WK", date(2026, 1, 1), date(2026, 12, 31)),
        _calendar("WE", date(2026, 1, 1), date(2026, 12, 31), weekend),
    ]
    assert ServiceCalendar(calendars, []).common_date("WK", "WE") is None
    holiday = [CalendarDate(service_id="WE", date=date(2026, 11, 2), exception_type=1)]  # a Monday
    assert ServiceCalendar(calendars, holiday).common_date("WK", "WE") == date(2026, 11, 2)
