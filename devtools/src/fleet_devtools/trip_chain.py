"""A simulated coach that drives trip after trip: at each terminus, the next departure from there.

A bus joined in the middle of its trip ends it within hours; a demo left
open all day would thin out. Here, once the bus has parked at the end of its
trip, it takes the first trip of the feed that leaves from that stop at or
after now (the next day's first if none is left today), waits there for its
departure and drives it, from the same position, on the same agent and outbox
(one continuous sequence), as a coach on a duty roster would.

Departure clocks are seconds from the service day's origin in the feed's
timezone (GTFS gives every agency of a feed the same one); the calendar is
not read, so this is for feeds whose trips run every day, as the demo's do.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from fleet_agent.config import SourceConfig
from fleet_agent.fix import Fix, FixSource
from fleet_agent.route import GtfsTables
from fleet_agent.schedule import parse_time, service_origin_ms
from fleet_agent.simulator import SimulatedSource
from fleet_agent.sources import open_source

DAY_S = 86_400


class Departures:
    """The trips of a feed by the stop they leave from, in order of departure."""

    def __init__(self, feed: str | Path) -> None:
        tables = GtfsTables(Path(feed))
        _, agency = next(tables.rows("agency.txt", ("agency_timezone",)))
        self.timezone = agency["agency_timezone"]
        first: dict[str, tuple[int, str, str]] = {}
        for _, row in tables.rows("stop_times.txt", ("trip_id", "stop_sequence", "stop_id")):
            sequence, leaves = int(row["stop_sequence"]), row.get("departure_time") or row.get("arrival_time")
            if leaves and (row["trip_id"] not in first or sequence < first[row["trip_id"]][0]):
                first[row["trip_id"]] = (sequence, row["stop_id"], leaves)
        by_stop: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for trip_id, (_, stop_id, leaves) in first.items():
            by_stop[stop_id].append((parse_time(leaves) % DAY_S, trip_id))
        self._by_stop = {stop: sorted(trips) for stop, trips in by_stop.items()}

    def next_from(self, stop_id: str, now_ms: int) -> str | None:
        """The first trip leaving ``stop_id`` at or after ``now_ms`` (tomorrow's first when none is left)."""
        trips = self._by_stop.get(stop_id)
        if not trips:
            return None
        today = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(self.timezone)).date()
        clock = (now_ms - service_origin_ms(today, self.timezone)) // 1000 % DAY_S
        index = bisect.bisect_left(trips, (clock, ""))
        return trips[index % len(trips)][1]


class TripAfterTrip:
    """A ``FixSource`` that drives ``config``'s trip, then the next departure from where it ended, and on.

    The source in hand is kept between calls of ``fixes()``, so a scripted
    reboot (``DeviceRebooted`` out of it) resumes that trip where it stopped.
    Faults are scripted on the first trip only. ``clock_ms`` tells when a trip ended (the wall clock:
    a bus at ``speedup`` 1 ends its trip now).
    """

    def __init__(
        self,
        config: SourceConfig,
        departures: Departures,
        *,
        start_ms: int,
        bus: str,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._config, self._departures, self._bus, self._clock_ms = config, departures, bus, clock_ms
        self._current: FixSource = open_source(config, start_ms=start_ms, bus=bus)
        self.trips = [config.trip_id]
        """every trip driven or under way, in order"""

    async def fixes(self) -> AsyncIterator[Fix]:
        while True:
            async for fix in self._current.fixes():
                yield fix
            source = self._current
            if not isinstance(source, SimulatedSource) or source.trip.timetable is None:
                return
            now_ms = self._clock_ms()
            trip_id = self._departures.next_from(source.trip.timetable.stop_ids[-1], now_ms)
            if trip_id is None:
                return
            self._config = msgspec.structs.replace(self._config, trip_id=trip_id, faults=())
            self._current = open_source(self._config, start_ms=now_ms, bus=self._bus)
            self.trips.append(trip_id)
