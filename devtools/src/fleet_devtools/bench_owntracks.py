"""``fleet bench owntracks``: OwnTracks messages through ingest's checks, in messages per second on one core.

Pure code, no server: what an ingest process spends on a batch of OwnTracks
apps' messages before its commit (``fleet_ingest.owntracks.sort_out``:
topic and registry, decryption, JSON, SI frame; then ``assess``: device, bus
and track checks), beside the same for one-frame signed batches (envelope,
HMAC, msgpack) as the yardstick. Messages are what the Android app sends (a
location with extended data, about 300 bytes), from 2,000 apps on 2,000
buses, in batches of 2,000 as ingest takes them; timed in CPU seconds of the
thread (``time.thread_time``, so other processes on the core do not count).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import msgspec

from fleet_devtools.bench_processing import machine
from fleet_devtools.owntracks_app import location
from fleet_ingest.assess import DeviceInfo, Incoming, assess
from fleet_ingest.owntracks import Tracker, sort_out
from fleet_processing.filters import FilterPolicy
from fleet_processing.owntracks import encrypt, secretbox_key
from fleet_schemas import DeviceKey, Frame, frames_topic, seal
from fleet_schemas.owntracks import owntracks_topic

Report = Callable[[str], None]
TARGET_PER_S = 20_000.0
"""encrypted messages a second on one core: 2,000 phones at a fix every 10 s is 200"""
APPS = 2_000
OPERATOR = "bench"


class OwnTracksBench(msgspec.Struct, frozen=True):
    date: str
    machine: str
    messages: int
    plain_per_s: float
    encrypted_per_s: float
    signed_per_s: float
    """one-frame signed batches through the same checks, for comparison"""
    target_per_s: float
    passed: bool


def _per_s(rounds: int, run: Callable[[], object], count: int) -> float:
    run()  # warm
    began = time.thread_time()
    for _ in range(rounds):
        run()
    return rounds * count / (time.thread_time() - began)


def run_owntracks_bench(report: Report, *, rounds: int = 10) -> OwnTracksBench:
    """Time ``rounds`` batches of each kind; ``report`` hears progress."""
    key = secretbox_key("the bench's secret")
    devices = {f"ot-{n}": DeviceInfo(OPERATOR, f"BUS-{n}", active=True) for n in range(APPS)}
    sealed = {f"ot-{n}": Tracker(f"driver-{n}", key) for n in range(APPS)}
    plain = {f"ot-{n}": Tracker(f"driver-{n}", None) for n in range(APPS)}
    tst = int(time.time()) - 60
    locations = [
        (owntracks_topic(f"driver-{n}", f"ot-{n}"), location(tst, lat=35.0 + n * 1e-3)) for n in range(APPS)
    ]
    encrypted = [(topic, encrypt(payload, key)) for topic, payload in locations]
    signing = {f"ot-{n}": DeviceKey(f"ot-{n}-k1", f"ot-{n}", os.urandom(32)) for n in range(APPS)}
    signed = [
        Incoming(
            frames_topic(OPERATOR, device),
            seal(
                [Frame(device=device, bus=devices[device].bus, seq=1, time_ms=tst * 1000, lat=35.0, lon=3.0)],
                signing_key,
            ),
        )
        for device, signing_key in signing.items()
    ]
    keys = {k.key_id: k for k in signing.values()}
    policy, now_ms = FilterPolicy(), (tst + 60) * 1000

    def owntracks(messages: list[tuple[str, bytes]], trackers: dict[str, Tracker]) -> Callable[[], object]:
        def run() -> object:
            batch, _ = sort_out(messages, trackers.get, devices.get)
            outcome = assess(batch, keys.get, devices.get, {}, policy, now_ms)
            assert len(outcome.accepted) == APPS, outcome.rejected[:1]
            return outcome

        return run

    def signed_run() -> object:
        outcome = assess(signed, keys.get, devices.get, {}, policy, now_ms)
        assert len(outcome.accepted) == APPS, outcome.rejected[:1]
        return outcome

    report(f"timing {rounds} batches of {APPS:,} plain OwnTracks locations")
    plain_per_s = _per_s(rounds, owntracks(locations, plain), APPS)
    report(f"timing {rounds} batches of {APPS:,} encrypted OwnTracks locations")
    encrypted_per_s = _per_s(rounds, owntracks(encrypted, sealed), APPS)
    report(f"timing {rounds} batches of {APPS:,} one-frame signed batches")
    signed_per_s = _per_s(rounds, signed_run, APPS)
    return OwnTracksBench(
        date=time.strftime("%Y-%m-%d"),
        machine=machine(),
        messages=rounds * APPS,
        plain_per_s=plain_per_s,
        encrypted_per_s=encrypted_per_s,
        signed_per_s=signed_per_s,
        target_per_s=TARGET_PER_S,
        passed=encrypted_per_s >= TARGET_PER_S,
    )


def summary_text(result: OwnTracksBench) -> str:
    verdict = "met" if result.passed else "MISSED"
    return "\n".join(
        [
            f"fleet bench owntracks, {result.date}, {result.machine}",
            f"  {result.messages:,} messages of each kind, up to the commit, CPU time of one core:",
            f"  OwnTracks plain      {result.plain_per_s:>10,.0f} msg/s",
            f"  OwnTracks encrypted  {result.encrypted_per_s:>10,.0f} msg/s"
            f"  (target {result.target_per_s:,.0f}: {verdict})",
            f"  signed, one frame    {result.signed_per_s:>10,.0f} msg/s",
        ]
    )
