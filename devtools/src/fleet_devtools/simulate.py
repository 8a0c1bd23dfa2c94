"""``fleet simulate``: N simulated onboard agents in one process, for demos and benchmarks.

Each bus is a full agent (its own key file, outbox, sequence and broker
connection) fed by the simulator along a route, or along the trips of a GTFS
feed on their timetables (one bus per trip, placed where its schedule has it
now). Keys and outboxes live under ``directory/<device>/`` and are kept
between runs, so a second run continues each bus's sequence.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import asyncpg
import msgspec

from fleet_agent.agent import Agent
from fleet_agent.config import AgentConfig, SourceConfig
from fleet_agent.fix import FixSource
from fleet_agent.keys import read_key_file
from fleet_agent.outbox import OutboxLimits
from fleet_agent.publisher import BrokerConfig
from fleet_agent.schedule import running_at
from fleet_agent.simulator import Detour, DeviceRebooted, Fault, LongStop, Reboot
from fleet_agent.sources import open_source
from fleet_devtools.trip_chain import Departures, TripAfterTrip
from fleet_schemas import DeviceKey
from fleet_schemas.backoff import sleep_unless_stopped
from fleet_schemas.broker import BrokerUrl
from fleet_schemas.keyfile import write_key_file
from fleet_store.devices import add_device
from fleet_store.errors import ConfigError
from fleet_store.secretbox import KeyEncryptionKey


def device_name(operator: str, number: int) -> str:
    return f"{operator}-bus-{number:03d}"


async def register(
    conn: asyncpg.Connection, kek: KeyEncryptionKey, directory: Path, operator: str, buses: int
) -> list[str]:
    """Register the simulated devices not registered yet: key file and broker password under ``directory``.

    Returns the devices added (the broker's accounts need rewriting for them).
    """
    added = []
    for number in range(1, buses + 1):
        device = device_name(operator, number)
        if await conn.fetchval("SELECT 1 FROM devices WHERE device = $1", device):
            continue
        issued = await add_device(conn, kek, operator, device, bus_name(operator, number))
        write_key_file(directory / device / "key.toml", issued.key)
        password_file = directory / device / "mqtt-password"
        password_file.touch(mode=0o600)
        password_file.write_text(f"{issued.mqtt_password}\n")
        added.append(device)
    return added


def _device_broker_url(broker_url: str, home: Path, device: str) -> str:
    """The device's own broker login when it was registered, else the URL given."""
    password_file = home / "mqtt-password"
    if not password_file.exists():
        return broker_url
    broker = BrokerUrl.parse(broker_url)
    scheme = "mqtts" if broker.tls else "mqtt"
    password = quote(password_file.read_text().strip(), safe="")
    return f"{scheme}://{device}:{password}@{broker.host}:{broker.port}"


def bus_name(operator: str, number: int) -> str:
    return f"{operator.upper()[:8]}-{number:03d}"


class TripDrive(msgspec.Struct, frozen=True, kw_only=True):
    """How simulated buses follow GTFS trips: which feed, how late, what they tell and where truth goes."""

    feed: str
    delay_s: float = 0.0
    send_trip_id: bool = False
    truth_file: str | None = None
    chain: bool = False
    """at the end of its trip a bus takes the next departure from there (``trip_chain``)"""


def trips_running(feed: str, now_ms: int) -> list[str]:
    """The trips of ``feed`` under way at ``now_ms`` (calendar and times), for ``--trips all-active``."""
    return [timetable.trip_id for _, timetable in running_at(feed, now_ms)]


def spread(trips: Sequence[str], count: int) -> list[str]:
    """``count`` of ``trips`` taken evenly along the list (every line and direction keeps its share)."""
    if count > len(trips):
        raise ConfigError(f"{count} buses asked for, {len(trips)} trips under way")
    return [trips[i * len(trips) // count] for i in range(count)]


SCRIPTED: tuple[tuple[Fault, ...], ...] = (
    (Detour(at_m=0.0, length_m=10_000.0, offset_m=3_000.0),),
    (LongStop(at_m=500.0, duration_s=1_200.0),),
    (Reboot(at_m=3_000.0, gap_s=700.0),),
)
"""What ``--faults-every`` scripts, ahead of where each bus starts: a detour far enough off the corridor
(3 km, the server's threshold is 2 km) to be a deviation within minutes, a 20-minute stop on the open
road, and, 3 km on (after a minute or two: a one-minute demo ends with every bus live), a device dark
for longer than the server's 10 minutes before ``bus_offline``."""


def scripted_faults(number: int, every: int) -> tuple[Fault, ...]:
    """Bus ``number``'s faults: of every ``every`` buses, one detours, one stops long, one goes dark."""
    if every <= 0 or number % every >= len(SCRIPTED):
        return ()
    return SCRIPTED[number % every]


def simulated_agent(
    directory: Path,
    broker_url: str,
    operator: str,
    number: int,
    *,
    speedup: float,
    route: str | None,
    seed: int,
    ahead_s: float,
    trip_id: str | None = None,
    drive: TripDrive | None = None,
    faults: tuple[Fault, ...] = (),
    departures: Departures | None = None,
) -> SimulatedBus:
    """One simulated bus: a key file made once, an outbox that persists, a seeded drive (of ``trip_id``)."""
    device = device_name(operator, number)
    home = directory / device
    key_file = home / "key.toml"
    if not key_file.exists():
        write_key_file(key_file, DeviceKey(f"{device}-k1", device, os.urandom(32)))
    read_key_file(key_file, device)
    config = AgentConfig(
        operator=operator,
        device=device,
        bus=bus_name(operator, number),
        key_file=str(key_file),
        data_dir=str(home / "data"),
        broker=BrokerConfig(url=_device_broker_url(broker_url, home, device)),
        source=SourceConfig(
            kind="sim",
            route=drive.feed if drive else route,
            seed=seed + number,
            speedup=speedup,
            trip_id=trip_id,
            delay_s=drive.delay_s if drive else 0.0,
            send_trip_id=drive.send_trip_id if drive else False,
            truth_file=drive.truth_file if drive else None,
            faults=faults,
        ),
        outbox=OutboxLimits(durability="normal"),
    )
    # Start early enough that a speeded-up drive never produces fix times in the future, so the
    # last fix of every bus is about now; seeds spread the buses (cruise speed, dwell, traffic).
    start_ms = int((time.time() - ahead_s) * 1000)
    if departures is not None and trip_id is not None:
        chained = TripAfterTrip(config.source, departures, start_ms=start_ms, bus=config.bus)
        return SimulatedBus(config, chained)
    return SimulatedBus(config, open_source(config.source, start_ms=start_ms, bus=config.bus))


def _set(event: asyncio.Event, _: object) -> None:
    event.set()


class SimulatedBus:
    """One simulated unit over its lives: a scripted reboot ends its agent, and a new one starts on the same
    outbox, as the unit's service manager would restart it; the source resumes after the dark gap."""

    def __init__(self, config: AgentConfig, source: FixSource) -> None:
        self.config, self._source = config, source
        self.agent = Agent(config, source)
        self._framed = self._sent = 0
        """what the agents of earlier lives framed and had acked"""

    @property
    def framed(self) -> int:
        return self._framed + self.agent.fixes.framed

    @property
    def sent(self) -> int:
        return self._sent + self.agent.publisher.state.frames_sent

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            life = asyncio.Event()  # an agent sets the event it runs with when it ends: one per life
            relay = asyncio.create_task(stop.wait())
            relay.add_done_callback(functools.partial(_set, life))
            try:
                await self.agent.run(life)
                return
            except DeviceRebooted:
                if stop.is_set():
                    return
                self._framed, self._sent = self.framed, self.sent
                self.agent = Agent(self.config, self._source)
            finally:
                relay.cancel()


async def simulate(
    directory: Path,
    broker_url: str,
    operator: str,
    buses: int,
    *,
    duration_s: float | None,
    speedup: float,
    route: str | None,
    seed: int,
    report: Callable[[str], None],
    trips: Sequence[str] = (),
    drive: TripDrive | None = None,
    faults_every: int = 0,
) -> tuple[int, int]:
    """Run the buses until ``duration_s`` passed (or SIGINT); return (frames produced, frames acked).

    A speeded-up drive covers ``duration_s * speedup`` simulated seconds; it
    starts that much before now so it ends at now (it needs a duration). With
    ``trips`` (and ``drive``), bus N follows trip N. ``faults_every``: see
    ``scripted_faults``.
    """
    if speedup > 1 and duration_s is None:
        raise ConfigError("--speedup above 1 needs --duration: the drive must end by now, not in the future")
    ahead_s = (duration_s or 0.0) * max(0.0, speedup - 1)
    if trips and (drive is None or len(trips) != buses):
        raise ConfigError("trips need a feed (TripDrive) and exactly one bus each")
    departures = Departures(drive.feed) if drive is not None and drive.chain and trips else None
    agents = [
        simulated_agent(
            directory,
            broker_url,
            operator,
            n,
            speedup=speedup,
            route=route,
            seed=seed,
            ahead_s=ahead_s,
            trip_id=trips[n - 1] if trips else None,
            drive=drive,
            faults=scripted_faults(n, faults_every),
            departures=departures,
        )
        for n in range(1, buses + 1)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(bus.run(stop)) for bus in agents]
    started = time.monotonic()
    while not stop.is_set():
        remaining = (
            5.0 if duration_s is None else max(0.0, min(5.0, duration_s - (time.monotonic() - started)))
        )
        await sleep_unless_stopped(stop, remaining)
        elapsed = time.monotonic() - started
        produced = sum(bus.framed for bus in agents)
        acked = sum(bus.sent for bus in agents)
        connected = sum(bus.agent.publisher.state.connected for bus in agents)
        report(
            f"simulate: {elapsed:6.1f} s  {produced} frames produced, {acked} acked, "
            f"{connected}/{buses} connected"
        )
        if duration_s is not None and elapsed >= duration_s:
            stop.set()
    await asyncio.gather(*tasks)
    return sum(bus.framed for bus in agents), sum(bus.sent for bus in agents)
