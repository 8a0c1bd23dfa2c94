"""Mixed traffic for ingest scenarios: good frames, the bad kinds real fleets send, and the outcome due."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from fleet_schemas import DeviceKey, Envelope, Frame, frames_topic, seal

START_LAT, START_LON = 36.7347, 3.0866  # Algiers, Caroubier
METRES_PER_DEGREE = 111_320.0


@dataclass
class Traffic:
    """Messages to publish, in order, and the outcome ingest must reach."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    stored: set[tuple[str, int]] = field(default_factory=set)
    """(device, seq) of every good frame: exactly these rows, once each"""
    rejected: Counter[str] = field(default_factory=Counter)
    """bad messages published, by reason (what the rejection metric counts)"""
    stored_rejections: Counter[str] = field(default_factory=Counter)
    """rows due in rejected_frames, by reason: identical bad messages are stored once"""
    rejected_raw: set[bytes] = field(default_factory=set)
    _bad: set[tuple[str, bytes]] = field(default_factory=set)

    def due_rejection(self, reason: str, topic: str, raw: bytes) -> None:
        """Count a bad message published, to be rejected as ``reason``."""
        self.rejected[reason] += 1
        self.rejected_raw.add(raw)
        if (topic, raw) not in self._bad:
            self._bad.add((topic, raw))
            self.stored_rejections[reason] += 1

    newest: dict[str, tuple[str, int]] = field(default_factory=dict)
    """bus -> (device, seq) of its newest good frame: the live position"""
    duplicates: int = 0
    out_of_order: int = 0


def _frame(key: DeviceKey, bus: str, seq: int, now_ms: int, total: int, lane: int) -> Frame:
    """A bus driving north-west at 15 m/s, one fix a second, ending about now."""
    t = seq - total
    return Frame(
        device=key.device,
        bus=bus,
        seq=seq,
        time_ms=now_ms + t * 1_000,
        lat=START_LAT + lane * 0.01 + (15.0 * seq) / METRES_PER_DEGREE,
        lon=START_LON - (5.0 * seq) / METRES_PER_DEGREE,
        speed_mps=15.8,
        heading_deg=342.0,
        satellites=11,
        hdop=0.8,
        accuracy_m=4.0,
        source="sim",
    )


def mixed_traffic(
    operator: str, keys: list[DeviceKey], buses: dict[str, str], frames: int, seed: int = 7
) -> Traffic:
    """About ``frames`` frames, one per message as buses send them live, in the issue's mix.

    Of the messages: 5 % exact duplicates (QoS 1 redeliveries), 2 % good frames
    sent late (out of order), 1 % with a broken signature, 1 % garbage, 1 % on
    another device's topic. Everything else is a good frame in order.
    """
    rng = random.Random(seed)
    traffic = Traffic()
    now_ms = int(time.time() * 1000)
    per_device = max(1, int(frames * 0.92) // len(keys))
    good: list[tuple[str, bytes, Frame]] = []
    for lane, key in enumerate(keys):
        bus = buses[key.device]
        for seq in range(per_device):
            frame = _frame(key, bus, seq, now_ms, per_device, lane)
            good.append((frames_topic(operator, key.device), seal([frame], key), frame))
            traffic.stored.add((key.device, seq))
            traffic.newest[bus] = (key.device, seq)
    rng.shuffle(good)
    good.sort(key=lambda item: item[2].time_ms)  # in time order across buses, as live traffic comes
    late = set(rng.sample(range(len(good)), int(frames * 0.02)))
    in_order = [item for i, item in enumerate(good) if i not in late]
    traffic.messages = [(topic, raw) for topic, raw, _ in in_order]
    traffic.out_of_order = len(late)

    def insert(message: tuple[str, bytes]) -> None:
        traffic.messages.insert(rng.randrange(len(traffic.messages) + 1), message)

    for _ in range(int(frames * 0.05)):
        insert(rng.choice(traffic.messages[: len(in_order)]))
        traffic.duplicates += 1
    for _ in range(int(frames * 0.01)):
        topic, raw, _ = rng.choice(good)
        envelope = msgspec.msgpack.decode(raw, type=Envelope)
        forged = bytearray(envelope.signature)
        forged[rng.randrange(len(forged))] ^= 0x01
        bad = msgspec.msgpack.encode(
            Envelope(envelope.version, envelope.key_id, envelope.payload, bytes(forged))
        )
        insert((topic, bad))
        traffic.due_rejection("bad_signature", topic, bad)
    for _ in range(int(frames * 0.01)):
        garbage = b"\xc1" + rng.randbytes(rng.randrange(1, 200))
        topic = frames_topic(operator, rng.choice(keys).device)
        insert((topic, garbage))
        traffic.due_rejection("undecodable", topic, garbage)
    for _ in range(int(frames * 0.01)):
        topic, raw, frame = rng.choice(good)
        other = rng.choice([k for k in keys if k.device != frame.device])
        insert((frames_topic(operator, other.device), raw))
        traffic.due_rejection("device_mismatch", frames_topic(operator, other.device), raw)
    traffic.messages.extend((topic, raw) for i, (topic, raw, _) in enumerate(good) if i in late)
    return traffic
