"""aiomqtt's client, made to tell the agent what the broker answered: PUBACK and DISCONNECT reason codes.

aiomqtt 2.5's ``publish`` returns ``None`` when paho's ``on_publish`` fires,
whatever the PUBACK's reason code, so a broker that dropped the message
(0x10 no matching subscribers) or refused it (0x87 not authorized, 0x95
packet too large, 0x97 quota exceeded…) looks like a delivery. paho 2 with
``CallbackAPIVersion.VERSION2`` (which aiomqtt uses) does pass the reason code
to ``on_publish``, keyed by the packet id that paho's own ``publish`` returns
in its ``MQTTMessageInfo``. So :class:`AckingClient` keeps aiomqtt for the
connection's lifetime (context manager, socket callbacks, CONNACK) and adds
one method, :meth:`AckingClient.publish_qos1`: it publishes through the paho
client that aiomqtt wraps and waits on a future per packet id, which its
override of aiomqtt's ``_on_publish`` resolves with the reason code (then
lets aiomqtt's own bookkeeping run). The wait also ends, with the error the
connection ended with, when the connection drops, instead of waiting for a
timeout.

The same override pattern on ``_on_disconnect`` keeps the reason code of a
DISCONNECT the broker sent, so a session taken over (0x8E) can be told from a
lost socket. Both hooks use aiomqtt 2.5's private names, which the version pin
(``aiomqtt>=2.5.1,<3``) and the tests against the real broker hold in place.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

NO_MATCHING_SUBSCRIBERS = 0x10
SESSION_TAKEN_OVER = 0x8E


class PubAck(msgspec.Struct, frozen=True):
    """The broker's answer to one QoS 1 PUBLISH."""

    code: int
    reason: str

    @property
    def delivered(self) -> bool:
        """Only success (0x00) means the broker passed the message on; 0x10 and >= 0x80 do not."""
        return is_delivery(self.code)


def is_delivery(code: int) -> bool:
    """0x10 means the broker dropped the message for want of a subscriber; >= 0x80 is a refusal."""
    return code < 0x80 and code != NO_MATCHING_SUBSCRIBERS


class AckingClient(aiomqtt.Client):
    """An aiomqtt client whose QoS 1 publish returns the PUBACK reason code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pubacks: dict[int, asyncio.Future[PubAck]] = {}
        self.disconnect_reason: int | None = None
        """The reason code of the last DISCONNECT the broker sent, if it sent one."""

    async def publish_qos1(self, topic: str, payload: bytes, *, retain: bool = False) -> PubAck:
        """Publish at QoS 1 and return the PUBACK; raise MqttError if it cannot be sent or the link drops."""
        self.raise_if_disconnected()
        info = self._client.publish(topic, payload, 1, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        puback: asyncio.Future[PubAck] = self._loop.create_future()
        self._pubacks[info.mid] = puback
        try:
            await asyncio.wait(
                (puback, self._disconnected), timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._pubacks.pop(info.mid, None)
        if puback.done():
            return puback.result()
        self.raise_if_disconnected()
        raise aiomqtt.MqttError("no PUBACK within the timeout")

    def raise_if_disconnected(self) -> None:
        """Raise the error the connection ended with, if it has ended."""
        if self._disconnected.done():
            raise aiomqtt.MqttError("disconnected") from self._disconnected.exception()

    @property
    def disconnected(self) -> asyncio.Future[None]:
        """Done when the connection has ended (never cancel it: it is the client's own)."""
        return self._disconnected

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        puback = self._pubacks.get(mid)
        if puback is not None and not puback.done():
            puback.set_result(PubAck(int(reason_code.value), str(reason_code)))
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            self.disconnect_reason = int(reason_code.value)
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
