"""The MobilityData gtfs-realtime-validator rules our feeds are held to, as checks on a FeedMessage.

Rule texts: CUTR-at-USF / MobilityData gtfs-realtime-validator, RULES.md
(https://github.com/MobilityData/gtfs-realtime-validator/blob/master/RULES.md).
The validator is Java and not runnable here, so each rule is restated as a
check that returns the violations it finds ("E022: ...") rather than
asserting, so a test shows them all at once. Only the rules a producer like
ours can break are here (no alerts, no frequency-based trips).
"""

from __future__ import annotations

from collections import Counter

from google.transit import gtfs_realtime_pb2 as rt

from fleet_serve.gtfsrt_build import StaticIds

POSIX_MIN_S = 946_684_800
"""2000-01-01: an earlier timestamp, or one past POSIX_MAX_S, is not POSIX seconds (E001)"""
POSIX_MAX_S = 4_102_444_800
"""2100-01-01: a millisecond timestamp of today is far beyond it"""


def violations(message: rt.FeedMessage, ids: StaticIds, now_ms: int) -> list[str]:
    """Every rule one feed iteration breaks on its own (the pairwise ones are in ``sequence_violations``)."""
    found: list[str] = []
    header = message.header
    # E048: header timestamp must be populated (gtfs_realtime_version 2.0)
    if not header.HasField("timestamp"):
        found.append("E048: header timestamp not populated")
    # E049: header incrementality must be populated (2.0)
    if not header.HasField("incrementality"):
        found.append("E049: header incrementality not populated")
    now_s = now_ms // 1000
    # W008: the header timestamp should be no older than 65 s
    if now_s - header.timestamp > 65:
        found.append(f"W008: header timestamp {header.timestamp} is {now_s - header.timestamp} s old")
    stamps = [header.timestamp]
    vehicle_ids: list[str] = []
    for entity in message.entity:
        if entity.HasField("vehicle"):
            found += _vehicle(entity.vehicle, ids)
            stamps.append(entity.vehicle.timestamp)
            vehicle_ids.append(entity.vehicle.vehicle.id)
        if entity.HasField("trip_update"):
            found += _trip_update(entity.trip_update, ids)
            stamps.append(entity.trip_update.timestamp)
            stamps += [
                event.time
                for stu in entity.trip_update.stop_time_update
                for event in (stu.arrival, stu.departure)
                if event.HasField("time")
            ]
            vehicle_ids.append(entity.trip_update.vehicle.id)
    for stamp in stamps:
        # E001: every timestamp is POSIX seconds, not milliseconds
        if not POSIX_MIN_S <= stamp <= POSIX_MAX_S:
            found.append(f"E001: {stamp} is not POSIX seconds")
    entity_stamps = [
        entity.vehicle.timestamp if entity.HasField("vehicle") else entity.trip_update.timestamp
        for entity in message.entity
    ]
    for stamp in entity_stamps:
        # E012: the header timestamp is ≥ every entity's
        if stamp > header.timestamp:
            found.append(f"E012: entity timestamp {stamp} after the header's {header.timestamp}")
        # E050: no timestamp more than 60 s ahead of the clock
        if stamp - now_s > 60:
            found.append(f"E050: timestamp {stamp} is {stamp - now_s} s in the future")
        # W008 for the data itself: the brief's "no data older than 65 s"
        if now_s - stamp > 65:
            found.append(f"W008: entity timestamp {stamp} is {now_s - stamp} s old")
    if header.timestamp - now_s > 60:
        found.append(f"E050: header timestamp {header.timestamp} in the future")
    # E052: vehicle.id is unique in a feed
    for vehicle_id, count in Counter(vehicle_ids).items():
        if count > 1:
            found.append(f"E052: vehicle id {vehicle_id} appears {count} times")
    return found


def _trip(trip: rt.TripDescriptor, ids: StaticIds) -> list[str]:
    found = []
    # E003: trip_id exists in the static feed (none of ours is ADDED)
    if trip.trip_id not in ids.route_of_trip:
        found.append(f"E003: trip {trip.trip_id} not in the static feed")
    # E004: route_id exists in the static feed
    elif trip.route_id != ids.route_of_trip[trip.trip_id]:
        found.append(f"E004: route {trip.route_id} is not trip {trip.trip_id}'s")
    return found


def _vehicle(vehicle: rt.VehiclePosition, ids: StaticIds) -> list[str]:
    found = []
    # W001: timestamps populated; W002: vehicle_id populated
    if not vehicle.HasField("timestamp"):
        found.append("W001: vehicle timestamp not populated")
    if not vehicle.vehicle.id:
        found.append("W002: vehicle id not populated")
    # E026: a valid WGS84 position
    position = vehicle.position
    if not (-90 <= position.latitude <= 90 and -180 <= position.longitude <= 180):
        found.append(f"E026: position {position.latitude},{position.longitude} is not WGS84")
    # E027: bearing within 0..360
    if position.HasField("bearing") and not 0 <= position.bearing <= 360:
        found.append(f"E027: bearing {position.bearing}")
    if vehicle.HasField("trip"):
        found += _trip(vehicle.trip, ids)
    # E011: stop_id exists in the static feed
    if vehicle.HasField("stop_id") and vehicle.stop_id not in ids.stops:
        found.append(f"E011: stop {vehicle.stop_id} not in the static feed")
    return found


def _trip_update(update: rt.TripUpdate, ids: StaticIds) -> list[str]:
    found = _trip(update.trip, ids)
    if not update.HasField("timestamp"):
        found.append("W001: trip update timestamp not populated")
    if not update.vehicle.id:
        found.append("W002: trip update vehicle id not populated")
    # E041: a trip update that is not CANCELED has stop_time_updates
    if not update.stop_time_update:
        found.append(f"E041: trip {update.trip.trip_id} has no stop_time_update")
    previous_sequence: int | None = None
    previous_time: int | None = None
    for stu in update.stop_time_update:
        if stu.stop_id not in ids.stops:
            found.append(f"E011: stop {stu.stop_id} not in the static feed")
        # E002: stop_time_updates strictly sorted by stop_sequence
        if previous_sequence is not None and stu.stop_sequence <= previous_sequence:
            found.append(f"E002: stop_sequence {stu.stop_sequence} after {previous_sequence}")
        previous_sequence = stu.stop_sequence
        # E043: an arrival or a departure (none of ours is SKIPPED or NO_DATA)
        if not stu.HasField("arrival") and not stu.HasField("departure"):
            found.append(f"E043: stop {stu.stop_sequence} has neither arrival nor departure")
        for name in ("arrival", "departure"):
            event = getattr(stu, name)
            # E044: an arrival/departure has a time or a delay
            if stu.HasField(name) and not event.HasField("time") and not event.HasField("delay"):
                found.append(f"E044: stop {stu.stop_sequence} {name} has neither time nor delay")
        # E025: departure not before arrival
        if stu.HasField("arrival") and stu.HasField("departure") and stu.departure.time < stu.arrival.time:
            found.append(f"E025: stop {stu.stop_sequence} departs before it arrives")
        # E022: times of sequential stops increase (never equal, never decrease)
        times = [event.time for event in (stu.arrival, stu.departure) if event.HasField("time")]
        if previous_time is not None and times and times[0] <= previous_time:
            found.append(f"E022: stop {stu.stop_sequence} at {times[0]}, not after {previous_time}")
        if times:
            previous_time = times[-1]
    return found


def pairing_violations(vehicles: rt.FeedMessage, trips: rt.FeedMessage) -> list[str]:
    """E047: a trip_id in both feeds is paired with the same vehicle id in both."""
    in_vehicles = {
        entity.vehicle.trip.trip_id: entity.vehicle.vehicle.id
        for entity in vehicles.entity
        if entity.vehicle.HasField("trip")
    }
    found = []
    for entity in trips.entity:
        update = entity.trip_update
        paired = in_vehicles.get(update.trip.trip_id)
        if paired is not None and paired != update.vehicle.id:
            found.append(f"E047: trip {update.trip.trip_id} with {paired} and with {update.vehicle.id}")
    return found


def sequence_violations(previous: rt.FeedMessage, current: rt.FeedMessage) -> list[str]:
    """E017 (content changed, header did not) and E018 (header decreased) between two iterations."""
    found = []
    if current.header.timestamp < previous.header.timestamp:
        found.append(f"E018: header {current.header.timestamp} after {previous.header.timestamp}")
    if current.header.timestamp == previous.header.timestamp and list(current.entity) != list(
        previous.entity
    ):
        found.append(f"E017: content changed under the same header {current.header.timestamp}")
    return found
