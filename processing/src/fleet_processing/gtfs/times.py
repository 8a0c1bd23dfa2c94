"""GTFS times ⇄ seconds from the service day's origin.

A GTFS time is ``H:MM:SS`` or ``HH:MM:SS`` counted from "noon minus 12 h" of
the service day, and may pass 24:00:00 for trips that run past midnight
(25:35:00 is 92,100 s). Written by hand because ``datetime.time`` stops at
23:59:59 and these are durations, not clock times.
"""

from __future__ import annotations

import re

_TIME = re.compile(r"(\d{1,3}):([0-5]\d):([0-5]\d)")
MAX_HOURS = 999
"""three digits of hours (41 days): more than any service day runs past its origin"""


def parse_time(text: str) -> int:
    """Seconds from the service day's origin; ValueError when ``text`` is not H:MM:SS."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a GTFS time (H:MM:SS, hours may pass 24)")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds)


def format_time(seconds: int) -> str:
    """``HH:MM:SS``, hours past 24 for a time after the service day's midnight."""
    if not 0 <= seconds <= MAX_HOURS * 3600 + 3599:
        raise ValueError(f"{seconds} s is outside what a GTFS time can say")
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
