r"""GTFS-realtime feeds from the live state: pure, so the validator's rules are proved on it alone.

From one operator's live positions, its trip predictions (``TripEtas``) and
the ids of its active static feed, build the VehiclePositions and
TripUpdates ``FeedMessage``s (``gtfs-realtime-bindings``). Nothing here reads
a clock, Redis or PostgreSQL: ``now_ms`` and the records come as arguments.
``decode`` and ``to_json`` are the one parsing path, for our feeds (tests,
``?format=json``) and for real producers' samples alike.

What is left out rather than published wrong (MobilityData's
gtfs-realtime-validator rules in brackets):

* records older than 65 s [W008] or more than 60 s ahead of ``now_ms`` [E050];
* positions outside WGS84 [E026]; a bearing outside 0..360 is omitted [E027];
* trips, routes and stops the static feed does not have [E003/E004/E011]: a
  trip update is skipped whole, a vehicle keeps its position without a trip;
* a vehicle's trip while it is more than 200 m off its shape [E029]: it is
  deviating, and we publish no DETOUR alert, so it is shown without a trip;
* a stop time update whose time, in whole seconds, is not after the previous
  stop's [E022], and a trip update left with none [E041].

Speeds are published as measured: coaches pass 26 m/s on motorways, which the
validator warns about [W004]; that is the truth, not an error to clamp.

The header timestamp is derived from the content, never from the clock alone,
so several ``fleet serve`` nodes reading the same Redis answer the same
header [E017/E018]: it is the newest "event" among the records, an event being
a record's update (its fix or, later, its receipt) or, for a record that went
stale, the moment it left the feed (its fix time + 65 s). That moment is
what moves the header when a vehicle drops out with no other change. With
nothing fresh at all, it is ``now - 65 s``, so it is never older than W008
allows; with fresh content, that floor never exceeds the content's own times.

That candidate alone cannot make the header move on every change: a vehicle
dropping out while a newer update is in the feed changes the content and
not the newest event. So the served header is :func:`stamp`\ ed against the
last one served for that feed, which ``fleet_serve.gtfsrt`` keeps in Redis
(shared by every node): the same content keeps its header, other content
gets one later than it [E017], and none is ever lower [E018].
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.transit import gtfs_realtime_pb2 as rt

from fleet_schemas.gtfs import Feed
from fleet_schemas.live import LivePosition, newest_each, position_stamp
from fleet_schemas.trips import StopEta, TripEtas
from fleet_serve.errors import ApiError

GTFS_RT_VERSION = "2.0"
STALE_MS = 65_000
"""data older than this is not published (validator W008)"""
FUTURE_MS = 60_000
"""data further ahead of the clock than this is not published (validator E050)"""
TRIP_BUFFER_M = 200.0
"""a vehicle further than this off its trip's shape is deviating (validator E029)"""


class FeedDecodeError(ApiError):
    """Bytes that are not a GTFS-realtime FeedMessage (or lack its required header)."""

    code = "gtfsrt_malformed"


def decode(data: bytes) -> rt.FeedMessage:
    """Parse a FeedMessage: what our tests read our feeds and the real samples with."""
    message = rt.FeedMessage()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise FeedDecodeError(f"not a GTFS-realtime FeedMessage: {exc}") from None
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        raise FeedDecodeError(f"a GTFS-realtime FeedMessage lacks required fields: {missing}")
    return message


def to_json(message: rt.FeedMessage) -> dict[str, Any]:
    """The protobuf JSON mapping (camelCase names, 64-bit integers as strings), for ``?format=json``."""
    document: dict[str, Any] = json_format.MessageToDict(message)
    return document


@dataclass(frozen=True, slots=True)
class StaticIds:
    """What the feeds must agree with in the operator's active static feed."""

    feed_id: int
    route_of_trip: Mapping[str, str]
    """trip_id → route_id"""
    stops: frozenset[str]
    """ids of stops with location_type 0 (the only ones stop times may name)"""

    @classmethod
    def from_feed(cls, feed_id: int, feed: Feed) -> StaticIds:
        return cls(
            feed_id=feed_id,
            route_of_trip={trip.trip_id: trip.route_id for trip in feed.trips},
            stops=frozenset(stop.stop_id for stop in feed.stops if stop.location_type == 0),
        )


@dataclass(frozen=True, slots=True)
class _Pairing:
    """Which trip instance each bus is published with, the same in both feeds (E047, E052)."""

    trips: dict[str, _Published]
    """bus → its newest fresh, publishable prediction (one bus per trip_id as well)"""
    bus_of_trip: dict[str, str]
    """trip_id → the bus it is published with"""
    events_ms: list[int]


@dataclass(frozen=True, slots=True)
class _Published:
    etas: TripEtas
    stop_times: list[tuple[StopEta, int, int | None]]
    """what ``_stop_times`` keeps of its stops"""


def vehicle_positions(
    positions: Iterable[LivePosition], etas: Iterable[TripEtas], ids: StaticIds, now_ms: int
) -> rt.FeedMessage:
    """The VehiclePositions feed: one entity per fresh bus, with its trip when it drives one."""
    pairing = _pair(etas, ids, now_ms)
    events = list(pairing.events_ms)
    # a trip update may change a vehicle's trip: it moves this header too (E017)
    entities: list[rt.FeedEntity] = []
    for position in _newest_per_bus(positions):
        fresh, event = _freshness(position.time_ms, position.received_ms, now_ms)
        if event is not None:
            events.append(event)
        if fresh and _valid_coordinates(position):
            entities.append(_vehicle_entity(position, pairing, ids))
    return _message(entities, events, now_ms)


def trip_updates(etas: Iterable[TripEtas], ids: StaticIds, now_ms: int) -> rt.FeedMessage:
    """The TripUpdates feed: one entity per trip instance a fresh bus drives, its upcoming stops."""
    pairing = _pair(etas, ids, now_ms)
    entities = [_trip_entity(published, ids) for _, published in sorted(pairing.trips.items())]
    return _message(entities, pairing.events_ms, now_ms)


def _pair(etas: Iterable[TripEtas], ids: StaticIds, now_ms: int) -> _Pairing:
    """Keep each bus's newest fresh prediction of a known trip, and each trip_id's newest bus."""
    events: list[int] = []
    by_bus: dict[str, _Published] = {}
    for trip in etas:
        fresh, event = _freshness(trip.time_ms, trip.updated_ms, now_ms)
        if event is not None:
            events.append(event)
        if not fresh or trip.trip_id not in ids.route_of_trip:
            continue
        held = by_bus.get(trip.bus)
        if held is None or _recency(trip) > _recency(held.etas):
            stop_times = _stop_times(trip.stops, ids)
            if stop_times:
                by_bus[trip.bus] = _Published(trip, stop_times)
    by_trip: dict[str, _Published] = {}
    for published in by_bus.values():
        held = by_trip.get(published.etas.trip_id)
        if held is None or _recency(published.etas) > _recency(held.etas):
            by_trip[published.etas.trip_id] = published
    return _Pairing(
        {p.etas.bus: p for p in by_trip.values()}, {t: p.etas.bus for t, p in by_trip.items()}, events
    )


def _recency(trip: TripEtas) -> tuple[int, int, str]:
    return (trip.time_ms, trip.updated_ms, trip.bus)


def _freshness(time_ms: int, updated_ms: int | None, now_ms: int) -> tuple[bool, int | None]:
    """Whether a record is published, and the moment (ms) it last changed the feed, if not ahead."""
    if time_ms > now_ms + FUTURE_MS:
        return False, None
    if now_ms - time_ms > STALE_MS:
        return False, time_ms + STALE_MS
    latest = time_ms if updated_ms is None else max(time_ms, min(updated_ms, now_ms + FUTURE_MS))
    return True, latest


def _newest_per_bus(positions: Iterable[LivePosition]) -> list[LivePosition]:
    newest = newest_each(positions, attrgetter("bus"), position_stamp)
    return [newest[bus] for bus in sorted(newest)]


def _valid_coordinates(position: LivePosition) -> bool:
    return -90.0 <= position.lat <= 90.0 and -180.0 <= position.lon <= 180.0


def _vehicle_entity(position: LivePosition, pairing: _Pairing, ids: StaticIds) -> rt.FeedEntity:
    entity = rt.FeedEntity(id=position.bus)
    vehicle = entity.vehicle
    vehicle.vehicle.id = position.bus
    vehicle.timestamp = position.time_ms // 1000
    vehicle.position.latitude = position.lat
    vehicle.position.longitude = position.lon
    if position.heading_deg is not None and 0.0 <= position.heading_deg <= 360.0:
        vehicle.position.bearing = position.heading_deg
    if position.speed_mps is not None and position.speed_mps >= 0.0:
        vehicle.position.speed = position.speed_mps
    trip = _driven_trip(position, pairing, ids)
    if trip is not None:
        _describe_trip(vehicle.trip, trip.trip_id, ids.route_of_trip[trip.trip_id], trip)
        calculated = position.calculated
        if calculated is not None and calculated.next_stop_id in ids.stops:
            vehicle.stop_id = calculated.next_stop_id
            if calculated.next_stop_sequence is not None:
                vehicle.current_stop_sequence = calculated.next_stop_sequence
            vehicle.current_status = rt.VehiclePosition.IN_TRANSIT_TO
    return entity


@dataclass(frozen=True, slots=True)
class _Instance:
    trip_id: str
    start_date: str
    start_time: str


def _driven_trip(position: LivePosition, pairing: _Pairing, ids: StaticIds) -> _Instance | None:
    """The bus's trip instance if it is assigned, on its shape, and the trip updates agree."""
    calculated = position.calculated
    if (
        calculated is None
        or calculated.state != "assigned"
        or calculated.trip_id is None
        or calculated.start_date is None
        or calculated.start_time is None
        or calculated.trip_id not in ids.route_of_trip
        or (calculated.off_route_m is not None and calculated.off_route_m > TRIP_BUFFER_M)
    ):
        return None
    instance = _Instance(calculated.trip_id, calculated.start_date, calculated.start_time)
    published = pairing.trips.get(position.bus)
    if published is not None:
        predicted = published.etas
        return (
            instance
            if _Instance(predicted.trip_id, predicted.start_date, predicted.start_time) == instance
            else None
        )
    if instance.trip_id in pairing.bus_of_trip:
        return None
    return instance


def _describe_trip(
    descriptor: rt.TripDescriptor, trip_id: str, route_id: str, instance: _Instance | TripEtas
) -> None:
    descriptor.trip_id = trip_id
    descriptor.route_id = route_id
    descriptor.start_date = instance.start_date
    descriptor.start_time = instance.start_time
    descriptor.schedule_relationship = rt.TripDescriptor.SCHEDULED


def _trip_entity(published: _Published, ids: StaticIds) -> rt.FeedEntity:
    trip = published.etas
    entity = rt.FeedEntity(id=f"{trip.trip_id}/{trip.start_date}/{trip.start_time}")
    update = entity.trip_update
    _describe_trip(update.trip, trip.trip_id, ids.route_of_trip[trip.trip_id], trip)
    update.vehicle.id = trip.bus
    update.timestamp = trip.time_ms // 1000
    update.delay = round(trip.delay_s)
    for stop, arrival_s, departure_s in published.stop_times:
        stu = update.stop_time_update.add(stop_sequence=stop.stop_sequence, stop_id=stop.stop_id)
        uncertainty = max(0, round((stop.arrival_late_ms - stop.arrival_early_ms) / 2000))
        stu.arrival.time = arrival_s
        stu.arrival.delay = round((stop.arrival_ms - stop.scheduled_arrival_ms) / 1000)
        stu.arrival.uncertainty = uncertainty
        if departure_s is not None:
            stu.departure.time = departure_s
            stu.departure.delay = round((stop.departure_ms - stop.scheduled_departure_ms) / 1000)
            stu.departure.uncertainty = uncertainty
    return entity


def _stop_times(stops: Sequence[StopEta], ids: StaticIds) -> list[tuple[StopEta, int, int | None]]:
    """The stops to publish with their arrival and departure in POSIX seconds (E001, E002, E022, E025).

    Sorted by stop_sequence, one per sequence; a stop whose arrival second is
    not after the previous one's last second is left out (its prediction is
    the same instant as its neighbour's, in the feed's resolution). A
    departure before the arrival is left out, the arrival kept. An empty list
    when a stop is unknown to the static feed (the trip is then skipped).
    """
    chosen: list[tuple[StopEta, int, int | None]] = []
    last_s: int | None = None
    last_sequence: int | None = None
    for stop in sorted(stops, key=lambda stop: stop.stop_sequence):
        if stop.stop_id not in ids.stops:
            return []
        if last_sequence is not None and stop.stop_sequence <= last_sequence:
            continue
        arrival_s = stop.arrival_ms // 1000
        departure_s: int | None = stop.departure_ms // 1000
        if departure_s is not None and departure_s < arrival_s:
            departure_s = None
        if last_s is not None and arrival_s <= last_s:
            continue
        chosen.append((stop, arrival_s, departure_s))
        last_sequence = stop.stop_sequence
        last_s = arrival_s if departure_s is None else departure_s
    return chosen


def content_digest(message: rt.FeedMessage) -> str:
    """A digest of the entities alone (the header is what gets stamped)."""
    digest = hashlib.sha256()
    for entity in message.entity:
        digest.update(entity.SerializeToString(deterministic=True))
    return digest.hexdigest()


def stamp(held: tuple[str, int] | None, digest: str, candidate_s: int) -> int:
    """The header for content ``digest`` given the last one served (digest, header) for the feed."""
    if held is None:
        return candidate_s
    held_digest, held_s = held
    if held_digest == digest:
        return max(held_s, candidate_s)
    return max(held_s + 1, candidate_s)


def _message(entities: Sequence[rt.FeedEntity], events_ms: Sequence[int], now_ms: int) -> rt.FeedMessage:
    message = rt.FeedMessage()
    message.header.gtfs_realtime_version = GTFS_RT_VERSION
    message.header.incrementality = rt.FeedHeader.FULL_DATASET
    message.header.timestamp = max([now_ms - STALE_MS, *events_ms]) // 1000
    message.entity.extend(entities)
    return message
