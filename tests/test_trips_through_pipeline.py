"""A coach on the demo feed, through the real chain: simulator → Mosquitto → ``fleet ingest`` → Redis.

The coach sends no trip_id. Ingest must find its trip among the feed's
running ones, place it where the simulator's truth has it, give the delay
the simulator drives with, and leave in Redis the booking record with an ETA
for every stop still ahead.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner

from fleet_agent.agent import Agent
from fleet_agent.schedule import running_at
from fleet_agent.simulator import TRUTH_DECODER, Timetable, TruthPosition
from fleet_agent.sources import open_source
from fleet_cli.cli import main
from fleet_devtools.demo_feed import feed_dir
from fleet_schemas import topics
from fleet_schemas.keyfile import write_key_file
from fleet_schemas.live import LivePosition
from fleet_schemas.trips import TripEtas
from fleet_store.etas import EtaBoards
from fleet_store.live import LiveState
from fleet_testing.agents import agent_config
from fleet_testing.broker import scratch_dir
from fleet_testing.cleanup import BrokerCleanup
from fleet_testing.ingest import IngestProcesses, register_devices

pytestmark = pytest.mark.stack

DRIVE_S = 40.0
PROGRESS_TOLERANCE_M = 150.0
"""GPS noise plus a few seconds of motorway driving between the truth line and the live position"""
DELAY_TOLERANCE_S = 90.0


SHARED_WINDOW_MS = 30 * 60_000
"""two trips leaving a stop for the same next stop this close together cannot be told apart there"""


def _shared(table: Timetable, k: int, tables: list[Timetable]) -> bool:
    """Whether another trip drives segment ``k`` of ``table`` at about the same time.

    The demo feed's Oran and Ghardaïa coaches leave Alger together and share
    the road to Blida: a coach between those two stations is honestly either
    (ingest keeps it a candidate), so the test places its coach elsewhere.
    """
    pair = (table.stop_ids[k], table.stop_ids[k + 1])
    return any(
        (other.stop_ids[j], other.stop_ids[j + 1]) == pair
        and abs(other.departures_ms[j] - table.departures_ms[k]) < SHARED_WINDOW_MS
        for other in tables
        if other.trip_id != table.trip_id
        for j in range(len(other.stop_ids) - 1)
    )


def _mid_segment(now_ms: int) -> tuple[str, float]:
    """A trip, and a delay that puts its coach between two stops now (moving, not dwelling).

    The least delay that does on a segment no other trip drives at the same
    time: the demo feed has a gap at dawn with no trip under way, when the
    coach is one running late on a night trip.
    """
    for delay_s in range(60, 3_600, 60):
        due_ms = now_ms - delay_s * 1000
        tables = [table for _schedule, table in running_at(feed_dir(), due_ms)]
        for table in tables:
            for k in range(len(table.stop_ids) - 2):
                moving = table.departures_ms[k] + 120_000 < due_ms < table.arrivals_ms[k + 1] - 120_000
                if moving and not _shared(table, k, tables):
                    return table.trip_id, float(delay_s)
    pytest.fail("the demo feed has no trip within an hour of now with a segment ahead: check its timetable")


def _assigned(position: LivePosition | None) -> bool:
    calculated = position.calculated if position is not None else None
    return calculated is not None and calculated.state == "assigned"


def _timetable(trip_id: str, at_ms: int) -> Timetable:
    return next(table for _, table in running_at(feed_dir(), at_ms) if table.trip_id == trip_id)


def test_a_coach_sending_no_trip_id_gets_its_trip_progress_delay_and_etas(
    ingest: IngestProcesses, operator_id: str, tmp_path: Path, broker_cleanup: BrokerCleanup
) -> None:
    broker_cleanup.retained(ingest.urls.mqtt_url, f"{topics.ROOT}/{operator_id}/#")  # the coach's status
    imported = CliRunner().invoke(
        main, ["gtfs", "import", str(feed_dir()), "--operator", operator_id], env=ingest.env()
    )
    assert imported.exit_code == 0, imported.output
    buses, keys = asyncio.run(register_devices(ingest.database_url, ingest.kek, operator_id, 1))
    (device, bus), key = next(iter(buses.items())), keys[0]
    now_ms = int(time.time() * 1000)
    trip_id, delay_s = _mid_segment(now_ms)
    truth_file = tmp_path / "truth.jsonl"
    home = scratch_dir()
    config, _ = agent_config(home, ingest.urls.mqtt_url, operator=operator_id, device=device)
    write_key_file(home / "key.toml", key)
    source = msgspec.structs.replace(
        config.source,
        route=str(feed_dir()),
        trip_id=trip_id,
        delay_s=delay_s,
        speedup=1.0,
        send_trip_id=False,
        truth_file=str(truth_file),
    )
    config = msgspec.structs.replace(config, bus=bus, source=source)
    asyncio.run(ingest.open_sessions("a"))
    ingest.start("a", burst_s=None)

    async def drive() -> tuple[LivePosition | None, list[TripEtas]]:
        agent = Agent(config, open_source(source, start_ms=now_ms, bus=bus))
        stop = asyncio.Event()
        running = asyncio.create_task(agent.run(stop))
        client = aioredis.Redis.from_url(ingest.redis_url)
        try:
            live, boards = LiveState(client), EtaBoards(client)
            deadline = time.monotonic() + DRIVE_S
            while time.monotonic() < deadline and not _assigned(await live.position(operator_id, bus)):
                await asyncio.sleep(1.0)
            await asyncio.sleep(5.0)  # a few fixes more on the trip, then stop the coach and look
            stop.set()
            await running
            await asyncio.sleep(2.0)  # ingest's last batch
            return await live.position(operator_id, bus), await boards.trip(operator_id, trip_id)
        finally:
            stop.set()
            await running
            await client.aclose()

    position, trips = asyncio.run(drive())
    ingest.terminate("a")

    assert position is not None, "the coach never reached the live state"
    calculated = position.calculated
    assert calculated is not None, "the live position has no trip block"
    assert (calculated.state, calculated.trip_id) == ("assigned", trip_id)
    records = [TRUTH_DECODER.decode(line) for line in truth_file.read_bytes().splitlines()]
    truths = [r for r in records if isinstance(r, TruthPosition) and r.fix]
    truth = min(truths, key=lambda r: abs(r.time_ms - position.time_ms))
    assert truth.time_ms == position.time_ms
    assert calculated.distance_travelled_m is not None
    assert abs(calculated.distance_travelled_m - truth.dist_m) < PROGRESS_TOLERANCE_M
    assert truth.delay_s is not None
    assert calculated.delay_s is not None
    assert abs(calculated.delay_s - truth.delay_s) < DELAY_TOLERANCE_S

    assert len(trips) == 1, "one instance of the trip runs"
    etas = trips[0]
    table = _timetable(trip_id, now_ms - round(delay_s * 1000))
    ahead = [stop for stop, at in zip(table.stop_ids, table.distances_m, strict=True) if at > truth.dist_m]
    assert [s.stop_id for s in etas.stops] == ahead, "an ETA for every stop still ahead, in trip order"
    arrivals = [s.arrival_ms for s in etas.stops]
    assert arrivals == sorted(arrivals)
    assert arrivals[0] >= position.time_ms
    assert calculated.next_stop_id == ahead[0]
