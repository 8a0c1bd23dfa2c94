"""Ingest's side of the live state: accepted frames become live positions, Redis's last fixes seed the checks.

The key layout, its scripts and the forward-only compare-and-set are
:mod:`fleet_store.live`'s; this module only translates between ingest's types
(accepted frames, bus tracks) and the :class:`LivePosition` record stored there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fleet_ingest.assess import Accepted, BusKey
from fleet_processing.filters import BusTrack, PreviousFix
from fleet_schemas.live import LivePosition, newest_each
from fleet_schemas.trips import Calculated
from fleet_store.live import LiveState


def newest_positions(
    accepted: Iterable[Accepted], received_ms: int, calculated: Mapping[BusKey, Calculated] | None = None
) -> list[LivePosition]:
    """Each bus's newest accepted frame as its live record, stamped with when the server received it.

    The older frames of a batch never reach Redis, so only one record per bus is
    built (a one-frame-message batch holds about twenty fixes of each bus). It
    carries the bus's trip block from ``calculated``, if any.
    """
    newest = newest_each(accepted, _bus_of, _stamp)
    blocks = calculated or {}
    return [
        LivePosition(
            operator=item.operator,
            bus=f.bus,
            device=f.device,
            seq=f.seq,
            time_ms=f.time_ms,
            lat=f.lat,
            lon=f.lon,
            speed_mps=f.speed_mps,
            heading_deg=f.heading_deg,
            accuracy_m=f.accuracy_m,
            trip_id=f.trip_id,
            received_ms=received_ms,
            calculated=blocks.get(key),
            battery_pct=f.battery_pct,
            charging=f.charging,
        )
        for key, item in newest.items()
        for f in (item.frame,)
    ]


def _bus_of(item: Accepted) -> BusKey:
    return item.operator, item.frame.bus


def _stamp(item: Accepted) -> tuple[int, int]:
    return item.frame.time_ms, item.frame.seq


async def previous(live: LiveState, buses: Iterable[BusKey]) -> dict[BusKey, BusTrack]:
    """The newest fix Redis holds for these buses (for buses this process has not seen yet)."""
    wanted = list(buses)
    states = await live.states(wanted)
    return {
        key: BusTrack(PreviousFix(state.time_ms, state.seq, state.lat, state.lon, state.accuracy_m))
        for key, state in zip(wanted, states, strict=True)
        if state is not None
    }
