"""agent.toml: everything one onboard unit needs to know, decoded into typed structs.

Example::

    operator = "sogral"
    device = "unit-0042"
    bus = "DZ-16-0042"
    key_file = "/etc/fleet-agent/key.toml"     # 0600, see fleet_agent.keys
    data_dir = "/var/lib/fleet-agent"          # outbox and sequence
    health_file = "/run/fleet-agent/health.json"

    [broker]
    url = "mqtts://unit-0042:secret@broker.example.dz:8883"

    [source]
    kind = "nmea-serial"                       # nmea-serial | nmea-file | gpsd | sim
    path = "/dev/ttyACM0"
    baud = 9600

    [sampling]                                 # optional, defaults shown in fleet_agent.sampling
    parked_interval_s = 30

    [outbox]                                   # optional
    max_frames = 200000

A config file that holds a broker password must not be readable by others.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Literal

import msgspec

from fleet_agent.clock import ClockPolicy
from fleet_agent.errors import ConfigError
from fleet_agent.outbox import OutboxLimits
from fleet_agent.publisher import BrokerConfig
from fleet_agent.sampling import SamplingPolicy
from fleet_agent.simulator import Fault
from fleet_schemas import FleetSchemaError
from fleet_schemas.broker import BrokerUrl
from fleet_schemas.frames import Identifier

SourceKind = Literal["nmea-serial", "nmea-file", "gpsd", "sim"]


class SourceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[source]: where fixes come from."""

    kind: SourceKind
    path: str | None = None
    """serial device (nmea-serial) or file/pipe (nmea-file)"""
    baud: int = 9600
    host: str = "127.0.0.1"
    port: int = 2947
    route: str | None = None
    """sim: a GeoJSON route file, or a GTFS feed folder/zip with shape_id; default: Algiers-Blida"""
    shape_id: str | None = None
    seed: int = 0
    speedup: float = 1.0
    """sim and nmea-file: 1 is real time, 0 as fast as possible"""
    loop: bool = True
    """sim: drive the route back and forth until stopped (not with trip_id: the bus parks at its end)"""
    start_ago_s: float = 0.0
    """sim: start the drive this long before now, so a speeded-up drive stays in the past"""
    trip_id: str | None = None
    """sim: follow this trip of the GTFS feed at ``route``, on its timetable, from where it has the bus now"""
    delay_s: float = 0.0
    """sim with trip_id: run this many seconds late on the timetable (negative: early)"""
    send_trip_id: bool = False
    """sim with trip_id: put the trip_id in every frame, as a driver's console would"""
    truth_file: str | None = None
    """sim: append where the bus really is and when it served each stop, as JSON lines"""
    faults: tuple[Fault, ...] = ()
    """sim: scripted faults (detour, long stop, reboot, tunnel), ``at_m`` counted from where the bus
    starts (with trip_id, where the timetable has it at the start)"""


class AgentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole agent.toml."""

    operator: Identifier
    device: Identifier
    bus: Identifier
    key_file: str
    data_dir: str
    broker: BrokerConfig
    source: SourceConfig
    health_file: str | None = None
    log_level: str = "INFO"
    sampling: SamplingPolicy = msgspec.field(default_factory=SamplingPolicy)
    outbox: OutboxLimits = msgspec.field(default_factory=OutboxLimits)
    clock: ClockPolicy = msgspec.field(default_factory=ClockPolicy)


def load_config(path: Path) -> AgentConfig:
    """Read and check agent.toml, or raise ConfigError saying what to fix."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    try:
        config = msgspec.toml.decode(raw, type=AgentConfig)
    except msgspec.MsgspecError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    try:
        broker = BrokerUrl.parse(config.broker.url)
    except FleetSchemaError as exc:
        raise ConfigError(f"config file {path}: {exc.message}") from exc
    if broker.password and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"config file {path} holds the broker password and is readable by others: chmod 600 {path}"
        )
    if config.source.kind in ("nmea-serial", "nmea-file") and not config.source.path:
        raise ConfigError(f"config file {path}: [source] kind {config.source.kind!r} needs a path")
    return config
