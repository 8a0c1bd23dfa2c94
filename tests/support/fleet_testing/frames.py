"""Hypothesis strategies and factories for frames and keys."""

from __future__ import annotations

import os

from hypothesis import strategies as st

from fleet_schemas import DeviceKey, Frame
from fleet_schemas.frames import EARLIEST_FIX_MS, LATEST_FIX_MS

identifiers = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,15}\Z")
texts = st.characters(exclude_categories=["Cs"], exclude_characters="".join(map(chr, [*range(32), 127])))
"""Characters the wire format allows in free text (fleet_schemas.frames.TEXT_PATTERN)."""


def _floats(low: float, high: float, *, exclude_max: bool = False) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, exclude_max=exclude_max)


def frames(device: str | st.SearchStrategy[str] = identifiers) -> st.SearchStrategy[Frame]:
    """Every valid frame, optional fields present or not."""
    devices = st.just(device) if isinstance(device, str) else device
    return st.builds(
        Frame,
        device=devices,
        bus=identifiers,
        seq=st.integers(0, 2**63 - 1),
        time_ms=st.integers(EARLIEST_FIX_MS, LATEST_FIX_MS),
        lat=_floats(-90, 90),
        lon=_floats(-180, 180),
        accuracy_m=st.none() | _floats(0, 100_000),
        speed_mps=st.none() | _floats(0, 150),
        heading_deg=st.none() | _floats(0, 360, exclude_max=True),
        altitude_m=st.none() | _floats(-1_000, 20_000),
        satellites=st.none() | st.integers(0, 255),
        hdop=st.none() | _floats(0, 100),
        ignition=st.none() | st.booleans(),
        door_open=st.none() | st.booleans(),
        passengers=st.none() | st.integers(0, 1_000),
        fuel_pct=st.none() | _floats(0, 100),
        trip_id=st.none() | st.text(texts, min_size=1, max_size=128),
        source=st.sampled_from(["gps", "phone", "sim"]),
        battery_pct=st.none() | _floats(0, 100),
        charging=st.none() | st.booleans(),
    )


def new_key(device: str, key_id: str | None = None) -> DeviceKey:
    """A fresh random key for ``device``."""
    return DeviceKey(key_id=key_id or f"{device}-k1", device=device, secret=os.urandom(32))


def frame(device: str = "dz-bus-01", seq: int = 1, **fields: object) -> Frame:
    """A plausible frame near Algiers' bus station; fields override defaults."""
    values: dict[str, object] = {
        "device": device,
        "bus": "BUS-01",
        "seq": seq,
        "time_ms": 1_795_000_000_000 + seq * 1_000,
        "lat": 36.7525,
        "lon": 3.0420,
        "speed_mps": 12.5,
        "heading_deg": 90.0,
        "satellites": 9,
        "hdop": 0.9,
    }
    values.update(fields)
    return Frame(**values)  # type: ignore[arg-type]
