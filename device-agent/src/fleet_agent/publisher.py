"""Drains the outbox to the broker over MQTT 5, QoS 1: live frames first, then the backlog oldest first.

A frame leaves the outbox only after the broker's PUBACK for the message
that carried it (aiomqtt's ``publish`` at QoS 1 returns when paho's
``on_publish`` fires, which for QoS 1 is the PUBACK). A lost connection
leaves the unacked frames in the outbox; they are sent again after the
reconnect, and the server removes the duplicates by (device, seq).

One visible reconnect loop with exponential backoff and full jitter; a
retained status message says online (with the backlog) and the Last Will
says offline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable

import aiomqtt
import msgspec

from fleet_agent import __version__
from fleet_agent.keys import KeyRing
from fleet_agent.outbox import Outbox, StoredFrame
from fleet_schemas import (
    MAX_FRAMES_PER_BATCH,
    DeviceStatus,
    encode_status,
    frames_topic,
    seal_encoded,
    status_topic,
)
from fleet_schemas.broker import BrokerUrl

log = logging.getLogger("fleet_agent.publisher")

LIVE_FRAMES_PER_MESSAGE = 10
STATUS_EVERY_S = 60.0


class BrokerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[broker] in agent.toml: where to publish and how to log in."""

    url: str
    """mqtt://device:password@host:1883 or mqtts://…:8883"""
    ca_file: str | None = None
    cert_file: str | None = None
    """client certificate (PEM), for brokers that authenticate devices by certificate"""
    key_file: str | None = None
    """the client certificate's private key (PEM)"""
    client_id: str | None = None
    keepalive_s: int = 30
    batch_frames: int = 500
    """frames per message when draining a backlog (at most 2,000)"""
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0


class PublisherState(msgspec.Struct):
    """What the publisher reports: connection, last ack, totals."""

    connected: bool = False
    last_ack_ms: int | None = None
    messages_sent: int = 0
    frames_sent: int = 0
    connects: int = 0
    connection_failures: int = 0


class Publisher:
    """One device's link to the broker."""

    def __init__(
        self,
        config: BrokerConfig,
        operator: str,
        device: str,
        outbox: Outbox,
        keys: KeyRing,
        status: Callable[[], DeviceStatus],
    ) -> None:
        self._config = config
        self._broker = BrokerUrl.parse(config.url)
        self._frames_topic = frames_topic(operator, device)
        self._status_topic = status_topic(operator, device)
        self._device = device
        self._outbox = outbox
        self._keys = keys
        self._status = status
        self._batch_frames = max(1, min(config.batch_frames, MAX_FRAMES_PER_BATCH))
        self.state = PublisherState()
        self.wake = asyncio.Event()
        """Set by the producer when a new frame is in the outbox."""

    def _client(self) -> aiomqtt.Client:
        offline = DeviceStatus(state="offline", device=self._device, agent_version=__version__)
        tls: ssl.SSLContext | None = None
        if self._broker.tls or self._config.ca_file:
            tls = ssl.create_default_context(cafile=self._config.ca_file)
            if self._config.cert_file:
                tls.load_cert_chain(self._config.cert_file, self._config.key_file)
        return aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=self._broker.password,
            identifier=self._config.client_id or f"agent-{self._device}",
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self._status_topic, encode_status(offline), qos=1, retain=True),
            keepalive=self._config.keepalive_s,
            tls_context=tls,
            timeout=30,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, drain, reconnect on failure, until ``stop`` is set."""
        delay = self._config.backoff_initial_s
        while not stop.is_set():
            try:
                async with self._client() as client:
                    self.state.connected = True
                    self.state.connects += 1
                    delay = self._config.backoff_initial_s
                    log.info("connected to broker", extra={"device": self._device, "host": self._broker.host})
                    await self._publish_status(client)
                    await self._drain(client, stop)
                    await client.publish(
                        self._status_topic,
                        encode_status(msgspec.structs.replace(self._status(), state="offline")),
                        qos=1,
                        retain=True,
                    )
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                self.state.connection_failures += 1
                log.warning(
                    "broker connection lost or refused; retrying",
                    extra={"device": self._device, "error": str(exc), "retry_in_s": round(delay, 1)},
                )
            finally:
                self.state.connected = False
            if stop.is_set():
                break
            # Full jitter keeps a fleet that lost the broker together from reconnecting in lockstep.
            await _sleep_or_stop(stop, random.uniform(0, delay))  # noqa: S311 - jitter, not security
            delay = min(delay * 2, self._config.backoff_max_s)

    async def _drain(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        # What is in the outbox at connect time is backlog, drained oldest first; frames made after
        # it are live and go first, one small message each, so the map sees the bus now.
        live_cursor = self._outbox.next_seq - 1
        next_status = time.monotonic() + STATUS_EVERY_S
        while not stop.is_set():
            self.wake.clear()
            live = self._outbox.newest(LIVE_FRAMES_PER_MESSAGE, above=live_cursor)
            if live:
                await self._send(client, live)
                live_cursor = live[-1].seq
            backlog = self._outbox.oldest(self._batch_frames)
            if backlog:
                await self._send(client, backlog)
            if time.monotonic() >= next_status:
                await self._publish_status(client)
                next_status = time.monotonic() + STATUS_EVERY_S
            if not live and not backlog:
                await _wait_either(self.wake, stop, timeout=1.0)

    async def _send(self, client: aiomqtt.Client, frames: list[StoredFrame]) -> None:
        message = seal_encoded([f.body for f in frames], self._keys.current())
        await client.publish(self._frames_topic, message, qos=1)
        self._outbox.ack([f.seq for f in frames])
        self.state.last_ack_ms = int(time.time() * 1000)
        self.state.messages_sent += 1
        self.state.frames_sent += len(frames)

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        await client.publish(self._status_topic, encode_status(self._status()), qos=1, retain=True)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return


async def _wait_either(first: asyncio.Event, second: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
