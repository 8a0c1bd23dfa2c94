"""Coaches on demo-feed trips through a real Mosquitto: trip_id only when told, truth beside the frames."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from fleet_agent.agent import Agent
from fleet_agent.route import Point
from fleet_agent.schedule import load_trip
from fleet_agent.simulator import TRUTH_DECODER, TruthPosition
from fleet_agent.sources import open_source
from fleet_devtools.demo_feed import feed_dir
from fleet_devtools.simulate import trips_running
from fleet_testing.agents import MakeReceiver, agent_config
from fleet_testing.broker import PrivateBroker, scratch_dir

pytestmark = pytest.mark.stack

RUN_S = 6.0
NEAR_SHAPE_M = 30.0


def test_coaches_on_demo_trips_send_real_time_fixes_with_a_trip_id_only_when_told(
    broker: PrivateBroker, operator_id: str, tmp_path: Path, receivers: MakeReceiver
) -> None:
    feed = feed_dir()
    now_ms = int(time.time() * 1000)
    trip_id = (trips_running(str(feed), now_ms) or ["ALG-GHA-out-0700"])[0]
    truth_file = tmp_path / "truth.jsonl"
    agents, keys = [], {}
    for telling in (True, False):
        config, key = agent_config(scratch_dir(), broker.url, operator=operator_id)
        source = msgspec.structs.replace(
            config.source,
            route=str(feed),
            trip_id=trip_id,
            send_trip_id=telling,
            delay_s=120.0,
            speedup=1.0,
            truth_file=str(truth_file),
        )
        config = msgspec.structs.replace(config, source=source)
        agents.append(Agent(config, open_source(source, start_ms=now_ms, bus=config.bus)))
        keys[key.key_id] = key
    receiver = receivers(broker.url, operator_id, keys)

    async def scenario() -> None:
        stop_receiver, stop_agents = asyncio.Event(), asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop_receiver))
        running = [asyncio.create_task(agent.run(stop_agents)) for agent in agents]
        await asyncio.sleep(RUN_S)
        stop_agents.set()
        await asyncio.gather(*running)
        for agent in agents:
            produced = agent.outbox.next_seq
            await receiver.wait_for(agent.config.device, set(range(produced)), timeout=30)
        stop_receiver.set()
        await receiving

    asyncio.run(scenario())
    route = load_trip(feed, trip_id).route
    told, silent = (receiver.frames[agent.config.device] for agent in agents)
    assert len(told) >= RUN_S - 2
    assert len(silent) >= RUN_S - 2
    assert {frame.trip_id for frame in told} == {trip_id}
    assert {frame.trip_id for frame in silent} == {None}
    for frames in (told, silent):  # one a second from the start, in real time (not the schedule's)
        assert sorted(f.time_ms for f in frames) == [now_ms + 1000 * k for k in range(1, len(frames) + 1)]
        for frame in frames:
            assert route.project(Point(frame.lat, frame.lon)).offset_m < NEAR_SHAPE_M
    records = [TRUTH_DECODER.decode(line) for line in truth_file.read_bytes().splitlines()]
    positions = [r for r in records if isinstance(r, TruthPosition)]
    assert {r.bus for r in positions} == {agent.config.bus for agent in agents}
    assert {r.trip_id for r in positions} == {trip_id}
    assert receiver.errors == []
