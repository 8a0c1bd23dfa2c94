"""Ingest's side of the live state: accepted frames become live positions, Redis's last fixes seed the checks.

The key layout, its scripts and the forward-only compare-and-set are
:mod:`fleet_store.live`'s; this module only translates between ingest's types
(accepted frames, bus tracks) and the :class:`LivePosition` record stored there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from fleet_ingest.assess import Accepted, BusKey
from fleet_processing.filters import BusTrack, PreviousFix
from fleet_schemas.live import LivePosition
from fleet_schemas.trips import Calculated
from fleet_store.live import LiveState


def live_positions(accepted: Iterable[Accepted], received_ms: int) -> list[LivePosition]:
    """The live record of each accepted frame, stamped with when the server received it."""
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
        )
        for item in accepted
        for f in (item.frame,)
    ]


def with_trip_blocks(
    positions: list[LivePosition], calculated: Mapping[BusKey, Calculated]
) -> list[LivePosition]:
    """Each bus's newest position with its trip block (older ones of the batch never reach Redis)."""
    if not calculated:
        return positions
    newest: dict[BusKey, int] = {}
    for i, p in enumerate(positions):
        held = newest.get((p.operator, p.bus))
        if held is None or (p.time_ms, p.seq) > (positions[held].time_ms, positions[held].seq):
            newest[(p.operator, p.bus)] = i
    out = list(positions)
    for key, i in newest.items():
        block = calculated.get(key)
        if block is not None:
            out[i] = msgspec.structs.replace(out[i], calculated=block)
    return out


async def previous(live: LiveState, buses: Iterable[BusKey]) -> dict[BusKey, BusTrack]:
    """The newest fix Redis holds for these buses (for buses this process has not seen yet)."""
    wanted = list(buses)
    states = await live.states(wanted)
    return {
        key: BusTrack(PreviousFix(state.time_ms, state.seq, state.lat, state.lon, state.accuracy_m))
        for key, state in zip(wanted, states, strict=True)
        if state is not None
    }
