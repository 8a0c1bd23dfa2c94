"""The fan-out's core: boxes, trips and slow clients, as properties over random streams of updates."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_schemas.events import Event
from fleet_schemas.live import LivePosition
from fleet_schemas.trips import TripEtas
from fleet_serve.fanout import (
    SERVER_MESSAGE_DECODER,
    SERVER_MESSAGE_MSGPACK_DECODER,
    EtasMessage,
    EventMessage,
    Fanout,
    FanoutError,
    Filter,
    Gone,
    Outgoing,
    PositionMessage,
    ServerMessage,
    Snapshot,
    Subscribe,
    decode_client_message,
    frame,
    inside,
)
from fleet_testing.records import trip_etas

OP = "op1"
BUSES = [f"b{i}" for i in range(12)]
TRIPS = ["t1", "t2", "t3"]

lons = st.floats(2.9, 3.3, allow_nan=False)
lats = st.floats(36.5, 36.9, allow_nan=False)
moves = st.tuples(st.sampled_from(BUSES), lons, lats)


@st.composite
def boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    a, b = sorted((draw(lons), draw(lons)))
    c, d = sorted((draw(lats), draw(lats)))
    return (a, c, b, d)


def _position(bus: str, lon: float, lat: float, seq: int, trip: str | None = None) -> LivePosition:
    return LivePosition(
        operator=OP, bus=bus, device=f"d-{bus}", seq=seq, time_ms=1_000 * seq, lat=lat, lon=lon, trip_id=trip
    )


def _messages(raw: str | bytes) -> list[ServerMessage]:
    decoded = SERVER_MESSAGE_DECODER.decode(raw)
    return decoded if isinstance(decoded, list) else [decoded]


class View:
    """What a map client holds after applying the frames it got, as the docstring tells clients to."""

    def __init__(self) -> None:
        self.buses: dict[str, LivePosition] = {}

    def apply(self, raw: str | bytes) -> None:
        for m in _messages(raw):
            if isinstance(m, Snapshot):
                self.buses = {p.bus: p for p in m.positions}
            elif isinstance(m, PositionMessage):
                held = self.buses.get(m.position.bus)
                if held is None or (m.position.time_ms, m.position.seq) > (held.time_ms, held.seq):
                    self.buses[m.position.bus] = m.position
            elif isinstance(m, Gone):
                self.buses.pop(m.bus, None)


def _deliver(fanout: Fanout, view: View, client_id: int, now_ms: int) -> None:
    client = fanout.clients[client_id]
    items = client.queue.drain(now_ms)
    if items:
        view.apply(frame(items, client.fmt))
        client.queue.sent()


@settings(max_examples=150, deadline=None)
@given(
    first=st.lists(moves, min_size=1, max_size=20),
    steps=st.lists(st.one_of(moves, boxes()), max_size=40),
    box=boxes(),
    drain_every=st.integers(1, 5),
)
def test_a_box_client_holds_exactly_the_buses_inside_its_box_also_after_it_changes(
    first: list[tuple[str, float, float]],
    steps: list[tuple[str, float, float] | tuple[float, float, float, float]],
    box: tuple[float, float, float, float],
    drain_every: int,
) -> None:
    fanout = Fanout()
    truth: dict[str, LivePosition] = {}
    seq = 0

    def move(bus: str, lon: float, lat: float) -> None:
        nonlocal seq
        seq += 1
        truth[bus] = _position(bus, lon, lat, seq)
        fanout.route_positions([truth[bus]], now_ms=seq)

    def resubscribe(bbox: tuple[float, float, float, float]) -> None:
        f = Filter(operator=OP, bbox=bbox)
        fanout.subscribe(client, f)
        client.queue.start(fanout.snapshot(f, truth.values(), []))

    for bus, lon, lat in first:
        move(bus, lon, lat)
    client = fanout.connect(1)
    view = View()
    resubscribe(box)
    for i, step in enumerate(steps):
        if len(step) == 4:
            box = step
            resubscribe(box)
        else:
            move(*step)
        if i % drain_every == 0:
            _deliver(fanout, view, 1, seq)
    _deliver(fanout, view, 1, seq)
    expected = {bus: p for bus, p in truth.items() if inside(box, p.lon, p.lat)}
    assert view.buses == expected


@settings(max_examples=150, deadline=None)
@given(
    stream=st.lists(st.tuples(st.sampled_from(BUSES), lons, lats, st.booleans()), min_size=1, max_size=200),
    budget=st.integers(300, 3_000),
)
def test_a_client_that_never_reads_stays_bounded_keeps_the_newest_of_each_bus_and_turns_slow(
    stream: list[tuple[str, float, float, bool]], budget: int
) -> None:
    fanout = Fanout(max_queue_bytes=budget, slow_after_ms=1_000)
    client = fanout.connect(1)
    fanout.subscribe(client, Filter(operator=OP))
    client.queue.start(Outgoing(Snapshot([], [])))
    newest: dict[str, LivePosition] = {}
    biggest = 0
    slow_at: int | None = None
    for seq, (bus, lon, lat, event) in enumerate(stream, start=1):
        now = seq * 100
        if event:
            routed = fanout.route_events([_event(bus, "t1", seq)], now_ms=now)
        else:
            p = _position(bus, lon, lat, seq)
            if not client.slow:
                newest[bus] = p
            routed = fanout.route_positions([p], now_ms=now)
            biggest = max(biggest, len(Outgoing(PositionMessage(p))))
        if client in routed.slow:
            assert slow_at is None, "marked slow once"
            slow_at = now
        assert client.queue.nbytes <= budget + biggest
    queued = client.queue.drain(0)[1:]
    positions = [o.message.position for o in queued if isinstance(o.message, PositionMessage)]
    assert len({p.bus for p in positions}) == len(positions), "one position per bus"
    for p in positions:
        assert p == newest[p.bus], "the newest of its bus (up to when it was found slow)"
    if slow_at is not None:
        assert client.slow
        assert fanout.stats.slow == 1
        assert client.queue.dropped > 0


def test_a_full_client_past_the_deadline_is_slow_and_gets_nothing_more() -> None:
    fanout = Fanout(max_queue_bytes=400, slow_after_ms=1_000)
    client = fanout.connect(1)
    fanout.subscribe(client, Filter(operator=OP))
    client.queue.start(Outgoing(Snapshot([], [])))
    slow = set()
    for seq in range(1, 40):
        slow |= fanout.route_events([_event("b1", "t1", seq)], now_ms=seq * 100).slow
    assert slow == {client}
    assert client.slow
    assert fanout.route_events([_event("b1", "t1", 99)], now_ms=9_900).ready == set()


def test_a_client_whose_send_never_completes_is_found_by_the_sweep() -> None:
    fanout = Fanout(slow_after_ms=1_000)
    client = fanout.connect(1)
    fanout.subscribe(client, Filter(operator=OP, bus="b1"))
    client.queue.start(Outgoing(Snapshot([], [])))
    assert client.queue.drain(now_ms=0)
    assert fanout.sweep(now_ms=999) == set()
    assert fanout.sweep(now_ms=1_000) == {client}


def _event(bus: str, trip: str, seq: int, kind: str = "stop_arrived") -> Event:
    return msgspec.convert(
        {
            "operator": OP,
            "bus": bus,
            "kind": kind,
            "time_ms": seq * 1_000,
            "cause_ms": seq * 1_000,
            "cause_seq": seq,
            "subject": f"{trip}/20261201/08:00:00#{seq}",
            "trip_id": trip,
            "route_id": f"r-{trip}",
            "details": {"stop_sequence": seq},
        },
        Event,
    )


updates = st.tuples(
    st.sampled_from(["etas", "event"]),
    st.sampled_from(TRIPS),
    st.sampled_from(BUSES[:4]),
    st.sampled_from(["08:00:00", "09:00:00"]),
)


@settings(max_examples=150, deadline=None)
@given(
    stream=st.lists(updates, max_size=60),
    drain_every=st.integers(1, 10),
    fmt=st.sampled_from(["json", "msgpack"]),
)
def test_a_trip_client_gets_that_trips_eta_changes_and_events(
    stream: list[tuple[str, str, str, str]], drain_every: int, fmt: str
) -> None:
    fanout = Fanout()
    client = fanout.connect(1, "json" if fmt == "json" else "msgpack")
    fanout.subscribe(client, Filter(operator=OP, trip_id="t1"))
    client.queue.start(Outgoing(Snapshot([], [])))
    got: list[ServerMessage] = []
    expected_events: list[Event] = []
    newest_etas: dict[str, TripEtas] = {}

    def deliver() -> None:
        items = client.queue.drain(0)
        if items:
            raw = frame(items, client.fmt)
            if isinstance(raw, str):
                decoded = SERVER_MESSAGE_DECODER.decode(raw)
            else:
                decoded = SERVER_MESSAGE_MSGPACK_DECODER.decode(raw)
            got.extend(decoded if isinstance(decoded, list) else [decoded])

    for seq, (kind, trip, bus, start) in enumerate(stream, start=1):
        if kind == "etas":
            e = trip_etas(OP, trip, bus, seq, start_time=start, stop_sequence=seq)
            fanout.route_etas([e], now_ms=seq)
            if trip == "t1":
                newest_etas[start] = e
        else:
            ev = _event(bus, trip, seq)
            fanout.route_events([ev], now_ms=seq)
            if trip == "t1":
                expected_events.append(ev)
        if seq % drain_every == 0:
            deliver()
    deliver()
    assert [m.event for m in got if isinstance(m, EventMessage)] == expected_events
    etas = [m.etas for m in got if isinstance(m, EtasMessage)]
    assert all(e.trip_id == "t1" for e in etas)
    last_per_instance = {e.start_time: e for e in etas}
    assert last_per_instance == newest_etas
    assert all(isinstance(m, (Snapshot, EventMessage, EtasMessage)) for m in got)


def test_a_bus_offline_event_reaches_the_box_that_held_the_bus_as_offline() -> None:
    fanout = Fanout()
    client = fanout.connect(1)
    fanout.subscribe(client, Filter(operator=OP, bbox=(3.0, 36.0, 3.1, 36.1)))
    client.queue.start(Outgoing(Snapshot([], [])))
    fanout.route_positions([_position("b1", 3.05, 36.05, 1)], now_ms=1)
    offline = msgspec.structs.replace(_event("b1", "t1", 2, "bus_offline"), lat=None, lon=None)
    fanout.route_events([offline], now_ms=2)
    kinds = [type(m).__name__ for m in _messages(frame(client.queue.drain(3), "json"))]
    assert kinds == ["Snapshot", "PositionMessage", "Offline"]


def test_a_route_client_gets_positions_of_trips_on_its_route_once_the_route_is_known() -> None:
    fanout = Fanout()
    client = fanout.connect(1)
    fanout.subscribe(client, Filter(operator=OP, route_id="r-t2"))
    client.queue.start(Outgoing(Snapshot([], [])))
    fanout.route_positions([_position("b1", 3.0, 36.0, 1, trip="t2")], now_ms=1)
    fanout.learn_routes(OP, {"t2": "r-t2"})
    fanout.route_positions([_position("b1", 3.0, 36.0, 2, trip="t2"), _position("b2", 3.0, 36.0, 3, "t1")], 2)
    got = _messages(frame(client.queue.drain(3), "json"))[1:]
    assert [(m.position.bus, m.position.seq) for m in got if isinstance(m, PositionMessage)] == [("b1", 2)]


def test_one_bus_and_one_trip_clients_have_no_tick_a_route_the_route_tick_and_a_map_the_map_tick() -> None:
    ticks = {
        name: Filter(operator=OP, **follows).tick_ms(map_ms=100, route_ms=500)  # type: ignore[arg-type]
        for name, follows in {
            "bus": {"bus": "b1"},
            "trip": {"trip_id": "t1"},
            "route": {"route_id": "r1"},
            "box": {"bbox": (2.9, 36.5, 3.3, 36.9)},
            "operator": {},
        }.items()
    }
    assert ticks == {"bus": 0, "trip": 0, "route": 500, "box": 100, "operator": 100}


def test_client_messages_are_typed_and_bad_ones_say_why() -> None:
    message = decode_client_message(b'{"type":"subscribe","operator":"op1","bbox":[3,36,3.1,36.1]}')
    assert isinstance(message, Subscribe)
    assert message.to_filter().kind == "bbox"
    for bad, needle in [
        (b'{"type":"subscribe","operator":"op1","bus":"b","trip_id":"t"}', "one thing"),
        (b'{"type":"subscribe","operator":"op1","bbox":[3,37,3.1,36]}', "min"),
        (b'{"type":"subscribe","operator":"op1","colour":"red"}', "colour"),
        (b'{"type":"dance"}', "dance"),
        (b"[" * 100_000, "unreadable"),
    ]:
        with pytest.raises(FanoutError, match=needle) as caught:
            decode_client_message(bad)
        assert caught.value.code == "bad_message"


def test_an_unreadable_update_is_a_typed_error_and_routes_nothing() -> None:
    fanout = Fanout()
    with pytest.raises(FanoutError) as caught:
        fanout.on_message("fleet:{op1}:positions", b'[{"bus": 1}]', 0)
    assert caught.value.code == "bad_update"
    with pytest.raises(FanoutError) as other:
        fanout.on_message("fleet:{op1}:other", b"[]", 0)
    assert other.value.code == "unknown_channel"


def test_a_message_is_encoded_once_per_format_for_all_its_clients() -> None:
    fanout = Fanout()
    clients = [fanout.connect(i, "json" if i % 2 else "msgpack") for i in range(6)]
    for c in clients:
        fanout.subscribe(c, Filter(operator=OP, bus="b1"))
        c.queue.start(Outgoing(Snapshot([], [])))
    fanout.on_message("fleet:{op1}:positions", msgspec.json.encode([_position("b1", 3.0, 36.0, 1)]), 0)
    sent = [c.queue.drain(0)[1] for c in clients]
    assert all(item is sent[0] for item in sent)
    assert sent[0].json() is sent[0].json()
    assert sent[0].msgpack() is sent[0].msgpack()
