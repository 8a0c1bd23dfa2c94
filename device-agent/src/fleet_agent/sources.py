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


def open_source(config: SourceConfig, start_ms: int | None = None) -> FixSource:
    """The source for ``config``; ``start_ms`` starts a simulated bus (default: now)."""
    if config.kind == "sim":
        from fleet_agent.route import load_route
        from fleet_agent.simulator import SimConfig, SimulatedSource

        return SimulatedSource(
            load_route(config.route, config.shape_id),
            seed=config.seed,
            start_ms=start_ms if start_ms is not None else int((time.time() - config.start_ago_s) * 1000),
            config=SimConfig(loop=config.loop),
            speedup=config.speedup,
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
