"""The websocket fan-out's pure core: who gets which update, and how much each client may hold.

No I/O and no clock: the shell (:mod:`fleet_serve.live`) feeds it what the
live channels carry and the time, and sends what it queues. Written by hand
because the libraries that fan out (websockets' ``broadcast``, Litestar's
channels) send everything to everyone with no filter index and no
per-bus coalescing.

Routing: every client has one :class:`Filter` (one bus, one trip, a route, an
operator, or a bounding box) and sits in one index by it: dicts by (operator,
bus), (operator, trip), (operator, route) and operator, and for boxes a
hierarchical grid (:class:`BoxIndex`). An update looks up a few dict keys and
one grid cell per level, never every client. Routes are learnt from the ETAs
and events that carry them (and from the static feed, :meth:`Fanout.learn_routes`),
since a position names only its trip.

Backpressure: each client has a bounded queue (:class:`ClientQueue`) that keeps
only the newest position of each bus and the newest ETAs of each trip instance;
events are never coalesced. A queue past its byte budget drops what is new to
it (counted); one that stays full past ``slow_after_ms`` marks its client slow,
and the shell closes it with :data:`CLOSE_SLOW` (3008, Centrifugo's "slow").

Every update is decoded once (typed) and encoded once per format, lazily, by
:class:`Outgoing`, however many clients it goes to.

Message format, version 1 (JSON text frames; binary msgpack frames with
``?format=msgpack``, same shapes). The server sends objects with ``v`` and
``type``, one per frame, or an array of them when a client's queue held
several (a frame per drain, so a busy client gets its updates coalesced per
send instead of one frame each). A client following many buses gets at most
one frame per tick, holding the newest of each bus from that tick: a box or
the whole operator (a map) per ``FLEET_LIVE_TICK_MS`` (100 ms), a route per
``FLEET_LIVE_ROUTE_TICK_MS`` (500 ms); one-bus and one-trip clients get each
update as it comes:

* ``{"v":1,"type":"subscribed","filter":{...}}``: the filter now in force;
* ``{"v":1,"type":"snapshot","positions":[LivePosition...],"etas":[TripEtas...]}``:
  everything the filter covers now, from Redis; it replaces what the client held;
* ``{"v":1,"type":"position","position":LivePosition}``: a bus moved (keep it
  only if its ``(time_ms, seq)`` is newer than the one held: a delta queued
  before the snapshot may be older);
* ``{"v":1,"type":"gone","operator":...,"bus":...}``: a bus left the client's box;
* ``{"v":1,"type":"etas","etas":TripEtas}``: a trip instance's new predictions;
* ``{"v":1,"type":"event","event":Event}``: something happened to a bus;
* ``{"v":1,"type":"offline","event":Event}``: the ``bus_offline`` event: drop the bus;
* ``{"v":1,"type":"error","code":...,"message":...}``: a client message was refused.

The client sends (JSON text): ``{"type":"auth","token":...}`` first unless the
URL has ``?token=``, then ``{"type":"subscribe","operator":...,"bus"|"trip_id"|
"route_id"|"bbox":...}`` as often as it likes (``bbox`` is ``[min_lon, min_lat,
max_lon, max_lat]``; none of them: the whole operator).

What goes to whom: a bus client gets its bus's positions, ETAs and events; a
trip client those of the buses on that trip (ETAs and events of that trip id);
a route client the same for the route; an operator client everything of the
operator; a box client the positions inside its box (and ``gone`` when a bus
leaves it), and the events and offlines of the buses in it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from fleet_schemas.events import Event
from fleet_schemas.live import LivePosition
from fleet_schemas.trips import TripEtas

VERSION = 1
Format = Literal["json", "msgpack"]

CLOSE_SLOW = 3008
"""the client's queue stayed full past the deadline (Centrifugo's code)"""
CLOSE_EXPIRED = 3005
"""the connection's token expired"""
CLOSE_BAD_REQUEST = 3501
"""a message the server cannot read, or no auth message in time"""
CLOSE_UNAUTHORIZED = 3500
"""missing, wrongly signed, expired or revoked token"""
CLOSE_FORBIDDEN = 3503
"""the token does not cover what was asked (role, operator, trip or bus)"""
CLOSE_GOING_AWAY = 1001
"""the server shuts down"""


class FanoutError(Exception):
    """A client message or a live-channel update the fan-out cannot take; ``code`` is stable."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- filters and client messages


BBox = tuple[float, float, float, float]
"""min_lon, min_lat, max_lon, max_lat (degrees)"""


class Filter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one client follows: one of ``bus``, ``trip_id``, ``route_id``, ``bbox``, or the whole operator."""

    operator: str
    bus: str | None = None
    trip_id: str | None = None
    route_id: str | None = None
    bbox: BBox | None = None

    def tick_ms(self, map_ms: int, route_ms: int) -> int:
        """How long this client's updates are gathered into one frame: 0 for one bus or one trip.

        A box or the whole operator is a map, drawn as it moves (``map_ms``); a route's list of coaches
        is read, not watched, so its longer tick (``route_ms``) spares the server a frame per tick per
        route client: at 10,000 clients, route followers got about half of every frame sent.
        """
        if self.bus is not None or self.trip_id is not None:
            return 0
        return route_ms if self.route_id is not None else map_ms

    def __post_init__(self) -> None:
        chosen = [name for name in ("bus", "trip_id", "route_id", "bbox") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(f"a filter follows one thing; got {', '.join(chosen)}")
        if not self.operator:
            raise ValueError("operator is empty")
        if self.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = self.bbox
            if not all(math.isfinite(x) for x in self.bbox):
                raise ValueError("bbox holds a value that is not a finite number")
            if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
                raise ValueError(
                    "bbox must be [min_lon, min_lat, max_lon, max_lat] within ±180/±90, min ≤ max"
                )

    @property
    def kind(self) -> Literal["bus", "trip", "route", "bbox", "operator"]:
        if self.bus is not None:
            return "bus"
        if self.trip_id is not None:
            return "trip"
        if self.route_id is not None:
            return "route"
        if self.bbox is not None:
            return "bbox"
        return "operator"


class Auth(msgspec.Struct, frozen=True, tag="auth", tag_field="type", forbid_unknown_fields=True):
    token: str


class Subscribe(Filter, frozen=True, tag="subscribe", tag_field="type", forbid_unknown_fields=True):
    """A new filter, in force from now on (the connection stays)."""

    def to_filter(self) -> Filter:
        return Filter(
            operator=self.operator, bus=self.bus, trip_id=self.trip_id, route_id=self.route_id, bbox=self.bbox
        )


ClientMessage = Auth | Subscribe
_CLIENT_DECODER = msgspec.json.Decoder(ClientMessage)


def decode_client_message(raw: str | bytes) -> ClientMessage:
    """A client's message, typed; :class:`FanoutError` (``bad_message``) says which field and why."""
    try:
        message: ClientMessage = _CLIENT_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise FanoutError(f"unreadable message: {exc}", "bad_message") from exc
    return message


def inside(bbox: BBox, lon: float, lat: float) -> bool:
    return bbox[0] <= lon <= bbox[2] and bbox[1] <= lat <= bbox[3]


# ---------------------------------------------------------------- messages, encoded once per format


class Subscribed(msgspec.Struct, frozen=True, tag="subscribed", tag_field="type"):
    filter: Filter
    v: int = VERSION


class Snapshot(msgspec.Struct, frozen=True, tag="snapshot", tag_field="type"):
    positions: list[LivePosition]
    etas: list[TripEtas]
    v: int = VERSION


class PositionMessage(msgspec.Struct, frozen=True, tag="position", tag_field="type"):
    position: LivePosition
    v: int = VERSION


class Gone(msgspec.Struct, frozen=True, tag="gone", tag_field="type"):
    operator: str
    bus: str
    v: int = VERSION


class EtasMessage(msgspec.Struct, frozen=True, tag="etas", tag_field="type"):
    etas: TripEtas
    v: int = VERSION


class EventMessage(msgspec.Struct, frozen=True, tag="event", tag_field="type"):
    event: Event
    v: int = VERSION


class Offline(msgspec.Struct, frozen=True, tag="offline", tag_field="type"):
    event: Event
    v: int = VERSION


class ErrorMessage(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    code: str
    message: str
    v: int = VERSION


ServerMessage = (
    Subscribed | Snapshot | PositionMessage | Gone | EtasMessage | EventMessage | Offline | ErrorMessage
)
SERVER_MESSAGE_DECODER = msgspec.json.Decoder(ServerMessage | list[ServerMessage])
"""how a JSON client (the tests, the bench) reads what the server sends"""
SERVER_MESSAGE_MSGPACK_DECODER = msgspec.msgpack.Decoder(ServerMessage | list[ServerMessage])

_JSON = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()


class Outgoing:
    """One message, encoded at most once per format whatever the number of clients it goes to."""

    __slots__ = ("_json", "_msgpack", "message")

    def __init__(self, message: ServerMessage) -> None:
        self.message = message
        self._json: str | None = None
        self._msgpack: bytes | None = None

    def json(self) -> str:
        """JSON as text (what a websocket text frame carries), decoded from msgspec's bytes once."""
        if self._json is None:
            self._json = _JSON.encode(self.message).decode()
        return self._json

    def msgpack(self) -> bytes:
        if self._msgpack is None:
            self._msgpack = _MSGPACK.encode(self.message)
        return self._msgpack

    def __len__(self) -> int:
        """Its size in JSON: what the queue's byte budget counts."""
        return len(self.json())


def frame(items: list[Outgoing], fmt: Format) -> str | bytes:
    """One websocket frame of queued messages (text for JSON): the message alone, or an array of them.

    The array is joined from each message's own encoding (msgpack: an array
    header then the elements), so nothing is encoded again per client.
    """
    if fmt == "json":
        return items[0].json() if len(items) == 1 else "[" + ",".join(item.json() for item in items) + "]"
    if len(items) == 1:
        return items[0].msgpack()
    return _msgpack_array_header(len(items)) + b"".join(item.msgpack() for item in items)


def _msgpack_array_header(n: int) -> bytes:
    """fixarray, array 16 or array 32, as the msgpack spec has them."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


# ---------------------------------------------------------------- per-client bounded queue


class ClientQueue:
    """What a client has yet to receive: newest position per bus, newest ETAs per trip instance, events.

    ``max_bytes`` bounds what it holds (counted in JSON size); an item new to
    a full queue is dropped, a newer position of a bus already queued still
    replaces the older one. ``full_since_ms`` is when it last became full
    (None once drained below the budget).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: dict[Hashable, Outgoing] = {}
        self._bytes = 0
        self._serial = 0
        self.snapshot: Outgoing | None = None
        self._replies: list[Outgoing] = []
        self.paused = False
        """True between a new filter and its snapshot: nothing drains until :meth:`start`"""
        self.full_since_ms: int | None = None
        self.sending_since_ms: int | None = None
        """when the shell took the last drain, until it says it was sent (:meth:`sent`)"""
        self.dropped = 0

    def put(self, key: Hashable | None, item: Outgoing, now_ms: int) -> bool:
        """Queue ``item`` under ``key`` (None: never coalesced); False if dropped for lack of room."""
        if key is None:
            self._serial += 1
            key = ("#", self._serial)
        held = self._items.get(key)
        size = len(item)
        if held is None and self._bytes + size > self.max_bytes:
            self.dropped += 1
            if self.full_since_ms is None:
                self.full_since_ms = now_ms
            return False
        if held is not None:
            self._bytes -= len(held)
        self._items[key] = item
        self._bytes += size
        return True

    def reply(self, item: Outgoing) -> None:
        """An answer to the client's own message (``subscribed``, ``error``): first out, even while paused."""
        self._replies.append(item)

    def start(self, snapshot: Outgoing) -> None:
        """The new filter's snapshot, sent before anything queued; draining resumes."""
        self.snapshot = snapshot
        self.paused = False

    def restart(self) -> None:
        """A new filter: forget what the old one queued and hold everything until its snapshot."""
        self._items.clear()
        self._bytes = 0
        self.snapshot = None
        self.paused = True
        self.full_since_ms = None

    def drain(self, now_ms: int) -> list[Outgoing]:
        """Replies, then the snapshot, then the deltas oldest first, and empty; in flight from ``now_ms``.

        While paused (a new filter waiting for its snapshot) only the replies.
        """
        items, self._replies = self._replies, []
        if self.paused:
            return items
        if self.snapshot is not None:
            items.append(self.snapshot)
            self.snapshot = None
        items += self._items.values()
        self._items.clear()
        self._bytes = 0
        self.full_since_ms = None
        if items:
            self.sending_since_ms = now_ms
        return items

    def sent(self) -> None:
        """The last drain reached the socket."""
        self.sending_since_ms = None

    def stuck_since_ms(self) -> int | None:
        """Since when the client has been behind: full, or its last send not done."""
        marks = [m for m in (self.full_since_ms, self.sending_since_ms) if m is not None]
        return min(marks) if marks else None

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items) + len(self._replies) + (self.snapshot is not None)

    def keys(self) -> Iterator[Hashable]:
        return iter(self._items)


# ---------------------------------------------------------------- clients and the index


@dataclass(eq=False)
class Client:
    """One connection as the fan-out sees it; ``id`` is the shell's."""

    id: int
    fmt: Format
    queue: ClientQueue
    filter: Filter | None = None
    slow: bool = False

    def __hash__(self) -> int:
        return self.id


GRID_LEVELS: tuple[float, ...] = (0.05, 0.5, 5.0, 45.0, 360.0)
"""cell sizes (degrees) of the box index, finest first"""
CELLS_PER_BOX = 16
"""a box sits at the finest level where it covers at most this many cells"""


class BoxIndex:
    """Boxes in a hierarchical grid: each box in the cells of the one level where it covers few.

    A point looks up its one cell on each level (five dict lookups) and
    checks the boxes found there exactly; a box is stored in at most
    :data:`CELLS_PER_BOX` cells, so small and country-wide boxes both cost little.
    """

    def __init__(self) -> None:
        self._cells: dict[tuple[int, int, int], set[Client]] = defaultdict(set)
        self._placed: dict[Client, list[tuple[int, int, int]]] = {}

    @staticmethod
    def _cell(level: int, lon: float, lat: float) -> tuple[int, int, int]:
        size = GRID_LEVELS[level]
        return (level, math.floor((lon + 180.0) / size), math.floor((lat + 90.0) / size))

    def add(self, client: Client, bbox: BBox) -> None:
        self.remove(client)
        for level in range(len(GRID_LEVELS)):
            _, x0, y0 = self._cell(level, bbox[0], bbox[1])
            _, x1, y1 = self._cell(level, bbox[2], bbox[3])
            if (x1 - x0 + 1) * (y1 - y0 + 1) <= CELLS_PER_BOX or level == len(GRID_LEVELS) - 1:
                cells = [(level, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
                break
        for cell in cells:
            self._cells[cell].add(client)
        self._placed[client] = cells

    def remove(self, client: Client) -> None:
        for cell in self._placed.pop(client, ()):
            members = self._cells[cell]
            members.discard(client)
            if not members:
                del self._cells[cell]

    def at(self, operator: str, lon: float, lat: float) -> set[Client]:
        """The clients of ``operator`` whose box holds the point."""
        found: set[Client] = set()
        for level in range(len(GRID_LEVELS)):
            for client in self._cells.get(self._cell(level, lon, lat), ()):
                f = client.filter
                if (
                    f is not None
                    and f.bbox is not None
                    and f.operator == operator
                    and inside(f.bbox, lon, lat)
                ):
                    found.add(client)
        return found


@dataclass
class Stats:
    """Counters the shell turns into metrics."""

    updates: int = 0
    """positions, ETAs and events routed"""
    queued: int = 0
    """messages put in client queues"""
    dropped: int = 0
    """messages a full queue refused"""
    slow: int = 0
    """clients marked slow"""


@dataclass
class Routed:
    """What one live-channel message did: clients with something new, clients now slow."""

    ready: set[Client] = field(default_factory=set)
    slow: set[Client] = field(default_factory=set)


_POSITIONS = msgspec.json.Decoder(list[LivePosition])
_ETAS = msgspec.json.Decoder(list[TripEtas])
_EVENTS = msgspec.json.Decoder(list[Event])


class Fanout:
    """Clients by filter, and the routing of each live update to the ones it concerns."""

    def __init__(self, max_queue_bytes: int = 1 << 20, slow_after_ms: int = 5_000) -> None:
        self.max_queue_bytes = max_queue_bytes
        self.slow_after_ms = slow_after_ms
        self.clients: dict[int, Client] = {}
        self._by_key: dict[tuple[str, str, str], set[Client]] = defaultdict(set)
        """("bus" | "trip" | "route" | "operator", operator, value) → clients"""
        self._boxes = BoxIndex()
        self._where: dict[tuple[str, str], tuple[float, float]] = {}
        """(operator, bus) → (lon, lat) last routed: who held a bus before it moved"""
        self._routes: dict[tuple[str, str], str] = {}
        """(operator, trip_id) → route_id"""
        self.stats = Stats()

    # ------------------------------------------------------------ clients

    def connect(self, client_id: int, fmt: Format = "json") -> Client:
        client = Client(client_id, fmt, ClientQueue(self.max_queue_bytes))
        self.clients[client_id] = client
        return client

    def disconnect(self, client: Client) -> None:
        self._unindex(client)
        self.clients.pop(client.id, None)

    def subscribe(self, client: Client, new: Filter) -> None:
        """Follow ``new`` from now on; the queue holds until the shell gives its snapshot (``start``)."""
        self._unindex(client)
        client.filter = new
        client.queue.restart()
        if new.bbox is not None:
            self._boxes.add(client, new.bbox)
        else:
            self._by_key[_index_key(new)].add(client)

    def _unindex(self, client: Client) -> None:
        old = client.filter
        if old is None:
            return
        if old.bbox is not None:
            self._boxes.remove(client)
        else:
            key = _index_key(old)
            members = self._by_key[key]
            members.discard(client)
            if not members:
                del self._by_key[key]

    def count(self) -> dict[str, int]:
        """Clients by filter kind (``none``: connected, not subscribed yet)."""
        counts: dict[str, int] = defaultdict(int)
        for client in self.clients.values():
            counts[client.filter.kind if client.filter else "none"] += 1
        return dict(counts)

    # ------------------------------------------------------------ what a filter covers (snapshots)

    def route_of(self, operator: str, trip_id: str | None) -> str | None:
        return None if trip_id is None else self._routes.get((operator, trip_id))

    def learn_routes(self, operator: str, routes: Mapping[str, str]) -> None:
        """Trip id → route id of ``operator``'s static feed, so route clients get positions from the start."""
        for trip_id, route_id in routes.items():
            self._routes[(operator, trip_id)] = route_id

    def covers_position(self, f: Filter, p: LivePosition) -> bool:
        if p.operator != f.operator:
            return False
        trip = trip_of(p)
        match f.kind:
            case "bus":
                return p.bus == f.bus
            case "trip":
                return trip == f.trip_id
            case "route":
                return self.route_of(p.operator, trip) == f.route_id
            case "bbox":
                return f.bbox is not None and inside(f.bbox, p.lon, p.lat)
            case _:
                return True

    def covers_etas(self, f: Filter, e: TripEtas) -> bool:
        """Box clients get no ETAs (a map shows buses, not predictions)."""
        if e.operator != f.operator:
            return False
        match f.kind:
            case "bus":
                return e.bus == f.bus
            case "trip":
                return e.trip_id == f.trip_id
            case "route":
                return e.route_id == f.route_id
            case "bbox":
                return False
            case _:
                return True

    def snapshot(self, f: Filter, positions: Iterable[LivePosition], etas: Iterable[TripEtas]) -> Outgoing:
        """The snapshot message of what ``f`` covers among the state read from Redis.

        Where its buses are is remembered when no update has said it yet (a bus
        the client holds must get its ``gone`` when it leaves the box).
        """
        covered = [p for p in positions if self.covers_position(f, p)]
        for p in covered:
            self._where.setdefault((p.operator, p.bus), (p.lon, p.lat))
        return Outgoing(Snapshot(covered, [e for e in etas if self.covers_etas(f, e)]))

    # ------------------------------------------------------------ routing

    def on_message(self, channel: str, data: bytes, now_ms: int) -> Routed:
        """Route what one live channel (``fleet:{op}:positions|etas|events``) carried.

        Raises :class:`FanoutError` (``bad_update``) for a payload that does not decode, and
        (``unknown_channel``) for a channel of another kind; nothing is routed then.
        """
        kind = channel.rsplit(":", 1)[-1]
        try:
            match kind:
                case "positions":
                    return self.route_positions(_POSITIONS.decode(data), now_ms)
                case "etas":
                    return self.route_etas(_ETAS.decode(data), now_ms)
                case "events":
                    return self.route_events(_EVENTS.decode(data), now_ms)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise FanoutError(f"{channel}: {exc}", "bad_update") from exc
        raise FanoutError(f"{channel}: not a live channel", "unknown_channel")

    def route_positions(self, positions: Iterable[LivePosition], now_ms: int) -> Routed:
        routed = Routed()
        for p in positions:
            self.stats.updates += 1
            op, bus = p.operator, p.bus
            trip = trip_of(p)
            targets = self._keyed(op, bus, trip, self.route_of(op, trip))
            boxed = self._boxes.at(op, p.lon, p.lat)
            before = self._where.get((op, bus))
            self._where[(op, bus)] = (p.lon, p.lat)
            key = ("p", op, bus)
            self._put(targets | boxed, key, Outgoing(PositionMessage(p)), now_ms, routed)
            if before is not None:
                left = self._boxes.at(op, *before) - boxed
                if left:
                    self._put(left, key, Outgoing(Gone(op, bus)), now_ms, routed)
        return routed

    def route_etas(self, etas: Iterable[TripEtas], now_ms: int) -> Routed:
        routed = Routed()
        for e in etas:
            self.stats.updates += 1
            self._routes[(e.operator, e.trip_id)] = e.route_id
            targets = self._keyed(e.operator, e.bus, e.trip_id, e.route_id)
            key = ("e", e.operator, e.trip_id, e.start_date, e.start_time)
            self._put(targets, key, Outgoing(EtasMessage(e)), now_ms, routed)
        return routed

    def route_events(self, events: Iterable[Event], now_ms: int) -> Routed:
        routed = Routed()
        for e in events:
            self.stats.updates += 1
            op = e.operator
            if e.trip_id is not None and e.route_id is not None:
                self._routes[(op, e.trip_id)] = e.route_id
            targets = self._keyed(op, e.bus, e.trip_id, e.route_id or self.route_of(op, e.trip_id))
            where = (
                (e.lon, e.lat) if e.lon is not None and e.lat is not None else self._where.get((op, e.bus))
            )
            if where is not None:
                targets |= self._boxes.at(op, *where)
            if e.kind == "bus_offline":
                self._where.pop((op, e.bus), None)
                message: ServerMessage = Offline(e)
            else:
                message = EventMessage(e)
            self._put(targets, None, Outgoing(message), now_ms, routed)
        return routed

    def _keyed(self, operator: str, bus: str, trip: str | None, route: str | None) -> set[Client]:
        found = set(self._by_key.get(("operator", operator, ""), ()))
        found |= self._by_key.get(("bus", operator, bus), set())
        if trip is not None:
            found |= self._by_key.get(("trip", operator, trip), set())
        if route is not None:
            found |= self._by_key.get(("route", operator, route), set())
        return found

    def _put(
        self, clients: set[Client], key: Hashable | None, item: Outgoing, now_ms: int, routed: Routed
    ) -> None:
        for client in clients:
            if client.slow:
                continue
            if client.queue.put(key, item, now_ms):
                self.stats.queued += 1
                routed.ready.add(client)
            else:
                self.stats.dropped += 1
                if self._overdue(client, now_ms):
                    routed.slow.add(client)

    def _overdue(self, client: Client, now_ms: int) -> bool:
        since = client.queue.stuck_since_ms()
        if client.slow or since is None or now_ms - since < self.slow_after_ms:
            return False
        client.slow = True
        self.stats.slow += 1
        return True

    def sweep(self, now_ms: int) -> set[Client]:
        """Clients whose queue has stayed full past the deadline though no update came to find it."""
        return {client for client in self.clients.values() if self._overdue(client, now_ms)}


def trip_of(p: LivePosition) -> str | None:
    """The trip a position is on: processing's assignment first, else what the device said."""
    if p.calculated is not None and p.calculated.trip_id is not None:
        return p.calculated.trip_id
    return p.trip_id


def _index_key(f: Filter) -> tuple[str, str, str]:
    value = {"bus": f.bus, "trip": f.trip_id, "route": f.route_id}.get(f.kind) or ""
    return (f.kind, f.operator, value)
