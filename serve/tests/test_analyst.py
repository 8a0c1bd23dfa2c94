"""The analyst API against real PostgreSQL: fixes, events and visits written as the pipeline writes them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from fleet_schemas.events import Event, EventKind
from fleet_schemas.trips import StopVisit
from fleet_store.events import write_events
from fleet_store.history import refresh_segment_times, write_visits
from fleet_testing.tracks import copy_fixes

pytestmark = pytest.mark.stack

Client = TestClient[Litestar]


@pytest.fixture(autouse=True)
def _analyst_token(client: Client, operator_id: str, token_for: Callable[..., str]) -> None:
    """Every request here carries a analyst token of the test's operator, unless it says otherwise."""
    client.headers["Authorization"] = "Bearer " + token_for("analyst", operator_id)


DAY = datetime(2026, 11, 24, tzinfo=UTC)
DAY_MS = int(DAY.timestamp() * 1000)
HOUR_MS = 3_600_000
STEP_DEG = 0.00009
"""latitude step per second: about 10 m, so 36 km an hour"""


def _fix(operator: str, bus: str, second: int) -> tuple[object, ...]:
    time = DAY + timedelta(seconds=second)
    lat = 36.0 + STEP_DEG * second
    return (time, f"unit-{bus}", second, operator, bus, lat, 3.0, 10.0, 0.0, "sim", "k1", time)


async def _copy(database_url: str, rows: Sequence[tuple[object, ...]]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await copy_fixes(conn, rows)
    finally:
        await conn.close()


def _event(operator: str, i: int, bus: str, kind: EventKind, route: str) -> Event:
    return Event(
        operator=operator,
        bus=bus,
        kind=kind,
        time_ms=DAY_MS + (i // 2) * 1_000,  # pairs share a time: the cursor must order within one
        cause_ms=DAY_MS + (i // 2) * 1_000,
        cause_seq=i,
        subject=f"s{i}",
        route_id=route,
    )


async def _store_events(database_url: str, events: list[Event]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await write_events(conn, events)
    finally:
        await conn.close()


def test_a_track_is_a_geojson_linestring_of_the_fixes_in_order(
    client: Client, database_url: str, operator_id: str
) -> None:
    asyncio.run(_copy(database_url, [_fix(operator_id, "b1", s) for s in range(600)]))
    answer = client.get(
        f"/v1/operators/{operator_id}/buses/b1/track",
        params={"from": DAY_MS + 100_000, "to": DAY_MS + 200_000},
    )
    assert answer.status_code == 200
    feature = answer.json()
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] == "LineString"
    coordinates = feature["geometry"]["coordinates"]
    assert len(coordinates) == len(feature["properties"]["times_ms"]) == 100
    assert coordinates[0] == [3.0, pytest.approx(36.0 + STEP_DEG * 100)]
    assert feature["properties"]["times_ms"] == sorted(feature["properties"]["times_ms"])
    assert answer.headers["etag"]


def test_a_track_with_fewer_than_two_fixes_has_no_geometry(client: Client, operator_id: str) -> None:
    answer = client.get(
        f"/v1/operators/{operator_id}/buses/b1/track", params={"from": DAY_MS, "to": DAY_MS + HOUR_MS}
    )
    assert answer.status_code == 200
    assert answer.json()["geometry"] is None


def test_a_day_of_1_hz_fixes_streams_as_csv_row_by_row(
    client: Client, database_url: str, operator_id: str
) -> None:
    asyncio.run(_copy(database_url, [_fix(operator_id, "b1", s) for s in range(86_400)]))
    query = f"from={DAY_MS}&to={DAY_MS + 24 * HOUR_MS}&format=csv"
    path = f"/v1/operators/{operator_id}/buses/b1/track"
    authorization = client.headers["Authorization"].encode()
    start, chunks = client.blocking_portal.call(_asgi_get, client.app, path, query, authorization)
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-type"].startswith(b"text/csv")
    lines = b"".join(chunks).decode().splitlines()
    assert lines[0] == "time_ms,lat,lon,speed_mps,heading_deg"
    assert len(lines) == 86_401
    assert lines[1].split(",")[:3] == [str(DAY_MS), "36.0", "3.0"]
    times = [int(line.split(",", 1)[0]) for line in lines[1:]]
    assert times == sorted(times)
    assert len(chunks) > 100  # sent in many ASGI messages as rows are read, not built whole


async def _asgi_get(
    app: Litestar, path: str, query: str, authorization: bytes
) -> tuple[dict[str, Any], list[bytes]]:
    """The response start and every body message, as the server would send them (the test client
    joins them into one body, which would hide whether the answer streams)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", authorization)],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }
    sent: list[dict[str, Any]] = []
    asked = False
    done = anyio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if asked:  # the client leaves once the whole answer is in, as a server then says
            await done.wait()
            return {"type": "http.disconnect"}
        asked = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start, [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]


@pytest.mark.parametrize(
    "params",
    [
        {"from": DAY_MS, "to": DAY_MS},
        {"from": DAY_MS, "to": DAY_MS - 1},
        {"from": DAY_MS, "to": DAY_MS + 49 * HOUR_MS},
        {"from": 0, "to": DAY_MS},
        {"from": DAY_MS},
        {"from": DAY_MS, "to": DAY_MS + 1, "format": "kml"},
    ],
)
def test_bad_track_ranges_answer_400(client: Client, operator_id: str, params: dict[str, int | str]) -> None:
    answer = client.get(f"/v1/operators/{operator_id}/buses/b1/track", params=params)
    assert answer.status_code == 400
    assert set(answer.json()["error"]) == {"code", "message"}


def test_events_page_newest_first_by_cursor_without_repeats_or_gaps(
    client: Client, database_url: str, operator_id: str
) -> None:
    kinds: list[EventKind] = ["overspeed", "stop_arrived", "bus_offline"]
    stored = [_event(operator_id, i, f"b{i % 2}", kinds[i % 3], f"r{i % 4}") for i in range(25)]
    asyncio.run(_store_events(database_url, stored))
    url = f"/v1/operators/{operator_id}/events"
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = client.get(url, params={"limit": 10, **({"cursor": cursor} if cursor else {})}).json()
        seen += [e["cause_seq"] for e in page["events"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == list(range(25))
    by_seq = {e.cause_seq: e for e in stored}
    times = [by_seq[s].time_ms for s in seen]
    assert times == sorted(times, reverse=True)


def test_events_filter_by_bus_route_kind_and_time(
    client: Client, database_url: str, operator_id: str
) -> None:
    kinds: list[EventKind] = ["overspeed", "stop_arrived", "bus_offline"]
    stored = [_event(operator_id, i, f"b{i % 2}", kinds[i % 3], f"r{i % 4}") for i in range(24)]
    asyncio.run(_store_events(database_url, stored))
    url = f"/v1/operators/{operator_id}/events"

    def seqs(**params: str | int | list[str]) -> set[int]:
        answer = client.get(url, params={"limit": 1000, **params})
        assert answer.status_code == 200, answer.text
        return {e["cause_seq"] for e in answer.json()["events"]}

    assert seqs(bus="b1") == {i for i in range(24) if i % 2 == 1}
    assert seqs(route="r2") == {i for i in range(24) if i % 4 == 2}
    assert seqs(kind=["overspeed", "bus_offline"]) == {i for i in range(24) if i % 3 != 1}
    assert seqs(**{"from": DAY_MS + 2_000, "to": DAY_MS + 4_000}) == {4, 5, 6, 7}
    assert seqs(bus="b0", kind="overspeed", route="r0") == {0, 12}


def test_a_bad_or_foreign_cursor_answers_400(
    client: Client, database_url: str, operator_id: str, token_for: Callable[..., str]
) -> None:
    asyncio.run(
        _store_events(database_url, [_event("other-op", i, "b1", "overspeed", "r") for i in range(3)])
    )
    other = {"Authorization": "Bearer " + token_for("analyst", "other-op")}
    foreign = client.get("/v1/operators/other-op/events", params={"limit": 1}, headers=other)
    foreign = foreign.json()["next_cursor"]
    assert foreign
    url = f"/v1/operators/{operator_id}/events"
    for cursor in (foreign, "not-a-cursor", "W10", "eyJhIjoxfQ"):
        answer = client.get(url, params={"cursor": cursor})
        assert answer.status_code == 400, cursor
        assert answer.json()["error"]["code"] == "invalid_cursor"


def test_distance_sums_each_bus_day(client: Client, database_url: str, operator_id: str) -> None:
    rows = [_fix(operator_id, "b1", s) for s in range(0, 3_600, 10)]
    rows += [_fix(operator_id, "b2", s) for s in range(0, 1_800, 10)]
    rows += [_fix(operator_id, "b3", 86_400 + s) for s in range(0, 600, 10)]  # the next day
    asyncio.run(_copy(database_url, rows))
    answer = client.get(f"/v1/operators/{operator_id}/distance", params={"day": "2026-11-24"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["day"] == "2026-11-24"
    by_bus = {b["bus"]: b for b in body["buses"]}
    assert set(by_bus) == {"b1", "b2"}
    # 359 steps of 10 s at STEP_DEG a second: 3,590 s of latitude, about 35.9 km
    assert by_bus["b1"]["distance_m"] == pytest.approx(359 * 10 * STEP_DEG * 111_195, rel=0.01)
    assert by_bus["b2"]["fixes"] == 180
    assert by_bus["b1"]["first_ms"] == DAY_MS


@pytest.mark.parametrize("day", ["2026-13-01", "yesterday", "1999-12-31", "9999-12-31"])
def test_a_bad_day_answers_400(client: Client, operator_id: str, day: str) -> None:
    assert client.get(f"/v1/operators/{operator_id}/distance", params={"day": day}).status_code == 400


def _visit(operator: str, start_time: str, sequence: int, stop_id: str, at: datetime) -> StopVisit:
    ms = int(at.timestamp() * 1000)
    return StopVisit(
        operator=operator,
        bus="b1",
        feed_id=1,
        trip_id="ALG-ORN-out-0600",
        start_date="20261124",
        start_time=start_time,
        stop_sequence=sequence,
        stop_id=stop_id,
        arrived_ms=ms,
        departed_ms=ms + 60_000,
        scheduled_arrival_ms=ms,
        scheduled_departure_ms=ms + 60_000,
    )


async def _store_visits(database_url: str, visits: list[StopVisit]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await write_visits(conn, visits)
        await refresh_segment_times(conn)
    finally:
        await conn.close()


def test_travel_times_give_the_segment_by_hour_of_week(
    client: Client, database_url: str, feed_operator: str
) -> None:
    monday_8 = datetime(2026, 11, 23, 8, tzinfo=UTC)  # hour of week 8
    visits = []
    for start, minutes in (("06:00:00", 40), ("06:10:00", 50)):
        visits += [
            _visit(feed_operator, start, 1, "ALG-CAR", monday_8),
            _visit(feed_operator, start, 2, "BLI", monday_8 + timedelta(minutes=1 + minutes)),
        ]
    asyncio.run(_store_visits(database_url, visits))
    url = f"/v1/operators/{feed_operator}/travel-times"
    body = client.get(url, params={"from_stop": "ALG-CAR", "to_stop": "BLI"}).json()
    assert [(h["hour_of_week"], h["n"]) for h in body["hours"]] == [(8, 2)]
    assert body["hours"][0]["mean_s"] == pytest.approx(45 * 60)
    none_yet = client.get(url, params={"from_stop": "BLI", "to_stop": "CHL"})
    assert none_yet.status_code == 200
    assert none_yet.json()["hours"] == []
    unknown = client.get(url, params={"from_stop": "BLI", "to_stop": "NOWHERE"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "stop_not_found"
