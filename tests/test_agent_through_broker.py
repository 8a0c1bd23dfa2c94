"""The device agent against a real Mosquitto: no frame lost through outages, crashes and backlogs."""

from __future__ import annotations

import asyncio
import functools
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from fleet_agent.agent import Agent, frame_from
from fleet_agent.keys import read_key_file
from fleet_agent.outbox import Outbox, OutboxLimits
from fleet_agent.sources import EndedSource, open_source
from fleet_ingest.settings import ServiceUrls
from fleet_schemas import DeviceKey, DeviceStatus, decode_status, status_topic
from fleet_testing.agents import Receiver, agent_config, config_toml
from fleet_testing.broker import PrivateBroker, scratch_dir
from fleet_testing.mqtt import subscribed

pytestmark = pytest.mark.stack

OUTAGE_S = 60.0


def test_broker_down_for_a_minute_loses_no_frame(broker: PrivateBroker, operator_id: str) -> None:
    config, key = agent_config(scratch_dir(), broker.url, operator=operator_id, speedup=10)
    receiver = Receiver(broker.url, operator_id, {key.key_id: key})

    async def scenario() -> tuple[int, int]:
        stop_receiver, stop_agent = asyncio.Event(), asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop_receiver))
        agent = Agent(config, open_source(config.source))
        running = asyncio.create_task(agent.run(stop_agent))
        await receiver.wait_for(config.device, set(range(20)), timeout=30)
        broker.stop()
        await asyncio.sleep(OUTAGE_S)
        produced_during_outage = agent.outbox.count()
        broker.start()
        await asyncio.sleep(2)
        stop_agent.set()
        await running
        produced = Outbox(Path(config.data_dir)).next_seq
        await receiver.wait_for(config.device, set(range(produced)), timeout=60)
        stop_receiver.set()
        await receiving
        return produced, produced_during_outage

    produced, during_outage = asyncio.run(scenario())
    received = receiver.frames[config.device]
    print(
        f"produced {produced} frames ({during_outage} held during the outage), received {len(received)}"
        f" ({len(received) - len(receiver.seqs(config.device))} duplicates)"
    )
    assert during_outage >= OUTAGE_S * 10 * 0.8
    assert receiver.seqs(config.device) == set(range(produced))
    assert receiver.errors == []


def _start_agent_process(config_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleet_agent", "run", "--config", str(config_path)],
        stderr=subprocess.DEVNULL,
    )


def test_agent_killed_mid_batch_leaves_no_gap_and_reuses_no_sequence(
    broker: PrivateBroker, operator_id: str
) -> None:
    directory = scratch_dir()
    config, key = agent_config(directory, broker.url, operator=operator_id, speedup=50, durability="full")
    config_path = directory / "agent.toml"
    config_path.write_bytes(config_toml(config))
    config_path.chmod(0o600)
    receiver = Receiver(broker.url, operator_id, {key.key_id: key})

    async def scenario() -> int:
        stop = asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop))
        for _ in range(3):
            process = _start_agent_process(config_path)
            seen = len(receiver.seqs(config.device))
            deadline = time.monotonic() + 30
            while len(receiver.seqs(config.device)) < seen + 100 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            process.wait()
        process = _start_agent_process(config_path)
        await asyncio.sleep(2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        produced = Outbox(Path(config.data_dir)).next_seq
        await receiver.wait_for(config.device, set(range(produced)), timeout=60)
        stop.set()
        await receiving
        return produced

    produced = asyncio.run(scenario())
    by_seq: dict[int, set[tuple[int, float, float]]] = {}
    for frame in receiver.frames[config.device]:
        by_seq.setdefault(frame.seq, set()).add((frame.time_ms, frame.lat, frame.lon))
    print(f"{produced} frames over 3 kills; {len(receiver.frames[config.device])} received")
    assert set(by_seq) == set(range(produced)), "no gap"
    assert all(len(variants) == 1 for variants in by_seq.values()), "no sequence number used for two frames"
    assert produced > 300


def test_a_day_of_backlog_drains_completely_in_sequence_order(
    stack_urls: ServiceUrls, operator_id: str
) -> None:
    config, key = agent_config(scratch_dir(), stack_urls.mqtt_url, operator=operator_id)
    day = 86_400
    outbox = Outbox(Path(config.data_dir), OutboxLimits(durability="normal"))
    day_ago_ms = int(time.time() * 1000) - day * 1000
    source = open_source(msgspec.structs.replace(config.source, speedup=0), start_ms=day_ago_ms)

    async def fill() -> None:
        async for fix in source.fixes():
            outbox.append(functools.partial(frame_from, config, fix))
            if outbox.next_seq >= day:
                return

    asyncio.run(fill())
    outbox.close()
    receiver = Receiver(stack_urls.mqtt_url, operator_id, {key.key_id: key})

    async def drain() -> float:
        stop = asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await Agent(config, EndedSource()).run(asyncio.Event(), exit_when_drained=True)
        elapsed = time.monotonic() - started
        await receiver.wait_for(config.device, set(range(day)), timeout=120)
        stop.set()
        await receiving
        return elapsed

    elapsed = asyncio.run(drain())
    received = [f.seq for f in receiver.frames[config.device]]
    print(f"drained {day} frames in {elapsed:.1f} s ({day / elapsed:,.0f} frames/s)")
    assert received == sorted(received)
    assert set(received) == set(range(day))


def test_simulate_fifty_buses_every_batch_verifies(stack_urls: ServiceUrls, operator_id: str) -> None:
    directory = scratch_dir()
    keys: dict[str, DeviceKey] = {}
    receiver = Receiver(stack_urls.mqtt_url, operator_id, keys)
    command = [
        "fleet",
        "simulate",
        "--buses",
        "50",
        "--operator",
        operator_id,
        "--duration",
        "8",
        "--speedup",
        "5",
        "--dir",
        str(directory),
    ]

    async def scenario() -> subprocess.Popen[bytes]:
        stop = asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop))
        await asyncio.sleep(0.5)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while process.poll() is None:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        stop.set()
        await receiving
        return process

    process = asyncio.run(scenario())
    out, err = process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    for path in directory.glob("*/key.toml"):
        key = read_key_file(path, path.parent.name)
        keys[key.key_id] = key
    print(out.decode()[-500:])
    assert len(receiver.frames) == 50
    assert receiver.errors == []
    assert receiver.batches >= 50 * 8


def test_status_is_retained_online_then_offline_by_the_last_will(
    broker: PrivateBroker, operator_id: str
) -> None:
    directory = scratch_dir()
    config, _ = agent_config(directory, broker.url, operator=operator_id, speedup=5)
    config_path = directory / "agent.toml"
    config_path.write_bytes(config_toml(config))
    config_path.chmod(0o600)
    topic = status_topic(operator_id, config.device)
    process = _start_agent_process(config_path)
    try:
        online = _retained(broker.url, topic, lambda s: s.state == "online")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    offline = _retained(broker.url, topic, lambda s: s.state == "offline")
    assert online.device == config.device
    assert online.key_id == f"{config.device}-k1"
    assert online.backlog is not None
    assert offline.device == config.device


def _retained(url: str, topic: str, wanted: Callable[[DeviceStatus], bool]) -> DeviceStatus:
    """The retained status on ``topic`` once it satisfies ``wanted`` (the broker keeps the newest)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with subscribed(url, topic) as inbox:
            try:
                status = decode_status(inbox.get(timeout=2).payload)
            except queue.Empty:
                continue
        if wanted(status):
            return status
        time.sleep(0.5)
    raise AssertionError(f"no retained status on {topic} as wanted")
