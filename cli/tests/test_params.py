"""The shared option types: durations and moments, ago or ISO, always UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from fleet_cli.params import parse_duration, parse_moment

NOW_MS = 1_795_000_000_000
UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "": 1}


@given(st.integers(min_value=0, max_value=10_000), st.sampled_from(sorted(UNITS)))
def test_a_duration_ago_is_that_many_seconds_before_now(amount: int, unit: str) -> None:
    assert parse_moment(f"{amount}{unit}", NOW_MS) == NOW_MS - amount * UNITS[unit] * 1_000


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_an_iso_time_without_a_zone_is_utc_and_round_trips_to_the_millisecond(moment: datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    ms = parse_moment(moment.isoformat(), NOW_MS)
    assert ms is not None
    assert datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None) == moment


def test_an_iso_time_with_a_zone_is_converted_to_utc() -> None:
    assert parse_moment("2026-12-01T09:00+01:00", NOW_MS) == parse_moment("2026-12-01T08:00Z", NOW_MS)
    assert parse_moment("now", NOW_MS) == NOW_MS


@given(st.text())
def test_anything_else_is_refused_not_guessed(text: str) -> None:
    moment = parse_moment(text, NOW_MS)
    duration = parse_duration(text)
    assert duration is None or duration >= timedelta(0)
    if moment is not None:
        stripped = text.strip()
        assert stripped == "now" or duration is not None or stripped[:1].isdigit()


def test_a_final_newline_or_sign_does_not_sneak_a_duration_in() -> None:
    assert parse_duration("5m\nrm") is None
    assert parse_duration("-5m") is None
    assert parse_duration("٣m") is None, "only ASCII digits"
