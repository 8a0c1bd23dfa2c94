"""Drains the outbox to the broker over MQTT 5, QoS 1: live frames first, then the backlog oldest first.

A frame leaves the outbox only after a PUBACK that is a delivery for the
message that carried it (reason code 0x00, see :mod:`fleet_agent.mqtt_client`).
A PUBACK of 0x10 (no matching subscribers: the broker dropped it) or >= 0x80
(a refusal: not authorized, quota exceeded, packet too large…) keeps the
frames; the publisher counts the refusal by reason code, backs off and sends
them again. A lost connection leaves the unacked frames in the outbox too;
they are sent again after the reconnect, and the server removes the
duplicates by (device, seq).

One visible reconnect loop with exponential backoff and full jitter, whose
failure count is forgotten only after a connection stayed up for
``stable_after_s``: a broker that accepts and then drops us at once (a denied
device, another agent with the same client id taking the session over) is not
hammered. A message never encodes larger than ``MAX_MESSAGE_BYTES``: fewer
frames go in it. A retained status message says online (with the backlog and
refusals) and the Last Will says offline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import aiomqtt
import msgspec

from fleet_agent import __version__
from fleet_agent.keys import KeyRing
from fleet_agent.mqtt_client import SESSION_TAKEN_OVER, AckingClient, PubAck
from fleet_agent.outbox import Outbox, StoredFrame
from fleet_schemas import (
    MAX_FRAMES_PER_BATCH,
    MAX_MESSAGE_BYTES,
    DeviceKey,
    DeviceStatus,
    encode_status,
    frames_topic,
    seal_encoded,
    status_topic,
)
from fleet_schemas.backoff import Backoff, sleep_unless_stopped
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
    """frames per message when draining a backlog (at most 2,000, and fewer if the message would pass
    MAX_MESSAGE_BYTES)"""
    backoff_initial_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    backoff_max_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    stable_after_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """a connection that stayed up this long resets the reconnect backoff; a shorter one counts as a
    failure"""

    def __post_init__(self) -> None:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must not be below backoff_initial_s")

    def backoff(self) -> Backoff:
        """A fresh retry policy with these delays (reconnects, refusals, publisher restarts)."""
        return Backoff(self.backoff_initial_s, self.backoff_max_s, stable_after_s=self.stable_after_s)


class Refusal(msgspec.Struct, frozen=True):
    """The last PUBACK that was not a delivery."""

    code: int
    reason: str
    topic_kind: str
    """'frames' or 'status'"""
    time_ms: int


class PublisherState(msgspec.Struct):
    """What the publisher reports: connection, last ack, totals, refusals by reason code."""

    connected: bool = False
    last_ack_ms: int | None = None
    messages_sent: int = 0
    frames_sent: int = 0
    connects: int = 0
    connection_failures: int = 0
    connect_attempts: int = 0
    sessions_taken_over: int = 0
    refused_messages: int = 0
    refusals: dict[str, int] = msgspec.field(default_factory=dict)
    """PUBACKs that were not a delivery, by reason code ('0x10', '0x87', …)"""
    last_refusal: Refusal | None = None
    messages_split: int = 0
    """messages sent with fewer frames than chosen, to stay within MAX_MESSAGE_BYTES"""


def seal_within(bodies: Sequence[bytes], key: DeviceKey, limit: int = MAX_MESSAGE_BYTES) -> tuple[bytes, int]:
    """Sign the longest prefix of ``bodies`` whose message is at most ``limit`` bytes; (message, frames).

    The message is the frames' bytes plus an overhead (headers, key id,
    signature) that only shrinks with fewer frames, so the prefix found from
    the frames' sizes fits; one more frame is tried in case the headers shrank.
    A frame is a few hundred bytes at most (every field is bounded): one always fits.
    """
    message = seal_encoded(bodies, key)
    if len(message) <= limit:
        return message, len(bodies)
    room = limit - (len(message) - sum(len(body) for body in bodies))
    count = 0
    for body in bodies:
        room -= len(body)
        if room < 0:
            break
        count += 1
    count = max(1, count)
    message = seal_encoded(bodies[:count], key)
    longer = seal_encoded(bodies[: count + 1], key)
    return (longer, count + 1) if len(longer) <= limit else (message, count)


def refusal_key(code: int) -> str:
    """The counter name of a reason code: bounded (at most 256), readable next to the MQTT spec."""
    return f"0x{code:02x}"


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
        self._client_id = config.client_id or f"agent-{device}"
        self._outbox = outbox
        self._keys = keys
        self._status = status
        self._batch_frames = max(1, min(config.batch_frames, MAX_FRAMES_PER_BATCH))
        self.state = PublisherState()
        self.wake = asyncio.Event()
        """Set by the producer when a new frame is in the outbox."""

    def _client(self) -> AckingClient:
        offline = DeviceStatus(state="offline", device=self._device, agent_version=__version__)
        tls: ssl.SSLContext | None = None
        if self._broker.tls or self._config.ca_file:
            tls = ssl.create_default_context(cafile=self._config.ca_file)
            if self._config.cert_file:
                tls.load_cert_chain(self._config.cert_file, self._config.key_file)
        return AckingClient(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=self._broker.password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self._status_topic, encode_status(offline), qos=1, retain=True),
            keepalive=self._config.keepalive_s,
            tls_context=tls,
            timeout=30,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, drain, reconnect on failure, until ``stop`` is set."""
        backoff = self._config.backoff()
        while not stop.is_set():
            self.state.connect_attempts += 1
            client = self._client()
            up_since: float | None = None
            try:
                async with client:
                    up_since = time.monotonic()
                    self.state.connected = True
                    self.state.connects += 1
                    log.info("connected to broker", extra={"device": self._device, "host": self._broker.host})
                    await self._publish_status(client)
                    await self._drain(client, stop)
                    await self._publish_status(client, state="offline")
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                self.state.connection_failures += 1
                delay = backoff.next_delay(0.0 if up_since is None else time.monotonic() - up_since)
                self._log_connection_end(exc, client.disconnect_reason, backoff.failures, delay)
            else:
                break  # the drain returns only once stopping
            finally:
                self.state.connected = False
            if stop.is_set():
                break
            await sleep_unless_stopped(stop, delay)

    def _log_connection_end(
        self, exc: Exception, disconnect_reason: int | None, failures: int, delay: float
    ) -> None:
        extra = {
            "device": self._device,
            "client_id": self._client_id,
            "error": str(exc),
            "disconnect_reason": disconnect_reason,
            "failures_in_a_row": failures,
            "retry_in_s": round(delay, 2),
        }
        if disconnect_reason == SESSION_TAKEN_OVER:
            self.state.sessions_taken_over += 1
            log.error("session taken over: another connection logged in with this client id", extra=extra)
        else:
            log.warning("broker connection lost or refused; retrying with backoff", extra=extra)

    async def _drain(self, client: AckingClient, stop: asyncio.Event) -> None:
        # What is in the outbox at connect time is backlog, drained oldest first; frames made after
        # it are live and go first, one small message each, so the map sees the bus now.
        live_cursor = self._outbox.next_seq - 1
        next_status = time.monotonic() + STATUS_EVERY_S
        refused = self._config.backoff()
        while True:
            self.wake.clear()
            # Once stopping, one last pass sends what was made up to the stop, then the drain ends.
            stopping = stop.is_set()
            live = self._outbox.newest(LIVE_FRAMES_PER_MESSAGE, above=live_cursor)
            if live:
                sent = await self._send(client, live, stop, refused)
                if sent:
                    live_cursor = sent[-1].seq
            backlog = self._outbox.oldest(self._batch_frames)
            if backlog:
                await self._send(client, backlog, stop, refused)
            if stopping:
                return
            if time.monotonic() >= next_status:
                await self._publish_status(client)
                next_status = time.monotonic() + STATUS_EVERY_S
            if not live and not backlog:
                await _wait_any(self.wake, stop, client.disconnected, timeout=1.0)
                client.raise_if_disconnected()

    async def _send(
        self, client: AckingClient, frames: list[StoredFrame], stop: asyncio.Event, refused: Backoff
    ) -> list[StoredFrame]:
        """Send a prefix of ``frames`` in one message; the frames delivered.

        None are if the broker did not take the message: then the refusal is
        counted and this waits out the refusal backoff before returning.
        """
        message, count = seal_within([f.body for f in frames], self._keys.current())
        if count < len(frames):
            self.state.messages_split += 1
            frames = frames[:count]
        puback = await client.publish_qos1(self._frames_topic, message)
        if not puback.delivered:
            if self._refused(puback, "frames", len(frames)):
                await self._publish_status(client)  # a new kind of refusal: show it now, not in a minute
            await sleep_unless_stopped(stop, refused.next_delay())
            return []
        refused.reset()
        self._outbox.ack([f.seq for f in frames])
        self.state.last_ack_ms = int(time.time() * 1000)
        self.state.messages_sent += 1
        self.state.frames_sent += len(frames)
        return frames

    def _refused(self, puback: PubAck, topic_kind: str, frames: int) -> bool:
        """Count and log a PUBACK that was not a delivery; True if its code differs from the last one's."""
        last = self.state.last_refusal
        key = refusal_key(puback.code)
        self.state.refused_messages += 1
        self.state.refusals[key] = self.state.refusals.get(key, 0) + 1
        self.state.last_refusal = Refusal(puback.code, puback.reason, topic_kind, int(time.time() * 1000))
        log.warning(
            "broker did not take the message; keeping it",
            extra={
                "device": self._device,
                "topic_kind": topic_kind,
                "reason_code": key,
                "reason": puback.reason,
                "frames": frames,
            },
        )
        return last is None or last.code != puback.code

    async def _publish_status(self, client: AckingClient, state: str = "online") -> None:
        status = self._status()
        if state != status.state:
            status = msgspec.structs.replace(status, state=state)
        puback = await client.publish_qos1(self._status_topic, encode_status(status), retain=True)
        # A retained status is kept by the broker even when nobody listens now (0x10): only a refusal counts.
        if puback.code >= 0x80:
            self._refused(puback, "status", 0)


async def _wait_any(
    first: asyncio.Event, second: asyncio.Event, ended: asyncio.Future[None], timeout: float
) -> None:
    """Wait until either event is set, ``ended`` is done or ``timeout``; ``ended`` is never cancelled."""
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    pending: list[asyncio.Future[Any]] = [*waiters, ended]
    try:
        await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
