"""``fleet demo``: signed frames from a few buses through the real broker, verified on arrival.

Until the device agent and ingest land this is the whole chain that exists:
sign on the bus side, publish at QoS 1, receive on the server side, verify.
The buses drive straight segments between the Caroubier bus station in
Algiers and Blida's bus station (public coordinates, rounded).
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt

from fleet_devtools.demo_feed import OPERATOR
from fleet_schemas import (
    DeviceKey,
    Frame,
    frames_subscription,
    frames_topic,
    open_envelope,
    parse_topic,
    seal,
)
from fleet_store.mqtt import connect_client

ALGIERS_CAROUBIER = (36.7347, 3.0866)
BLIDA = (36.4700, 2.8277)


def _positions(
    start: tuple[float, float], end: tuple[float, float], count: int
) -> Iterator[tuple[float, float]]:
    for i in range(count):
        f = i / max(count - 1, 1)
        yield start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f


def run_demo(mqtt_url: str, *, buses: int, frames_per_bus: int, echo: Callable[[str], None]) -> int:
    """Publish ``frames_per_bus`` frames for each bus in batches of 10; return how many arrived verified."""
    keys = {
        key.key_id: key
        for key in (
            DeviceKey(f"demo-unit-{n:02d}-k1", f"demo-unit-{n:02d}", os.urandom(32)) for n in range(buses)
        )
    }
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscriber = connect_client(mqtt_url, f"fleet-demo-sub-{os.getpid()}")
    subscriber.on_message = lambda _c, _u, message: inbox.put(message)
    subscriber.subscribe(frames_subscription().replace("+/+", f"{OPERATOR}/+"), qos=1)
    publisher = connect_client(mqtt_url, f"fleet-demo-pub-{os.getpid()}")
    time.sleep(0.3)  # let SUBACK arrive before the first publish
    now_ms = int(time.time() * 1000) - frames_per_bus * 1000
    sent = 0
    try:
        for n, key in enumerate(keys.values()):
            route = (ALGIERS_CAROUBIER, BLIDA) if n % 2 == 0 else (BLIDA, ALGIERS_CAROUBIER)
            frames = [
                Frame(
                    device=key.device,
                    bus=f"DZ-{16 + n:02d}-{100 + n}",
                    seq=seq,
                    time_ms=now_ms + seq * 1000,
                    lat=lat,
                    lon=lon,
                    speed_mps=16.7,
                    satellites=10,
                    hdop=0.8,
                    source="sim",
                )
                for seq, (lat, lon) in enumerate(_positions(*route, frames_per_bus), start=1)
            ]
            for i in range(0, len(frames), 10):
                info = publisher.publish(
                    frames_topic(OPERATOR, key.device), seal(frames[i : i + 10], key), qos=1
                )
                info.wait_for_publish(timeout=10)
                sent += 1
        verified = 0
        for _ in range(sent):
            message = inbox.get(timeout=10)
            batch = open_envelope(message.payload, keys.get, parse_topic(message.topic).device)
            last = batch.frames[-1]
            echo(
                f"verified {len(batch.frames):>3} frames from {batch.device} (key {batch.key_id}), "
                f"seq {batch.frames[0].seq}..{last.seq}, last at {last.lat:.5f},{last.lon:.5f}"
            )
            verified += len(batch.frames)
        return verified
    finally:
        for client in (publisher, subscriber):
            client.loop_stop()
            client.disconnect()
