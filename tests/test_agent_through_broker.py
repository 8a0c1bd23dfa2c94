"""The device agent against a real Mosquitto: no frame lost through outages, crashes and backlogs."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fleet_agent.agent import Agent, frame_from
from fleet_agent.config import AgentConfig
from fleet_agent.fix import Fix
from fleet_agent.keys import read_key_file
from fleet_agent.outbox import Outbox, OutboxLimits
from fleet_agent.sources import EndedSource, open_source
from fleet_schemas import MAX_MESSAGE_BYTES, DeviceKey, DeviceStatus, Frame, decode_status, status_topic
from fleet_store.settings import ServiceUrls
from fleet_testing.agents import MakeReceiver, Receiver, add_login, agent_config, config_toml
from fleet_testing.broker import PrivateBroker, scratch_dir
from fleet_testing.mqtt import subscribed

pytestmark = pytest.mark.stack

OUTAGE_S = 60.0


def test_broker_down_for_a_minute_loses_no_frame(
    broker: PrivateBroker, operator_id: str, receivers: MakeReceiver
) -> None:
    config, key = agent_config(scratch_dir(), broker.url, operator=operator_id, speedup=10)
    receiver = receivers(broker.url, operator_id, {key.key_id: key})

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
    broker: PrivateBroker, operator_id: str, receivers: MakeReceiver
) -> None:
    directory = scratch_dir()
    config, key = agent_config(directory, broker.url, operator=operator_id, speedup=50, durability="full")
    config_path = directory / "agent.toml"
    config_path.write_bytes(config_toml(config))
    config_path.chmod(0o600)
    receiver = receivers(broker.url, operator_id, {key.key_id: key})

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
    stack_urls: ServiceUrls, operator_id: str, receivers: MakeReceiver
) -> None:
    config, key = agent_config(scratch_dir(), stack_urls.mqtt_url, operator=operator_id)
    day = 86_400
    fill_outbox(config, day)
    receiver = receivers(stack_urls.mqtt_url, operator_id, {key.key_id: key})

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


def test_simulate_fifty_buses_every_batch_verifies(
    stack_urls: ServiceUrls, operator_id: str, receivers: MakeReceiver
) -> None:
    directory = scratch_dir()
    keys: dict[str, DeviceKey] = {}
    receiver = receivers(stack_urls.mqtt_url, operator_id, keys)
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


def fill_outbox(config: AgentConfig, count: int, change: Callable[[Frame], Frame] = lambda f: f) -> None:
    """Store ``count`` simulated frames, each passed through ``change``, as the backlog of ``config``."""
    outbox = Outbox(Path(config.data_dir), OutboxLimits(durability="normal"))
    start_ms = int(time.time() * 1000) - count * 1000
    source = open_source(msgspec.structs.replace(config.source, speedup=0), start_ms=start_ms)

    async def fill() -> None:
        async for fix in source.fixes():
            outbox.append(lambda seq, fix=fix: change(frame_from(config, fix, seq)))  # type: ignore[misc]
            if outbox.next_seq >= count:
                return

    asyncio.run(fill())
    outbox.close()


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def _all_delivered(agent: Agent, receiver: Receiver, count: int) -> None:
    """Frames 0..count-1 all arrived and the outbox holds none of them any more."""
    await receiver.wait_for(agent.config.device, set(range(count)), timeout=60)
    await _until(lambda: agent.outbox.count() == 0, 30, "outbox drained")


def _health(config: AgentConfig) -> dict[str, Any]:
    assert config.health_file is not None
    health: dict[str, Any] = msgspec.json.decode(Path(config.health_file).read_bytes())
    return health


def _with_broker(config: AgentConfig, **changes: Any) -> AgentConfig:
    return msgspec.structs.replace(config, broker=msgspec.structs.replace(config.broker, **changes))


def test_frames_dropped_for_want_of_a_subscriber_stay_and_arrive_once_one_subscribes(
    broker: PrivateBroker, operator_id: str, receivers: MakeReceiver
) -> None:
    config, key = agent_config(scratch_dir(), broker.url, operator=operator_id)
    fill_outbox(config, 50)
    receiver = receivers(broker.url, operator_id, {key.key_id: key})
    topic = status_topic(operator_id, config.device)

    async def scenario() -> tuple[int, DeviceStatus]:
        stop_agent, stop_receiver = asyncio.Event(), asyncio.Event()
        agent = Agent(config, EndedSource())
        running = asyncio.create_task(agent.run(stop_agent))
        await _until(lambda: agent.publisher.state.refusals.get("0x10", 0) >= 3, 30, "three PUBACKs of 0x10")
        held = agent.outbox.count()
        status = await asyncio.to_thread(_retained, broker.url, topic, lambda s: s.last_refusal_code == 0x10)
        receiving = asyncio.create_task(receiver.run(stop_receiver))
        await _all_delivered(agent, receiver, 50)
        stop_agent.set()
        await running
        stop_receiver.set()
        await receiving
        return held, status

    held, status = asyncio.run(scenario())
    assert held == 50, "a PUBACK of 0x10 (the broker dropped the message) must not ack the frames"
    assert status.refusals is not None
    assert status.refusals["0x10"] >= 1
    publisher = _health(config)["publisher"]
    assert publisher["refusals"]["0x10"] >= 3
    assert publisher["last_refusal"]["code"] == 0x10
    assert publisher["last_refusal"]["topic_kind"] == "frames"
    assert receiver.errors == []


def test_frames_refused_as_not_authorized_stay_counted_until_the_login_may_send_them(
    broker: PrivateBroker, operator_id: str, receivers: MakeReceiver
) -> None:
    config, key = agent_config(scratch_dir(), broker.url, operator=operator_id)
    login = f"login-{uuid.uuid4().hex[:8]}"
    # This login may write the device's status but not its frames: the broker answers PUBACK 0x87.
    url = add_login(broker, login, uuid.uuid4().hex, [status_topic(operator_id, config.device)])
    denied = _with_broker(config, url=url)
    fill_outbox(config, 30)
    receiver = receivers(broker.url, operator_id, {key.key_id: key})

    async def scenario() -> dict[str, Any]:
        stop_agent, stop_receiver = asyncio.Event(), asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop_receiver))
        agent = Agent(denied, EndedSource())
        running = asyncio.create_task(agent.run(stop_agent))
        await _until(lambda: agent.publisher.state.refusals.get("0x87", 0) >= 2, 30, "two PUBACKs of 0x87")
        stop_agent.set()
        await running
        refused = _health(config)
        # The same outbox under a login that may send the frames: every refused frame is still there.
        await Agent(config, EndedSource()).run(asyncio.Event(), exit_when_drained=True)
        await receiver.wait_for(config.device, set(range(30)), timeout=60)
        stop_receiver.set()
        await receiving
        return refused

    refused = asyncio.run(scenario())
    assert refused["backlog"] == 30, "a PUBACK of 0x87 must not ack the frames"
    assert refused["publisher"]["refusals"]["0x87"] >= 2
    assert refused["publisher"]["last_refusal"]["topic_kind"] == "frames"
    assert receiver.errors == []


def test_a_publisher_killed_by_an_outbox_error_is_restarted_logged_and_shown_in_health(
    broker: PrivateBroker, operator_id: str, caplog: pytest.LogCaptureFixture, receivers: MakeReceiver
) -> None:
    config, key = agent_config(scratch_dir(), broker.url, operator=operator_id)
    fill_outbox(config, 100)
    receiver = receivers(broker.url, operator_id, {key.key_id: key})
    caplog.set_level(logging.ERROR, logger="fleet_agent.agent")

    async def scenario() -> int:
        stop_agent, stop_receiver = asyncio.Event(), asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop_receiver))
        agent = Agent(config, EndedSource())
        # Another connection holds the write lock: the publisher's ack fails with "database is locked".
        lock = sqlite3.connect(Path(config.data_dir) / "outbox.sqlite", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        running = asyncio.create_task(agent.run(stop_agent))
        try:
            await _until(lambda: agent.supervision.restarts >= 1, 60, "the publisher restarted")
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        await _all_delivered(agent, receiver, 100)
        stop_agent.set()
        await running
        stop_receiver.set()
        await receiving
        return agent.supervision.restarts

    restarts = asyncio.run(scenario())
    failures = [r for r in caplog.records if r.getMessage() == "publisher failed; restarting it"]
    assert len(failures) == restarts
    assert all(r.__dict__["error_type"] == "OperationalError" for r in failures)
    assert not any(isinstance(v, bytes | bytearray) for r in failures for v in r.__dict__.values())
    health = _health(config)
    assert health["publisher_restarts"] == restarts
    assert "database is locked" in health["publisher_error"]
    assert health["backlog"] == 0


# With full jitter from 1 s doubling, a 9th attempt within 10 s needs 8 draws from U(0,1), U(0,2),
# U(0,4)… summing under 10 s: probability below 3e-5. Without backoff it is about 20 attempts.
WINDOW_S = 10.0
MAX_ATTEMPTS_IN_WINDOW = 8


def test_a_denied_login_backs_off(broker: PrivateBroker, operator_id: str) -> None:
    wrong_password = broker.url.replace(broker.password, "wrong")
    config, _ = agent_config(scratch_dir(), wrong_password, operator=operator_id)
    config = _with_broker(config, backoff_initial_s=1.0, backoff_max_s=60.0)

    async def scenario() -> Agent:
        stop = asyncio.Event()
        agent = Agent(config, EndedSource())
        running = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(WINDOW_S)
        stop.set()
        await running
        return agent

    state = asyncio.run(scenario()).publisher.state
    print(f"{state.connect_attempts} attempts in {WINDOW_S:.0f} s")
    assert state.connects == 0
    assert 2 <= state.connect_attempts <= MAX_ATTEMPTS_IN_WINDOW


def test_two_agents_with_one_client_id_back_off_and_log_the_takeover(
    broker: PrivateBroker, operator_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    client_id = f"shared-{uuid.uuid4().hex[:8]}"
    configs = [
        _with_broker(
            agent_config(scratch_dir(), broker.url, operator=operator_id)[0],
            client_id=client_id,
            backoff_initial_s=1.0,
            backoff_max_s=60.0,
        )
        for _ in range(2)
    ]
    caplog.set_level(logging.WARNING, logger="fleet_agent.publisher")

    async def scenario() -> list[Agent]:
        stop = asyncio.Event()
        agents = [Agent(config, EndedSource()) for config in configs]
        running = [asyncio.create_task(agent.run(stop)) for agent in agents]
        await asyncio.sleep(WINDOW_S)
        stop.set()
        await asyncio.gather(*running)
        return agents

    states = [agent.publisher.state for agent in asyncio.run(scenario())]
    print([f"{s.connect_attempts} attempts, {s.sessions_taken_over} taken over" for s in states])
    assert all(s.connect_attempts <= MAX_ATTEMPTS_IN_WINDOW for s in states)
    assert sum(s.sessions_taken_over for s in states) >= 1
    taken_over = [r for r in caplog.records if r.getMessage().startswith("session taken over")]
    assert len(taken_over) == sum(s.sessions_taken_over for s in states)
    assert all(r.__dict__["client_id"] == client_id for r in taken_over)


def test_a_message_never_exceeds_max_message_bytes(
    broker: PrivateBroker, operator_id: str, receivers: MakeReceiver
) -> None:
    device = f"unit-{uuid.uuid4().hex}".ljust(64, "x")
    config, key = agent_config(scratch_dir(), broker.url, operator=operator_id, device=device)
    config = _with_broker(config, batch_frames=2_000)
    fill_outbox(config, 3_000, lambda f: msgspec.structs.replace(f, bus="b" * 64, trip_id="t" * 128))
    receiver = receivers(broker.url, operator_id, {key.key_id: key})

    async def scenario() -> Agent:
        stop = asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop))
        agent = Agent(config, EndedSource())
        await agent.run(asyncio.Event(), exit_when_drained=True)
        await receiver.wait_for(device, set(range(3_000)), timeout=60)
        stop.set()
        await receiving
        return agent

    agent = asyncio.run(scenario())
    print(f"largest message {receiver.largest} bytes, {agent.publisher.state.messages_split} split")
    assert receiver.largest <= MAX_MESSAGE_BYTES
    assert agent.publisher.state.messages_split >= 1
    assert receiver.errors == []


def test_a_frame_stored_just_before_stop_is_still_sent(
    broker: PrivateBroker, operator_id: str, receivers: MakeReceiver
) -> None:
    config, key = agent_config(scratch_dir(), broker.url, operator=operator_id)
    receiver = receivers(broker.url, operator_id, {key.key_id: key})

    async def scenario() -> None:
        stop_agent, stop_receiver = asyncio.Event(), asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop_receiver))
        agent = Agent(config, EndedSource())
        running = asyncio.create_task(agent.run(stop_agent))
        await _until(lambda: agent.publisher.state.connected, 30, "connected")
        assert agent.accept(Fix(time_ms=int(time.time() * 1000), lat=36.7, lon=3.0, mode=3)) is not None
        stop_agent.set()  # in the same step: the publisher sees the stop and the frame together
        await running
        await receiver.wait_for(config.device, {0}, timeout=30)
        stop_receiver.set()
        await receiving

    asyncio.run(scenario())
    assert Outbox(Path(config.data_dir)).count() == 0


def test_registered_simulated_buses_log_in_as_their_own_devices(
    broker: PrivateBroker, database_url: str, redis_url: str, operator_id: str, receivers: MakeReceiver
) -> None:
    """``fleet simulate --register`` agents use their device logins, bound to ``agent-<device>``."""
    env = {
        **os.environ,
        "FLEET_MQTT_URL": broker.url,
        "FLEET_DATABASE_URL": database_url,
        "FLEET_REDIS_URL": redis_url,
        "FLEET_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "FLEET_MOSQUITTO_DIR": str(broker.directory),
    }
    receiver = receivers(broker.url, operator_id, {})
    command = ["fleet", "simulate", "--buses", "2", "--operator", operator_id, "--register"]
    command += ["--duration", "6", "--speedup", "4", "--dir", str(scratch_dir())]

    async def scenario() -> subprocess.CompletedProcess[str]:
        stop = asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop))
        await asyncio.sleep(0.5)
        done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True)
        stop.set()
        await receiving
        return done

    done = asyncio.run(scenario())
    assert done.returncode == 0, done.stderr[-2000:]
    # An agent counts a frame acked only on a PUBACK of 0: the broker took it as that device and the
    # receiver's subscription matched (0x87 would mean a refused login or topic, 0x10 no subscriber).
    acked = int(done.stdout.rsplit("; ", 1)[1].split()[0])
    assert acked > 0, done.stdout
