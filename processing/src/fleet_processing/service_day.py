"""Service days: when a GTFS day starts, which services run on it, and the trip instances it holds.

GTFS counts a trip's times from "noon minus 12 h" of its service day in the
agency's timezone, not from midnight: on the day a DST change happens that
origin is 23:00 or 01:00 local, and a time past 24:00:00 belongs to the
service day before the calendar day it falls on. So ``origin_ms`` computes
noon with zoneinfo and subtracts 12 h of real time, and ``instances_between``
looks at as many service days back as the feed's longest times reach.

Frequency-based trips (frequencies.txt) become one instance per headway
within ``[start_time, end_time)``, whether ``exact_times`` is set or not: the
template's times shifted by ``offset_s``. No Python GTFS reader expands them
(see the GUIDE), hence this module.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from fleet_processing.errors import UnknownTimezoneError
from fleet_processing.plan import Ints, TripInstance, TripPlan
from fleet_schemas.gtfs import Calendar, CalendarDate, Frequency, service_origin_ms

if TYPE_CHECKING:
    from fleet_processing.network import Network

DAY_S = 86_400
DEFAULT_SLACK_S = 1_800
"""an instance runs from this long before its first departure to this long after its last arrival"""
CACHED_DAYS = 8
"""service days a network keeps expanded (ingest asks for a day back and a few ahead)"""


@functools.cache
def zone(tz: str) -> ZoneInfo:
    """The IANA zone ``tz``, or an ``UnknownTimezoneError``."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownTimezoneError(f"{tz!r} is not a timezone of this machine's tz database") from exc


@functools.lru_cache(maxsize=4096)
def origin_ms(service_date: date, tz: str) -> int:
    """Epoch ms of ``service_date``'s origin: noon local time minus 12 h of real time (exact on DST days)."""
    return service_origin_ms(service_date, zone(tz))


def local_date(epoch_ms: int, tz: str) -> date:
    """The calendar date in ``tz`` at ``epoch_ms``."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(zone(tz)).date()


class ServiceCalendar:
    """Which dates each service runs, answered without listing them (calendars often run to 2099)."""

    def __init__(self, calendars: Iterable[Calendar], calendar_dates: Iterable[CalendarDate]) -> None:
        self.calendars = {calendar.service_id: calendar for calendar in calendars}
        self.added: dict[str, set[date]] = defaultdict(set)
        self.removed: dict[str, set[date]] = defaultdict(set)
        for exception in calendar_dates:
            (self.added if exception.exception_type == 1 else self.removed)[exception.service_id].add(
                exception.date
            )

    def services_on(self, day: date) -> frozenset[str]:
        """Every service running on ``day``: calendar.txt's week and range, then calendar_dates.txt."""
        weekday = day.weekday()
        running = {
            c.service_id
            for c in self.calendars.values()
            if c.start_date <= day <= c.end_date and c.days[weekday]
        }
        running |= {service for service, days in self.added.items() if day in days}
        running -= {service for service, days in self.removed.items() if day in days}
        return frozenset(running)

    def runs_on(self, service_id: str, day: date) -> bool:
        if day in self.added.get(service_id, ()):
            return True
        if day in self.removed.get(service_id, ()):
            return False
        calendar = self.calendars.get(service_id)
        return (
            calendar is not None
            and calendar.start_date <= day <= calendar.end_date
            and calendar.days[day.weekday()]
        )

    def last_date(self, service_id: str) -> date | None:
        """The last date the service runs; None when it never does."""
        added = self.added.get(service_id, set())
        calendar = self.calendars.get(service_id)
        latest = max(added, default=None)
        if calendar is not None:
            day = calendar.end_date
            # a week past the last removal is far enough back to meet every running weekday
            floor = max(
                calendar.start_date, min(self.removed.get(service_id, {day}) | {day}) - timedelta(days=7)
            )
            while day >= floor:
                if self.runs_on(service_id, day):
                    latest = day if latest is None else max(latest, day)
                    break
                day -= timedelta(days=1)
        return latest

    def common_date(self, a: str, b: str) -> date | None:
        """The first date both services run, None when they never share one."""
        candidates = sorted(self.added.get(a, set()) | self.added.get(b, set()))
        first = next((day for day in candidates if self.runs_on(a, day) and self.runs_on(b, day)), None)
        ca, cb = self.calendars.get(a), self.calendars.get(b)
        if ca is not None and cb is not None:
            day, end = max(ca.start_date, cb.start_date), min(ca.end_date, cb.end_date)
            while day <= end and (first is None or day < first):
                if self.runs_on(a, day) and self.runs_on(b, day):
                    return day
                day += timedelta(days=1)
        return first


def frequency_starts(frequencies: list[Frequency]) -> list[int]:
    """Start times (seconds from the origin) of every instance: one per headway in each [start, end)."""
    return sorted({s for f in frequencies for s in range(f.start_s, f.end_s, f.headway_s)})


def expand(
    plan: TripPlan, frequencies: list[Frequency], service_date: date, day_origin_ms: int
) -> list[TripInstance]:
    """The instances of ``plan`` on one service day: itself, or one per frequency start."""
    if not frequencies:
        return [TripInstance(plan, service_date, day_origin_ms)]
    first = int(plan.departure_s[0])
    return [
        TripInstance(plan, service_date, day_origin_ms, start - first)
        for start in frequency_starts(frequencies)
    ]


class Label(NamedTuple):
    """What a batch needs of an instance, computed once per service day."""

    start_date: str
    start_time: str
    plan: int
    """index of its plan in the network"""
    base_ms: int
    """epoch ms its plan's times count from: the day's origin plus the frequency offset"""


@dataclass(slots=True)
class DayInstances:
    """Every instance of one service day, with their spans as arrays for overlap tests."""

    instances: list[TripInstance]
    first_departure_ms: Ints
    last_arrival_ms: Ints


def day_instances(network: Network, service_date: date) -> DayInstances:
    """The instances of ``service_date`` (expanded once, then kept in the network's cache)."""
    cached = network.day_cache.get(service_date)
    if cached is not None:
        return cached
    running = network.calendar.services_on(service_date)
    instances: list[TripInstance] = []
    for index, plan in enumerate(network.plans):
        if plan.service_id in running:
            day_origin = origin_ms(service_date, network.plan_tz[index])
            instances.extend(
                expand(plan, network.frequencies.get(plan.trip_id, []), service_date, day_origin)
            )
    first = np.array(
        [i.origin_ms + (int(i.plan.departure_s[0]) + i.offset_s) * 1000 for i in instances], dtype=np.int64
    )
    last = np.array(
        [i.origin_ms + (int(i.plan.arrival_s[-1]) + i.offset_s) * 1000 for i in instances], dtype=np.int64
    )
    day = DayInstances(instances, first, last)
    if len(network.day_cache) >= CACHED_DAYS:
        for gone in network.day_cache.pop(min(network.day_cache)).instances:
            label = network.labels.pop(gone)
            network.by_label.pop((gone.plan.trip_id, label.start_date, label.start_time), None)
    for instance in instances:
        trip_id = instance.plan.trip_id
        label = network.labels[instance] = Label(
            instance.start_date,
            instance.start_time,
            network.plan_index[trip_id],
            instance.origin_ms + instance.offset_s * 1000,
        )
        network.by_label[(trip_id, label.start_date, label.start_time)] = instance
    network.day_cache[service_date] = day
    return day


def service_dates_between(network: Network, start_ms: int, end_ms: int) -> list[date]:
    """Service days whose instances may run in [start_ms, end_ms]: back as far as the feed's times reach."""
    days_back = network.max_time_s // DAY_S + 1
    dates: set[date] = set()
    for tz in set(network.plan_tz):
        first, last = local_date(start_ms, tz) - timedelta(days=days_back), local_date(end_ms, tz)
        dates.update(first + timedelta(days=n) for n in range((last - first).days + 1))
    return sorted(dates)


def instances_between(
    network: Network, start_ms: int, end_ms: int, *, slack_s: int = DEFAULT_SLACK_S
) -> list[TripInstance]:
    """Every instance whose span (first departure - slack, last arrival + slack) meets [start_ms, end_ms]."""
    found: list[TripInstance] = []
    slack_ms = slack_s * 1000
    for service_date in service_dates_between(network, start_ms, end_ms):
        day = day_instances(network, service_date)
        overlap = (day.first_departure_ms - slack_ms <= end_ms) & (day.last_arrival_ms + slack_ms >= start_ms)
        found.extend(day.instances[i] for i in np.flatnonzero(overlap))
    return found


@functools.lru_cache(maxsize=64)
def parse_date(yyyymmdd: str) -> date | None:
    """A GTFS-realtime start_date (YYYYMMDD), or None when it is not one."""
    try:
        return datetime.strptime(yyyymmdd, "%Y%m%d").date()
    except ValueError:
        return None


def find_instance(network: Network, trip_id: str, start_date: str, start_time: str) -> TripInstance | None:
    """The instance a bus's saved progress names (trip, YYYYMMDD, HH:MM:SS), if the feed still has it."""
    found = network.by_label.get((trip_id, start_date, start_time))
    if found is not None:
        return found
    service_date = parse_date(start_date)
    if service_date is None or service_date in network.day_cache:
        return None
    day_instances(network, service_date)
    return network.by_label.get((trip_id, start_date, start_time))
