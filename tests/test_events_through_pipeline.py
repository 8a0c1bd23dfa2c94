"""Events through the real chain: a coach with scripted faults → Mosquitto → ``fleet ingest`` → events.

Each scenario drives one coach of the demo feed on its timetable with one
fault of the simulator (a detour off the corridor, a station stop, a device
that goes dark) and reads what PostgreSQL's ``events`` table holds: exactly
one event of each kind the fault must raise, with the numbers the
simulator's truth has. Drives run sped up in the past (their fix times end
near now), except the silence, which the offline sweep must notice in real
time with two ingest processes sharing the frames.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from click.testing import CliRunner

from fleet_agent.agent import Agent
from fleet_agent.schedule import instance_at, load_calendar, load_trip, running_at
from fleet_agent.simulator import (
    TRUTH_DECODER,
    Detour,
    DeviceRebooted,
    Fault,
    Reboot,
    SimConfig,
    SimulatedSource,
    Timetable,
    TruthPosition,
    TruthStop,
)
from fleet_cli.cli import main
from fleet_devtools.demo_feed import feed_dir
from fleet_schemas import topics
from fleet_schemas.keyfile import write_key_file
from fleet_testing.agents import agent_config
from fleet_testing.broker import scratch_dir
from fleet_testing.cleanup import BrokerCleanup
from fleet_testing.ingest import IngestProcesses, register_devices

pytestmark = pytest.mark.stack

MINUTE_MS = 60_000
SHORT_DWELL_MS = 10 * MINUTE_MS
RADIUS_CRAWL_MS = 50_000
"""the time a coach may take over a stop's 60 m radius when it crawls in traffic (5 km/h: 43 s)"""


@dataclass(frozen=True)
class Placement:
    """A running trip, the delay to drive it with and where the coach then is at the drive's start."""

    trip_id: str
    delay_s: float
    table: Timetable
    dist_m: float
    next_stop: int


def _scheduled_dist(table: Timetable, clock_ms: int) -> tuple[float, int] | None:
    """Where the timetable has the coach at ``clock_ms`` when it is between two stops, and its next stop."""
    d, arrivals, departures = table.distances_m, table.arrivals_ms, table.departures_ms
    for k in range(len(d) - 1):
        if departures[k] < clock_ms < arrivals[k + 1]:
            share = (clock_ms - departures[k]) / (arrivals[k + 1] - departures[k])
            return d[k] + share * (d[k + 1] - d[k]), k + 1
    return None


def _place(start_ms: int, *, ahead_m: tuple[float, float], middle: bool) -> Placement:
    """A trip and delay putting the coach ``ahead_m`` (low, high) before its next stop at ``start_ms``.

    ``middle``: that stop must be neither the first nor the last, and a short one (a coach holds
    there until its departure time, so a long scheduled dwell would outlast the drive).
    """
    for delay_s in range(60, 3_600, 60):
        clock = start_ms - delay_s * 1000
        for _schedule, table in running_at(feed_dir(), clock):
            found = _scheduled_dist(table, clock)
            if found is None:
                continue
            dist, k = found
            if middle and (
                k == len(table.stop_ids) - 1 or table.departures_ms[k] - table.arrivals_ms[k] > SHORT_DWELL_MS
            ):
                continue
            if ahead_m[0] <= table.distances_m[k] - dist <= ahead_m[1]:
                return Placement(table.trip_id, float(delay_s), table, dist, k)
    pytest.fail(f"no trip of the demo feed has its coach {ahead_m} m before a stop within an hour")


@dataclass
class Drive:
    ingest: IngestProcesses
    operator: str
    bus: str
    truth: list[Any]


def _drive(
    ingest: IngestProcesses,
    operator_id: str,
    tmp_path: Path,
    broker_cleanup: BrokerCleanup,
    placement: Placement,
    *,
    start_ms: int,
    speedup: float,
    faults: tuple[Fault, ...],
    wall_s: float,
    instances: tuple[str, ...] = ("a",),
    watch: Any = None,
) -> Drive:
    """Import the demo feed, drive one coach for ``wall_s`` through ``instances``, then stop them."""
    broker_cleanup.retained(ingest.urls.mqtt_url, f"{topics.ROOT}/{operator_id}/#")
    imported = CliRunner().invoke(
        main, ["gtfs", "import", str(feed_dir()), "--operator", operator_id], env=ingest.env()
    )
    assert imported.exit_code == 0, imported.output
    buses, keys = asyncio.run(register_devices(ingest.database_url, ingest.kek, operator_id, 1))
    (device, bus), key = next(iter(buses.items())), keys[0]
    home = scratch_dir()
    config, _ = agent_config(home, ingest.urls.mqtt_url, operator=operator_id, device=device)
    write_key_file(home / "key.toml", key)
    config = msgspec.structs.replace(config, bus=bus)
    schedule = load_trip(feed_dir(), placement.trip_id)
    timetable = instance_at(schedule, load_calendar(feed_dir()), start_ms - round(placement.delay_s * 1000))
    assert timetable is not None
    truth_file = tmp_path / "truth.jsonl"
    source = SimulatedSource(
        schedule.route,
        seed=7,
        start_ms=start_ms,
        config=SimConfig(delay_s=placement.delay_s, send_trip_id=True, faults=faults),
        speedup=speedup,
        timetable=timetable,
        truth_file=truth_file,
        bus=bus,
    )
    asyncio.run(ingest.open_sessions(*instances))
    for instance in instances:
        ingest.start(instance, burst_s=None)

    async def lifetimes(stop: asyncio.Event) -> None:
        """The agent, started again after each simulated reboot (its outbox on disk, as on a bus)."""
        while not stop.is_set():
            life = asyncio.Event()  # the agent sets the event it runs with when it ends
            relay = asyncio.create_task(stop.wait())
            relay.add_done_callback(functools.partial(_set, life))
            try:
                await Agent(config, source).run(life)
            except DeviceRebooted:
                continue
            finally:
                relay.cancel()

    async def run() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(lifetimes(stop))
        try:
            deadline = time.monotonic() + wall_s
            while time.monotonic() < deadline:
                if watch is not None:
                    await watch()
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await running
        await asyncio.sleep(3.0)  # ingest's last batches

    asyncio.run(run())
    for instance in instances:
        ingest.terminate(instance)
    records = [TRUTH_DECODER.decode(line) for line in truth_file.read_bytes().splitlines()]
    return Drive(ingest, operator_id, bus, records)


def _set(event: asyncio.Event, _done: object) -> None:
    event.set()


def _events(database_url: str, operator: str, bus: str) -> list[dict[str, Any]]:
    async def query() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetch(
                "SELECT kind, time, subject, details FROM events WHERE operator = $1 AND bus = $2"
                " ORDER BY time, kind",
                operator,
                bus,
            )
        finally:
            await conn.close()

    return [
        {
            "kind": r["kind"],
            "time_ms": int(r["time"].timestamp() * 1000),
            "subject": r["subject"],
            "details": r["details"] if isinstance(r["details"], dict) else json.loads(r["details"]),
        }
        for r in asyncio.run(query())
    ]


def _kinds(events: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] in kinds]


def _fixes(drive: Drive) -> Iterator[TruthPosition]:
    return (r for r in drive.truth if isinstance(r, TruthPosition) and r.fix)


def test_a_detour_off_the_corridor_gives_one_deviation_started_and_one_ended(
    ingest: IngestProcesses, operator_id: str, tmp_path: Path, broker_cleanup: BrokerCleanup
) -> None:
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - 30 * MINUTE_MS
    placement = _place(start_ms, ahead_m=(25_000, 400_000), middle=False)
    detour = Detour(at_m=placement.dist_m + 3_000, length_m=10_000, offset_m=3_000)
    drive = _drive(
        ingest, operator_id, tmp_path, broker_cleanup, placement,
        start_ms=start_ms, speedup=30, faults=(detour,), wall_s=50,
    )  # fmt: skip
    events = _events(ingest.database_url, operator_id, drive.bus)
    deviations = _kinds(events, "deviation_started", "deviation_ended")
    assert [e["kind"] for e in deviations] == ["deviation_started", "deviation_ended"], events
    started, ended = deviations
    assert ended["details"]["max_distance_m"] == pytest.approx(3_000, abs=400)
    beyond = [f.time_ms for f in _fixes(drive) if detour.at_m < f.dist_m < detour.at_m + detour.length_m]
    assert beyond, "the coach never drove the detour"
    assert started["time_ms"] > beyond[0]
    assert ended["time_ms"] < beyond[-1] + MINUTE_MS
    assert ended["details"]["duration_s"] > 60
    assert _kinds(events, "trip_assigned")[0]["subject"].startswith(placement.trip_id + "/")


def test_a_stop_at_a_station_gives_one_arrival_and_one_departure_with_its_delay(
    ingest: IngestProcesses, operator_id: str, tmp_path: Path, broker_cleanup: BrokerCleanup
) -> None:
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - 30 * MINUTE_MS
    placement = _place(start_ms, ahead_m=(2_000, 6_000), middle=True)
    drive = _drive(
        ingest, operator_id, tmp_path, broker_cleanup, placement,
        start_ms=start_ms, speedup=45, faults=(), wall_s=40,
    )  # fmt: skip
    served = [
        r
        for r in drive.truth
        if isinstance(r, TruthStop) and r.stop_id == placement.table.stop_ids[placement.next_stop]
    ]
    assert len(served) == 1, "the coach did not get past the station"
    (truth,) = served
    events = _events(ingest.database_url, operator_id, drive.bus)
    at_station = [e for e in events if e["subject"].endswith(f"#{truth.stop_sequence}")]
    arrived = _kinds(at_station, "stop_arrived")
    departed = _kinds(at_station, "stop_departed")
    assert (len(arrived), len(departed)) == (1, 1), at_station
    # The events say when the coach came within the stop's 60 m radius and when it was last in it;
    # the truth, when it stood still and when it moved off: a coach crawling in traffic takes up to
    # about 45 s over those 60 m (5 km/h).
    assert arrived[0]["details"]["at_ms"] == pytest.approx(truth.arrived_ms, abs=RADIUS_CRAWL_MS)
    assert departed[0]["details"]["at_ms"] == pytest.approx(truth.departed_ms, abs=RADIUS_CRAWL_MS)
    late_s = (truth.arrived_ms - truth.scheduled_arrival_ms) / 1000
    assert arrived[0]["details"]["delay_s"] == pytest.approx(late_s, abs=RADIUS_CRAWL_MS / 1000)
    assert departed[0]["details"]["delay_s"] == pytest.approx(
        (truth.departed_ms - truth.scheduled_departure_ms) / 1000, abs=RADIUS_CRAWL_MS / 1000
    )


def test_a_coach_gone_silent_gets_one_offline_and_one_online_with_two_ingest_processes(
    ingest: IngestProcesses, operator_id: str, tmp_path: Path, broker_cleanup: BrokerCleanup
) -> None:
    ingest.settings = {"FLEET_INGEST_OFFLINE_S": "5", "FLEET_INGEST_SWEEP_S": "1"}
    start_ms = int(time.time() * 1000)
    placement = _place(start_ms, ahead_m=(3_000, 400_000), middle=False)
    reboot = Reboot(at_m=placement.dist_m + 60, gap_s=15)
    offline_seen_while_dark: list[bool] = []

    async def watch() -> None:
        # The sweep must find the silence while it lasts, not the gap rule once frames resume.
        if offline_seen_while_dark:
            return
        conn = await asyncpg.connect(ingest.database_url)
        try:
            kinds = [
                r["kind"]
                for r in await conn.fetch("SELECT kind FROM events WHERE operator = $1", operator_id)
            ]
        finally:
            await conn.close()
        if "bus_offline" in kinds:
            offline_seen_while_dark.append("bus_online" not in kinds)

    drive = _drive(
        ingest, operator_id, tmp_path, broker_cleanup, placement,
        start_ms=start_ms, speedup=1, faults=(reboot,), wall_s=32, instances=("a", "b"), watch=watch,
    )  # fmt: skip
    events = _events(ingest.database_url, operator_id, drive.bus)
    silence = _kinds(events, "bus_offline", "bus_online")
    assert [e["kind"] for e in silence] == ["bus_offline", "bus_online"], events
    assert offline_seen_while_dark == [True], "bus_offline was not stored while the coach was silent"
    offline, online = silence
    times = [f.time_ms for f in _fixes(drive)]
    gap_at = max(range(1, len(times)), key=lambda i: times[i] - times[i - 1])
    assert offline["details"]["last_fix_ms"] == times[gap_at - 1]
    assert offline["time_ms"] == times[gap_at - 1] + 5_000
    assert online["time_ms"] == times[gap_at]
