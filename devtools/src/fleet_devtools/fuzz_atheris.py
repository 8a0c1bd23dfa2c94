"""Coverage-guided fuzzing of the envelope decoder and ingest's checks, in process, with atheris (libFuzzer).

Run ``python -m fleet_devtools.fuzz_atheris CORPUS_DIR -runs=N`` (the ``fuzz``
dependency group: ``uv run --group fuzz``; any libFuzzer flag works). Each
input's first byte says how it travels: with its top bit set, the rest is a
batch payload signed with a fuzz device's real key (so it reaches the batch
decoder and the checks), else the rest is the whole message; the low bits
pick the device. The property: ``assess`` raises nothing and accounts for
the message, as accepted frames or a rejection. libFuzzer keeps the inputs
that reached new code in CORPUS_DIR; ``fleet bench fuzz --seeds CORPUS_DIR``
then publishes them through the real broker into a real ingest.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]
import msgspec

with atheris.instrument_imports():
    from fleet_ingest.assess import DeviceInfo, Incoming, assess
    from fleet_processing.filters import FilterPolicy
    from fleet_schemas import Frame, encode_frame

from fleet_devtools.fuzz_payloads import identities, seed_message, signed

PEOPLE = identities()
KEYS = {p.key.key_id: p.key for p in PEOPLE}
DEVICES = {p.device: DeviceInfo(p.operator, p.bus, True) for p in PEOPLE}
POLICY = FilterPolicy()
NOW_MS = int(time.time() * 1000)


def check(data: bytes) -> None:
    topic, raw = seed_message(PEOPLE, data)
    outcome = assess([Incoming(topic, raw)], KEYS.get, DEVICES.get, {}, POLICY, NOW_MS)
    if not outcome.accepted and not outcome.rejected:
        raise AssertionError("a message neither accepted nor rejected")


def _starting_inputs(folder: Path) -> None:
    """A valid batch both ways, so the search starts past the envelope."""
    who = PEOPLE[0]
    frame = Frame(device=who.device, bus=who.bus, seq=1, time_ms=NOW_MS - 1_000, lat=36.73, lon=3.08)
    payload = msgspec.msgpack.encode([who.device, [msgspec.msgpack.decode(encode_frame(frame))]])
    (folder / "valid-signed").write_bytes(b"\x80" + payload)
    (folder / "valid-envelope").write_bytes(b"\x00" + signed(who.key, payload))


def main() -> None:
    folders = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    for folder in folders[:1]:
        folder.mkdir(parents=True, exist_ok=True)
        if not any(folder.iterdir()):
            _starting_inputs(folder)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
