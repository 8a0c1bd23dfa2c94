"""A coach at the end of its trip takes the next departure from that terminus, and drives on from there."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fleet_agent.config import SourceConfig
from fleet_agent.fix import Fix
from fleet_devtools.demo_feed import feed_dir
from fleet_devtools.trip_chain import Departures, TripAfterTrip
from fleet_schemas.geo import haversine_m

FEED = feed_dir()


def _algiers_ms(hour: int, minute: int, day: int = 1) -> int:
    """Epoch ms of a wall time in Algiers (UTC+1 all year), December 2026."""
    return int(datetime(2026, 12, day, hour - 1, minute, tzinfo=UTC).timestamp() * 1000)


def test_next_departure_is_the_first_at_or_after_now_and_tomorrows_first_after_the_last() -> None:
    departures = Departures(FEED)
    assert departures.next_from("TLM", _algiers_ms(9, 25)) == "ORN-TLM-in-0930"
    assert departures.next_from("TLM", _algiers_ms(9, 30)) == "ORN-TLM-in-0930"
    assert departures.next_from("TLM", _algiers_ms(17, 31)) == "ORN-TLM-in-0630"
    assert departures.next_from("nowhere", _algiers_ms(9, 25)) is None


def test_a_coach_arriving_at_tlemcen_drives_the_next_trip_back_from_where_it_parked() -> None:
    config = SourceConfig(
        kind="sim", route=str(FEED), trip_id="ORN-TLM-out-0700", speedup=0.0, send_trip_id=True, loop=False
    )
    ended_at = _algiers_ms(9, 25)
    source = TripAfterTrip(
        config, Departures(FEED), start_ms=_algiers_ms(9, 0), bus="B1", clock_ms=lambda: ended_at
    )

    async def drive() -> list[Fix]:
        fixes: list[Fix] = []
        async for fix in source.fixes():
            fixes.append(fix)
            if fix.trip_id == "ORN-TLM-in-0930" and (fix.speed_mps or 0.0) > 5:
                break
        return fixes

    fixes = asyncio.run(drive())
    assert source.trips == ["ORN-TLM-out-0700", "ORN-TLM-in-0930"]
    last_out = max(i for i, f in enumerate(fixes) if f.trip_id == "ORN-TLM-out-0700" or f.trip_id is None)
    first_back = fixes[last_out + 1]
    assert first_back.trip_id == "ORN-TLM-in-0930"
    assert first_back.time_ms >= ended_at
    assert haversine_m(fixes[last_out].lat, fixes[last_out].lon, first_back.lat, first_back.lon) < 50
    assert fixes[-1].time_ms >= _algiers_ms(9, 30)  # it left no earlier than its departure
