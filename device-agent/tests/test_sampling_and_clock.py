"""Sampling policy and fix-time checks (pure)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fleet_agent.clock import GPS_ROLLOVER_MS, ClockPolicy, check_fix_time
from fleet_agent.fix import Fix
from fleet_agent.sampling import SamplerState, SamplingPolicy, sample

NOW = int(datetime(2026, 11, 25, 8, 0, tzinfo=UTC).timestamp() * 1000)
POLICY = ClockPolicy()


def fix(
    t_s: float, *, speed: float = 15.0, lat: float = 36.7, heading: float = 90.0, ignition: bool | None = None
) -> Fix:
    return Fix(
        time_ms=NOW + int(t_s * 1000),
        lat=lat,
        lon=3.0,
        mode=3,
        speed_mps=speed,
        heading_deg=heading,
        ignition=ignition,
    )


def run(policy: SamplingPolicy, fixes: list[Fix]) -> list[Fix]:
    state, sent = SamplerState(), []
    for f in fixes:
        state, send = sample(policy, state, f)
        if send:
            sent.append(f)
    return sent


def test_moving_bus_sends_every_fix_at_one_hertz() -> None:
    fixes = [fix(t, lat=36.7 + t * 1e-4) for t in range(60)]
    assert run(SamplingPolicy(), fixes) == fixes


def test_parked_bus_sends_every_thirty_seconds() -> None:
    policy = SamplingPolicy()
    sent = run(policy, [fix(t, speed=0.0) for t in range(1_000)])
    parked = [f for f in sent if f.time_ms >= NOW + policy.parked_after_s * 1000]
    gaps = [(b.time_ms - a.time_ms) / 1000 for a, b in itertools.pairwise(parked)]
    assert gaps
    assert all(g == 30 for g in gaps)
    assert len(sent) <= policy.parked_after_s + 1 + (1_000 - policy.parked_after_s) / 30


def test_ignition_off_parks_at_once() -> None:
    sent = run(SamplingPolicy(), [fix(t, speed=0.0, ignition=False) for t in range(100)])
    assert len(sent) <= 5


def test_turn_sends_before_the_interval() -> None:
    policy = SamplingPolicy(moving_interval_s=10)
    fixes = [fix(0, heading=90.0), fix(1, heading=91.0), fix(2, heading=130.0)]
    assert run(policy, fixes) == [fixes[0], fixes[2]]


def test_distance_sends_before_the_interval() -> None:
    policy = SamplingPolicy(moving_interval_s=10, distance_m=50)
    fixes = [fix(0), fix(1, lat=36.7002), fix(2, lat=36.7006)]
    assert run(policy, fixes) == [fixes[0], fixes[2]]


def test_current_fix_time_is_kept() -> None:
    assert check_fix_time(POLICY, NOW - 500, NOW) == (NOW - 500, "ok")


def test_rollover_dates_of_2006_and_1999_are_corrected() -> None:
    for periods in (1, 2):
        old = NOW - 1_000 - periods * GPS_ROLLOVER_MS
        assert datetime.fromtimestamp(old / 1000, UTC).year in (2007, 1987)
        assert check_fix_time(POLICY, old, NOW) == (NOW - 1_000, "rollover_corrected")


def test_1980_date_from_a_cold_receiver_is_rejected() -> None:
    gps_epoch = int(datetime(1980, 1, 6, tzinfo=UTC).timestamp() * 1000)
    assert check_fix_time(POLICY, gps_epoch, NOW)[0] is None


def test_future_fix_beyond_tolerance_is_rejected() -> None:
    assert check_fix_time(POLICY, NOW + 121_000, NOW) == (None, "future")
    assert check_fix_time(POLICY, NOW + 119_000, NOW)[1] == "ok"


def test_rollover_is_corrected_even_when_the_system_clock_is_unset() -> None:
    assert check_fix_time(POLICY, NOW - GPS_ROLLOVER_MS, 0) == (NOW, "rollover_corrected")


@given(st.integers(-(2**62), 2**62), st.integers(0, 2**45))
def test_published_time_is_never_far_in_the_future_of_a_set_clock(fix_ms: int, system_ms: int) -> None:
    published, _ = check_fix_time(POLICY, fix_ms, system_ms)
    if published is not None and system_ms >= POLICY.earliest_ms:
        assert published <= system_ms + POLICY.future_tolerance_s * 1000
    if published is not None:
        assert published >= POLICY.earliest_ms


def test_impossible_coordinates_are_counted_and_never_framed(tmp_path: Path) -> None:
    from fleet_agent.agent import Agent
    from fleet_agent.config import AgentConfig, SourceConfig
    from fleet_agent.publisher import BrokerConfig
    from fleet_agent.sources import EndedSource
    from fleet_schemas import DeviceKey
    from fleet_schemas.keyfile import write_key_file

    write_key_file(tmp_path / "key.toml", DeviceKey("u-k1", "u", b"k" * 32))
    config = AgentConfig(
        operator="op",
        device="u",
        bus="B",
        key_file=str(tmp_path / "key.toml"),
        data_dir=str(tmp_path / "data"),
        broker=BrokerConfig(url="mqtt://127.0.0.1:1"),
        source=SourceConfig(kind="sim"),
    )
    agent = Agent(config, EndedSource(), clock=lambda: NOW / 1000)
    assert agent.accept(fix(0, lat=91.5)) is None
    assert agent.accept(Fix(time_ms=NOW, lat=36.7, lon=181.0, mode=3)) is None
    assert agent.accept(fix(1, speed=-3.0)) is None
    assert agent.fixes.rejected_out_of_range == 3
    stored = agent.accept(fix(2))
    assert stored is not None
    assert stored.seq == 0, "a rejected fix uses no sequence number"
