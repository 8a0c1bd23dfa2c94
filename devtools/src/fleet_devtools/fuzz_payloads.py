"""Payloads for the fuzzing campaign: what a buggy or hostile unit (or anyone on the broker) can publish.

Two sources, mixed in one seeded stream:

* Hypothesis strategies over the wire format (:func:`hostile_envelopes`):
  envelopes of the right shape, signed with a registered device's real key so
  they pass the signature and reach the payload decoder and ingest's checks,
  whose values are hostile (NaN, infinities, integers past 64 bits, NUL and
  newlines in identifiers, wrong types, extra fields, wrong versions, key ids
  and signatures). Hypothesis draws a few hundred examples a second here, so
  it draws the seed pool and is never the stream's rate.
* Byte-level mutations, written here because they are a few lines each and no
  library does them on msgpack-in-a-signed-envelope: bit flips, byte sets,
  truncation, splices of two payloads, depth bombs, msgpack integers past 64
  bits, NaN floats, NUL in strings. Each is applied either to the whole
  envelope (the signature then fails, as it must) or to the signed payload,
  re-signed with the device's key so the mutation reaches the batch decoder.

Valid traffic (moving buses, increasing sequence numbers) is mixed in so that
stored frames, duplicates and the teleport check's state are exercised too.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from fleet_schemas import DeviceKey, Envelope, Frame, encode_frame, frames_topic, sign
from fleet_schemas.envelope import MAX_FRAMES_PER_BATCH, MAX_MESSAGE_BYTES
from fleet_schemas.frames import EARLIEST_FIX_MS, LATEST_FIX_MS

OPERATOR = "fuzz"
OTHER_OPERATOR = "fuzz-other"
DEVICES = 6
"""fuzz identities: devices ``fuzz-unit-0..5`` of operator ``fuzz`` on buses ``FUZZ-BUS-0..5``, and one
device of another operator, all with published secrets (they sign nothing but fuzz payloads)."""

METRES_PER_DEGREE = 111_320.0
FAR_FUTURE_MS = 4_070_908_800_000
"""2099-01-01: ``future`` for as long as anyone keeps a corpus"""
_ENVELOPE = msgspec.msgpack.Decoder(Envelope)
_MSGPACK = msgspec.msgpack.Encoder()
_JSON = msgspec.json.Encoder()


@dataclass(frozen=True)
class Identity:
    operator: str
    device: str
    bus: str
    secret: bytes

    @property
    def key(self) -> DeviceKey:
        return DeviceKey(key_id=f"{self.device}-k1", device=self.device, secret=self.secret)

    @property
    def topic(self) -> str:
        return frames_topic(self.operator, self.device)


def identities() -> list[Identity]:
    """The campaign's devices; their secrets are derived from their names, so the corpus replays."""

    def make(operator: str, device: str, bus: str) -> Identity:
        return Identity(
            operator, device, bus, hashlib.sha256(f"fleet fuzz identity {device}".encode()).digest()
        )

    own = [make(OPERATOR, f"fuzz-unit-{n}", f"FUZZ-BUS-{n}") for n in range(DEVICES)]
    return [*own, make(OTHER_OPERATOR, "fuzz-other-unit-0", "FUZZ-OTHER-BUS-0")]


def signed(key: DeviceKey, payload: bytes, *, version: int = 1, key_id: str | None = None) -> bytes:
    """An envelope around ``payload`` bytes with a real signature."""
    envelope = Envelope(version, key.key_id if key_id is None else key_id, payload, sign(key.secret, payload))
    return _MSGPACK.encode(envelope)


HOSTILE_VALUES: tuple[Any, ...] = (
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    1e308,
    -1e-320,
    2**63,
    2**64 - 1,
    -(2**63),
    -1,
    0,
    True,
    None,
    "",
    "\x00",
    "FUZZ-BUS-0\n",
    "FUZZ-BUS-0\x00",
    "é" * 70,
    "x" * 5_000,
    "\u202e",
    b"\xff\xfe",
    [],
    [[[]]],
    {"a": 1},
    "gps\n",
)
"""Values that once hurt, or plausibly would: NaN passes range checks written as ``not x > limit``,
NUL cannot go into PostgreSQL text, a trailing newline passes a ``$``-anchored pattern."""


def _frame_fields(identity: Identity, seq: int, time_ms: int, north_m: float) -> list[Any]:
    frame = Frame(
        device=identity.device,
        bus=identity.bus,
        seq=seq,
        time_ms=time_ms,
        lat=36.7347 + north_m / METRES_PER_DEGREE,
        lon=3.0866,
        accuracy_m=5.0,
        speed_mps=10.0,
        trip_id="T1",
    )
    fields: list[Any] = list(msgspec.msgpack.decode(encode_frame(frame)))
    return fields


def seed_message(people: list[Identity], data: bytes) -> tuple[str, bytes]:
    """The (topic, payload) an atheris input stands for (see :mod:`fleet_devtools.fuzz_atheris`): with the
    first byte's top bit set the rest is a payload to sign, else the whole message; its low bits pick the
    device."""
    head = data[0] if data else 0
    who = people[(head & 0x7F) % len(people)]
    body = data[1:]
    return who.topic, signed(who.key, body) if head & 0x80 else body


# Hypothesis: valid-shaped envelopes with hostile values -------------------------------------------

_any_value = (
    st.sampled_from(HOSTILE_VALUES)
    | st.integers(-(2**64), 2**65)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=20)
    | st.integers(EARLIEST_FIX_MS - 10, LATEST_FIX_MS + 10)
)


@st.composite
def _hostile_frame(draw: st.DrawFn, identity: Identity, now_ms: int) -> list[Any]:
    fields = _frame_fields(
        identity,
        draw(st.integers(0, 2**63 - 1) | st.integers(0, 50)),
        now_ms - draw(st.integers(-200_000, 40 * 86_400_000)),
        draw(st.floats(-50_000, 50_000, allow_nan=False)),
    )
    fields += [None] * (18 - len(fields))
    for _ in range(draw(st.integers(0, 4))):
        index = draw(st.integers(0, len(fields) + 1))
        value = draw(_any_value)
        if index >= len(fields):
            fields.append(value)
        else:
            fields[index] = value
    if draw(st.booleans()):
        fields = fields[: draw(st.integers(0, len(fields)))]
    return fields


@st.composite
def hostile_envelopes(draw: st.DrawFn, people: list[Identity], now_ms: int) -> tuple[str, bytes]:
    """One (topic, envelope) drawn by Hypothesis: right shape, real key, hostile values."""
    signer = draw(st.sampled_from(people))
    topic_owner = draw(st.sampled_from(people)) if draw(st.integers(0, 9)) == 0 else signer
    frames = draw(st.lists(_hostile_frame(signer, now_ms), min_size=0, max_size=5))
    device: Any = signer.device if draw(st.integers(0, 9)) else draw(_any_value)
    batch: list[Any] = [device, frames]
    if draw(st.integers(0, 9)) == 0:
        batch.append(draw(_any_value))
    as_json = draw(st.integers(0, 19)) == 0
    try:
        payload = _JSON.encode(batch) if as_json else _MSGPACK.encode(batch)
    except (TypeError, ValueError, OverflowError):  # a value the encoding has no form for (NaN in JSON)
        payload = _MSGPACK.encode([signer.device, []])
        as_json = False
    version = 1 if draw(st.integers(0, 9)) else draw(st.integers(-(2**63), 2**63 - 1))
    key_id = signer.key.key_id if draw(st.integers(0, 9)) else draw(st.text(max_size=20))
    signature = sign(signer.secret, payload)
    if draw(st.integers(0, 19)) == 0:
        signature = draw(st.binary(max_size=40))
    envelope = Envelope(version, key_id, payload, signature)
    raw = _JSON.encode(envelope) if as_json else _MSGPACK.encode(envelope)
    return topic_owner.topic, raw


def seed_pool(people: list[Identity], count: int, now_ms: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` envelopes drawn by Hypothesis (generation only: no shrinking, no example database)."""
    pool: list[tuple[str, bytes]] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_envelopes(people, now_ms))
    def collect(drawn: tuple[str, bytes]) -> None:
        pool.append(drawn)

    collect()
    return pool


# Byte-level mutations ---------------------------------------------------------------------------

Mutation = Callable[[random.Random, bytes, bytes], bytes]
"""(random, bytes to mutate, another payload to splice from) -> mutated bytes"""


def _flip_bits(rnd: random.Random, data: bytes, _other: bytes) -> bytes:
    out = bytearray(data or b"\x00")
    for _ in range(rnd.randint(1, 4)):
        out[rnd.randrange(len(out))] ^= 1 << rnd.randrange(8)
    return bytes(out)


def _set_bytes(rnd: random.Random, data: bytes, _other: bytes) -> bytes:
    out = bytearray(data or b"\x00")
    for _ in range(rnd.randint(1, 3)):
        out[rnd.randrange(len(out))] = rnd.choice(
            (0x00, 0xFF, 0x7F, 0x80, 0xC0, 0xC1, 0xCB, 0xDC, 0xDD, 0xDF)
        )
    return bytes(out)


def _truncate(rnd: random.Random, data: bytes, _other: bytes) -> bytes:
    return data[: rnd.randrange(len(data) + 1)]


def _splice(rnd: random.Random, data: bytes, other: bytes) -> bytes:
    return data[: rnd.randrange(len(data) + 1)] + other[rnd.randrange(len(other) + 1) :]


def _insert(rnd: random.Random, data: bytes, _other: bytes) -> bytes:
    at = rnd.randrange(len(data) + 1)
    piece = rnd.choice(
        (
            b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # uint64 max
            b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",  # int64 min
            b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",  # NaN
            b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00",  # +inf
            b"\xa3B\x00S",  # a 3-byte str with a NUL
            b"\xa2\xed\xa0",  # a str that is not UTF-8 (a surrogate's first bytes)
            b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
            b"\xdb\xff\xff\xff\xff",  # a str claiming 4 GiB
            b"\xc0",
        )
    )
    return data[:at] + piece + data[at:]


def _depth_bomb(rnd: random.Random, data: bytes, _other: bytes) -> bytes:
    at = rnd.randrange(len(data) + 1)
    return data[:at] + b"\x91" * rnd.choice((100, 10_000, 100_000)) + b"\xc0" + data[at:]


MUTATIONS: tuple[Mutation, ...] = (_flip_bits, _set_bytes, _truncate, _splice, _insert, _depth_bomb)


def mutate(rnd: random.Random, data: bytes, other: bytes) -> bytes:
    """One to three mutations, capped at the largest message ingest takes (the broker refuses more)."""
    for _ in range(rnd.randint(1, 3)):
        data = rnd.choice(MUTATIONS)(rnd, data, other)
    return data[: MAX_MESSAGE_BYTES + 512]


# The stream -------------------------------------------------------------------------------------


@dataclass
class Stream:
    """The seeded campaign stream: each call to :meth:`chunk` gives the next (topic, payload, kind)s."""

    people: list[Identity]
    pool: list[tuple[str, bytes]]
    seed: int
    seq_base: int
    start_ms: int
    """the first valid frame's fix time; each next one of a device is 500 ms later"""
    rnd: random.Random = field(init=False)
    _seq: dict[str, int] = field(init=False, default_factory=dict)
    _pool_next: int = 0
    _too_many: dict[str, bytes] = field(init=False, default_factory=dict)
    _last: dict[str, tuple[list[list[Any]], bytes]] = field(init=False, default_factory=dict)
    """each device's last valid frames and their message, to send again"""
    originals: dict[bytes, bytes] = field(init=False, default_factory=dict)
    """each message sent again -> the valid message it repeats (the reader clears it)"""
    _count: int = 0

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.seed)  # noqa: S311 - a reproducible stream, not a secret

    def _valid(self, identity: Identity, count: int) -> list[list[Any]]:
        frames = []
        for _ in range(count):
            n = self._seq.get(identity.device, 0) + 1
            self._seq[identity.device] = n
            # 10 m each half second up and down a 5 km stretch: never a teleport against its own past.
            north_m = abs((n * 10) % 10_000 - 5_000)
            frames.append(_frame_fields(identity, self.seq_base + n, self.start_ms + n * 500, north_m))
        return frames

    def _too_many_frames(self, identity: Identity) -> bytes:
        """A batch over the frame limit, made once per device and told apart by a trailing field."""
        if identity.device not in self._too_many:
            frames = self._valid(identity, MAX_FRAMES_PER_BATCH + 1)
            self._too_many[identity.device] = _MSGPACK.encode(identity.device) + _MSGPACK.encode(frames)
        self._count += 1
        payload = b"\x93" + self._too_many[identity.device] + _MSGPACK.encode(self._count)
        return signed(identity.key, payload)

    def _hostile_fields(self, identity: Identity) -> list[Any]:
        fields = self._valid(identity, 1)[0]
        fields += [None] * (18 - len(fields))
        for _ in range(self.rnd.randint(1, 3)):
            fields[self.rnd.randrange(len(fields))] = self.rnd.choice(HOSTILE_VALUES)
        return fields

    def _structural(self, identity: Identity) -> tuple[str, bytes]:
        key, rnd = identity.key, self.rnd
        choice = rnd.randrange(11)
        if choice == 0:
            return identity.topic, b"\x91" * rnd.choice((1_000, 100_000)) + b"\xc0"
        if choice == 1:
            return identity.topic, b"[" * rnd.choice((1_000, 100_000))
        if choice == 2:
            return identity.topic, signed(key, b"\x92" + _MSGPACK.encode(identity.device) + b"\x91" * 50_000)
        if choice == 3:
            return identity.topic, self._too_many_frames(identity)
        if choice == 4:
            return identity.topic, signed(key, _MSGPACK.encode([identity.device, []]))
        if choice == 5:
            return identity.topic, b"\x00" * rnd.choice((MAX_MESSAGE_BYTES + 1, 1, 0))
        if choice == 6:
            payload = _JSON.encode([identity.device, self._valid(identity, rnd.randint(1, 3))])
            return identity.topic, _JSON.encode(Envelope(1, key.key_id, payload, sign(key.secret, payload)))
        if choice == 7:  # a valid batch on a topic naming another operator, device or nothing valid
            topic = rnd.choice(
                (
                    frames_topic(OPERATOR, "fuzz-unit-404"),
                    f"fleet/v1/{OPERATOR}/{identity.device}é/frames",  # the broker refuses control characters
                    f"fleet/v1/FUZZ OP/{identity.device}/frames",
                    frames_topic(OTHER_OPERATOR, identity.device),
                )
            )
            return topic, signed(key, _MSGPACK.encode([identity.device, self._valid(identity, 1)]))
        frames = self._valid(identity, 1)
        if choice == 8:
            frames[0][1] = rnd.choice(self.people).bus  # another device's bus
        elif choice == 9:
            frames[0][4:6] = [0.0, 0.0]  # null island: an unset receiver
        else:
            frames[0][3] = FAR_FUTURE_MS  # a clock decades ahead
        return identity.topic, signed(key, _MSGPACK.encode([identity.device, frames]))

    def one(self) -> tuple[str, bytes, str]:
        rnd = self.rnd
        identity = rnd.choice(self.people)
        roll = rnd.random()
        if self._pool_next < len(self.pool) and roll < 0.15:
            topic, raw = self.pool[self._pool_next]
            self._pool_next += 1
            return topic, raw, "hypothesis"
        if roll < 0.27:
            frames = self._valid(identity, rnd.choice((1, 1, 1, 2, 5)))
            raw = signed(identity.key, _MSGPACK.encode([identity.device, frames]))
            self._last[identity.device] = (frames, raw)
            return identity.topic, raw, "valid"
        if roll < 0.30 and identity.device in self._last:
            # A retry (the same frames again: duplicates) or a reused sequence at another fix time.
            frames = [list(f) for f in self._last[identity.device][0]]
            kind = "again"
            if rnd.random() < 0.3:
                frames[0][3] += 1_000
                kind = "reused-seq"
            raw = signed(identity.key, _MSGPACK.encode([identity.device, frames]))
            self.originals[raw] = self._last[identity.device][1]
            return identity.topic, raw, kind
        if roll < 0.50:
            frames = [self._hostile_fields(identity) for _ in range(rnd.randint(1, 3))]
            return identity.topic, signed(identity.key, _MSGPACK.encode([identity.device, frames])), "values"
        if roll < 0.56:
            topic, raw = self._structural(identity)
            return topic, raw, "structural"
        base = self.pool[rnd.randrange(len(self.pool))][1] if self.pool and rnd.random() < 0.5 else None
        if base is None:
            frames = self._valid(identity, rnd.choice((1, 2)))
            base = signed(identity.key, _MSGPACK.encode([identity.device, frames]))
        other = self.pool[rnd.randrange(len(self.pool))][1] if self.pool else base
        if roll < 0.78:
            return identity.topic, mutate(rnd, base, other), "bytes"
        try:
            payload = _ENVELOPE.decode(base).payload
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            payload = base
        return identity.topic, signed(identity.key, mutate(rnd, payload, other)), "signed-bytes"

    def chunk(self, size: int) -> Iterator[tuple[str, bytes, str]]:
        for _ in range(size):
            yield self.one()
