"""The trip detectors: corridor deviation, stop arrivals and departures, delay bands, trip lifecycle.

CONTRACT (implementation pending: helper "trip events").

They read where progress put the bus at each fix (``Observation.trip``,
a ``fleet_processing.progress.TripAt``), so they follow the same trip
instance, stops and delay as the ETAs.
"""

from __future__ import annotations

import msgspec

from fleet_processing.detection import DetectorPolicy, Observation
from fleet_schemas.events import Event


class TripEventsState(msgspec.Struct, array_like=True, gc=False):
    """What the trip detectors remember of a bus (part of ``fleet_processing.detect.BusState``)."""


def trip_step(
    state: TripEventsState, obs: Observation, operator: str, policy: DetectorPolicy
) -> tuple[TripEventsState, list[Event]]:
    """The trip events of ``obs``."""
    raise NotImplementedError
