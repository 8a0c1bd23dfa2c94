"""The agent publishes over TLS, with a password or a client certificate, and never to an untrusted broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from fleet_agent.agent import Agent
from fleet_agent.config import AgentConfig
from fleet_agent.outbox import Outbox
from fleet_agent.sources import open_source
from fleet_store import stackfile
from fleet_store.settings import ServiceUrls
from fleet_testing.agents import MakeReceiver, Receiver, agent_config
from fleet_testing.broker import PrivateBroker, scratch_dir
from fleet_testing.tls import ThrowawayAuthority

pytestmark = pytest.mark.stack


@pytest.fixture
def tls_broker(stack_urls: ServiceUrls) -> Iterator[tuple[PrivateBroker, int, int]]:
    broker = PrivateBroker()
    password_port, certificate_port = broker.add_tls_listeners()
    broker.start()
    try:
        yield broker, password_port, certificate_port
    finally:
        broker.close()


def _run_until_received(config: AgentConfig, receiver: Receiver, frames: int) -> Agent:
    async def scenario() -> Agent:
        stop_receiver, stop_agent = asyncio.Event(), asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop_receiver))
        agent = Agent(config, open_source(config.source))
        running = asyncio.create_task(agent.run(stop_agent))
        try:
            await receiver.wait_for(config.device, set(range(frames)), timeout=30)
        finally:
            stop_agent.set()
            await running
            stop_receiver.set()
            await receiving
        return agent

    agent = asyncio.run(scenario())
    assert receiver.errors == []
    return agent


def test_agent_publishes_over_tls_with_a_password(
    tls_broker: tuple[PrivateBroker, int, int], operator_id: str, receivers: MakeReceiver
) -> None:
    broker, password_port, _ = tls_broker
    config, key = agent_config(scratch_dir(), broker.url, operator=operator_id)
    tls_url = f"mqtts://{stackfile.MQTT_USER}:{broker.password}@127.0.0.1:{password_port}"
    broker_config = msgspec.structs.replace(
        config.broker, url=tls_url, ca_file=str(broker.directory / "tls/ca.crt")
    )
    receiver = receivers(broker.url, operator_id, {key.key_id: key})
    _run_until_received(msgspec.structs.replace(config, broker=broker_config), receiver, 20)


def test_agent_logs_in_with_a_client_certificate(
    tls_broker: tuple[PrivateBroker, int, int], operator_id: str, receivers: MakeReceiver
) -> None:
    broker, _, certificate_port = tls_broker
    cert, cert_key = broker.authority.issue("unit", stackfile.MQTT_USER)
    config, key = agent_config(scratch_dir(), broker.url, operator=operator_id)
    broker_config = msgspec.structs.replace(
        config.broker,
        url=f"mqtts://127.0.0.1:{certificate_port}",
        ca_file=str(broker.directory / "tls/ca.crt"),
        cert_file=str(cert),
        key_file=str(cert_key),
    )
    receiver = receivers(broker.url, operator_id, {key.key_id: key})
    _run_until_received(msgspec.structs.replace(config, broker=broker_config), receiver, 20)


def test_agent_refuses_a_broker_it_does_not_trust_and_keeps_its_frames(
    tls_broker: tuple[PrivateBroker, int, int], operator_id: str, tmp_path: Path
) -> None:
    broker, password_port, _ = tls_broker
    stranger = ThrowawayAuthority(tmp_path)
    config, _ = agent_config(scratch_dir(), broker.url, operator=operator_id)
    tls_url = f"mqtts://{stackfile.MQTT_USER}:{broker.password}@127.0.0.1:{password_port}"
    broker_config = msgspec.structs.replace(
        config.broker, url=tls_url, ca_file=str(stranger.directory / "ca.crt")
    )

    async def scenario() -> Agent:
        stop = asyncio.Event()
        agent = Agent(msgspec.structs.replace(config, broker=broker_config), open_source(config.source))
        running = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(3)
        stop.set()
        await running
        return agent

    agent = asyncio.run(scenario())
    counters = Outbox(Path(config.data_dir)).counters()
    assert agent.publisher.state.connects == 0
    assert agent.publisher.state.connection_failures >= 1
    assert counters.acked == 0
    assert counters.stored == agent.fixes.framed > 0
