"""Small live records for tests of what serve sends: one trip instance's ETAs at one stop."""

from __future__ import annotations

from fleet_schemas.trips import StopEta, TripEtas


def trip_etas(
    operator: str,
    trip_id: str,
    bus: str,
    arrival_ms: int,
    *,
    start_time: str = "08:00:00",
    stop_sequence: int = 3,
) -> TripEtas:
    """The prediction of ``trip_id`` (route ``r-TRIP``) at one stop, at ``arrival_ms`` ± a minute."""
    stop = StopEta(
        stop_sequence=stop_sequence,
        stop_id=f"s{stop_sequence}",
        scheduled_arrival_ms=arrival_ms,
        scheduled_departure_ms=arrival_ms,
        arrival_ms=arrival_ms,
        departure_ms=arrival_ms,
        arrival_early_ms=arrival_ms - 60_000,
        arrival_late_ms=arrival_ms + 60_000,
    )
    return TripEtas(
        operator=operator,
        trip_id=trip_id,
        route_id=f"r-{trip_id}",
        start_date="20261201",
        start_time=start_time,
        bus=bus,
        feed_id=1,
        time_ms=arrival_ms,
        updated_ms=arrival_ms,
        delay_s=0.0,
        stops=[stop],
    )
