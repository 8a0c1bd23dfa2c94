"""Option types several commands share: durations (``30m``) and moments (``2h`` ago or an ISO time).

click has no duration type, and ``datetime.fromisoformat`` alone would take a
time without a zone as local time; here it is UTC, as everywhere in fleet.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import click

_SECONDS_PER = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9]+)([smhd]?)")


def parse_duration(text: str) -> timedelta | None:
    """``90s``, ``30m``, ``24h``, ``7d`` or plain seconds; None if it is not one."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    return timedelta(seconds=int(match[1]) * _SECONDS_PER[match[2] or "s"])


def parse_moment(text: str, now_ms: int) -> int | None:
    """Epoch ms of ``now``, a duration before ``now_ms`` (``2h``: two hours ago) or an ISO 8601 time
    (UTC when it has no zone); None if it is none of these."""
    text = text.strip()
    if text == "now":
        return now_ms
    ago = parse_duration(text)
    if ago is not None:
        return now_ms - ago // timedelta(milliseconds=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


class Duration(click.ParamType[timedelta]):
    """``90s``, ``30m``, ``24h``, ``7d`` or plain seconds."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        duration = parse_duration(str(value))
        if duration is None:
            self.fail(f"{value!r} is not a duration such as 90s, 30m, 24h or 7d", param, ctx)
        return duration


class Moment(click.ParamType[int]):
    """A time as epoch ms: ``2h`` (that long ago), ``now``, or ISO 8601 (``2026-12-01T08:00``, UTC)."""

    name = "time"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        moment = parse_moment(str(value), int(time.time() * 1000))
        if moment is None:
            self.fail(
                f"{value!r} is neither a time ago (30m, 2h, 7d) nor an ISO time (2026-12-01T08:00)",
                param,
                ctx,
            )
        return moment
