"""Open the fix source that ``[source]`` in agent.toml names."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

from fleet_agent.config import SourceConfig
from fleet_agent.errors import ConfigError
from fleet_agent.fix import Fix, FixSource


class EndedSource:
    """A source with no more fixes: an agent given it only drains its outbox (replays, benches)."""

    async def fixes(self) -> AsyncIterator[Fix]:
        nothing: tuple[Fix, ...] = ()
        for fix in nothing:
            yield fix


def open_source(config: SourceConfig, start_ms: int | None = None, *, bus: str | None = None) -> FixSource:
    """The source for ``config``; ``start_ms`` starts a simulated bus (default: now), ``bus`` tags truth."""
    if config.kind == "sim":
        from fleet_agent.route import load_route
        from fleet_agent.simulator import SimConfig, SimulatedSource, with_faults_ahead

        start = start_ms if start_ms is not None else int((time.time() - config.start_ago_s) * 1000)
        truth = Path(config.truth_file) if config.truth_file else None
        if config.trip_id is None:
            return SimulatedSource(
                load_route(config.route, config.shape_id),
                seed=config.seed,
                start_ms=start,
                config=SimConfig(loop=config.loop, faults=config.faults),
                speedup=config.speedup,
                truth_file=truth,
                bus=bus,
            )
        from fleet_agent.schedule import ScheduleError, instance_at, load_calendar, load_trip

        if config.route is None:
            raise ConfigError(
                f"[source] trip_id {config.trip_id!r} needs route = the GTFS feed's folder or zip"
            )
        schedule = load_trip(config.route, config.trip_id)
        timetable = instance_at(schedule, load_calendar(config.route), start - round(config.delay_s * 1000))
        if timetable is None:
            raise ScheduleError(f"trip {config.trip_id!r} runs on no service day within a week of the start")
        sim = SimConfig(loop=False, delay_s=config.delay_s, send_trip_id=config.send_trip_id)
        return SimulatedSource(
            schedule.route,
            seed=config.seed,
            start_ms=start,
            config=with_faults_ahead(schedule.route, sim, timetable, start, config.faults),
            speedup=config.speedup,
            timetable=timetable,
            truth_file=truth,
            bus=bus,
        )
    if config.kind == "gpsd":
        from fleet_agent.gpsd import GpsdSource

        return GpsdSource(config.host, config.port)
    if config.path is None:  # load_config refuses this; a hand-built config may not
        raise ConfigError(f"[source] kind {config.kind!r} needs a path")
    if config.kind == "nmea-file":
        from fleet_agent.nmea_source import NmeaFileSource

        return NmeaFileSource(Path(config.path), speedup=config.speedup)
    from fleet_agent.nmea_source import SerialNmeaSource

    return SerialNmeaSource(config.path, config.baud)
