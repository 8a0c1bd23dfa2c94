"""The phone front's pure parts: authenticated inputs in ``assess``, and the per-device rate limit."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from fleet_ingest.assess import Authenticated, DeviceInfo, Incoming, assess
from fleet_ingest.ratelimit import RateLimiter
from fleet_processing.filters import FilterPolicy
from fleet_schemas import DeviceKey, Frame

NOW_MS = int(time.time() * 1000)
PHONE = DeviceInfo("sogral", "DZ-16-0007", active=True)
REVOKED = DeviceInfo("sogral", "DZ-16-0008", active=False)


def _no_keys(_: str) -> DeviceKey | None:
    return None


def _devices(device: str) -> DeviceInfo | None:
    return {"phone-7": PHONE, "phone-8": REVOKED}.get(device)


def _frame(device: str = "phone-7", bus: str = "DZ-16-0007", seq: int = 1, lat: float = 36.75) -> Frame:
    return Frame(
        device=device, bus=bus, seq=NOW_MS - seq, time_ms=NOW_MS - seq, lat=lat, lon=3.04, source="phone"
    )


def _one(auth: Authenticated) -> Incoming:
    return Incoming(f"http/osmand/{auth.device}", b"id=phone-7:[token]&lat=36.75", auth)


def test_authenticated_frames_meet_the_same_checks_and_reasons_as_signed_ones() -> None:
    messages = [
        _one(Authenticated("phone-7", "phone-7-t1", [_frame(seq=2), _frame(seq=1)])),
        _one(Authenticated("phone-7", "phone-7-t1", [_frame(bus="DZ-16-0099", seq=3)])),
        _one(Authenticated("phone-7", "phone-7-t1", [_frame(device="phone-9", seq=4)])),
        _one(Authenticated("phone-8", "phone-8-t1", [_frame(device="phone-8", bus="DZ-16-0008")])),
        _one(Authenticated("phone-5", "phone-5-t1", [_frame(device="phone-5")])),
        _one(Authenticated("phone-7", "phone-7-t1", [], "invalid_field", "lat: expected a number, got 'x'")),
    ]
    outcome = assess(messages, _no_keys, _devices, {}, FilterPolicy(), NOW_MS)
    assert [(a.operator, a.key_id, a.frame.seq, a.message) for a in outcome.accepted] == [
        ("sogral", "phone-7-t1", NOW_MS - 2, 0),
        ("sogral", "phone-7-t1", NOW_MS - 1, 0),
    ]
    assert [(r.reason, r.device, r.message) for r in outcome.rejected] == [
        ("bus_mismatch", "phone-7", 1),
        ("device_mismatch", "phone-9", 2),
        ("device_disabled", "phone-8", 3),
        ("device_unknown", "phone-5", 4),
        ("invalid_field", "phone-7", 5),
    ]
    undecodable = outcome.rejected[-1]
    assert (undecodable.seq, undecodable.raw, undecodable.detail) == (
        None,
        b"id=phone-7:[token]&lat=36.75",
        "lat: expected a number, got 'x'",
    )


@given(
    rate=st.floats(0.1, 50),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=200),
)
def test_a_device_never_gets_more_than_its_burst_plus_its_rate(
    rate: float, burst: int, gaps: list[float]
) -> None:
    limiter = RateLimiter(rate, burst)
    now, allowed = 1000.0, 0
    for gap in gaps:
        now += gap
        wait = limiter.wait_s("phone-7", now)
        assert wait >= 0
        allowed += wait == 0
    assert allowed <= burst + rate * (now - 1000.0) + 1e-6


def test_a_refused_device_may_send_again_after_the_wait_it_was_told() -> None:
    limiter = RateLimiter(rate_per_s=0.5, burst=2)
    assert [limiter.wait_s("phone-7", 0.0) for _ in range(2)] == [0.0, 0.0]
    wait = limiter.wait_s("phone-7", 0.0)
    assert wait == 2.0
    assert limiter.wait_s("phone-8", 0.0) == 0.0  # another device has its own bucket
    assert limiter.wait_s("phone-7", wait) == 0.0
