"""The live map in headless Chromium, against a real ``fleet serve`` over the test Redis and PostgreSQL.

The demo feed is imported; two coaches drive two of its
trips, written to Redis with ``fleet_store`` exactly as ingest writes them
(positions, the ``calculated`` block, ETAs, events through the outbox), so
the page gets them from ``/v1/live`` as it would in production. Debian's
Chromium renders the map in software (SwiftShader WebGL). Every request the
page makes is recorded (none may leave 127.0.0.1) and so is every console
error and page error (there must be none). Screenshots go to the test's
``tmp_path``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from fleet_schemas.events import EVENT_ENCODER, Event
from fleet_schemas.live import LivePosition
from fleet_schemas.trips import Calculated, StopEta, TripEtas
from fleet_serve.app import create_app
from fleet_serve.auth import issue_token
from fleet_serve.settings import ServeSettings
from fleet_store import map_layers
from fleet_store.etas import EtaBoards, EtaUpdate
from fleet_store.events import EventOutbox, write_events
from fleet_store.gtfs import Connection
from fleet_store.live import LiveState, ProcessingWrite
from fleet_testing.database import run_on
from fleet_testing.serving import serving
from fleet_testing.tracks import copy_fixes

pytestmark = pytest.mark.stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
DEVIATION_COLOR = "#9c27b0"
STEP_S = 0.5
"""how often the driver moves each coach (the page glides between)"""
POINTS_PER_STEP = 1
STEP_M = 10.0
"""how far a coach moves per step: 20 m/s, a coach on an open road"""
MOVED_M = 2 * STEP_M
"""how far each coach must be seen to move (two of the driver's steps)"""
WAIT_MS = 60_000
"""how long the page may take to show what a step expects (a loaded CI machine renders slowly)"""
METRES_PER_DEGREE = 111_195.0


@dataclass
class Coach:
    bus: str
    trip_id: str
    route_id: str
    line: list[tuple[float, float]]
    stops: list[tuple[str, int, float, float]]
    """stop_id, stop_sequence, lon, lat of the trip's stops"""
    at: int = 0
    seq: int = 0


@dataclass
class Driver:
    """Moves coaches along their trip shapes in a thread of its own, as ingest would write them."""

    redis_url: str
    database_url: str
    operator: str
    coaches: list[Coach]
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    stopping: threading.Event = field(default_factory=threading.Event)
    delay_s: float = 120.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(10)

    def call(self, work: Callable[[], Any]) -> Any:
        """Run a coroutine function on the driver's loop (its Redis client) and wait for it."""
        return asyncio.run_coroutine_threadsafe(work(), self.loop).result(10)

    async def _run(self) -> None:
        self.redis = aioredis.from_url(self.redis_url)
        self.pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=2)
        self.live = LiveState(self.redis)
        self.boards = EtaBoards(self.redis)
        try:
            while not self.stopping.is_set():
                await self.step()
                await asyncio.sleep(STEP_S)
        finally:
            await self.pool.close()
            await self.redis.aclose()

    def position(self, coach: Coach, now_ms: int) -> LivePosition:
        lon, lat = coach.line[coach.at]
        calculated = Calculated(
            state="assigned",
            trip_id=coach.trip_id,
            start_date="20261201",
            start_time="08:00:00",
            confidence=1.0,
            delay_s=self.delay_s,
            on_schedule=True,
        )
        return LivePosition(
            operator=self.operator,
            bus=coach.bus,
            device=f"unit-{coach.bus}",
            seq=coach.seq,
            time_ms=now_ms,
            lat=lat,
            lon=lon,
            speed_mps=22.0,
            received_ms=now_ms,
            calculated=calculated,
        )

    def etas(self, coach: Coach, now_ms: int) -> TripEtas:
        stops = [
            StopEta(
                stop_sequence=sequence,
                stop_id=stop_id,
                scheduled_arrival_ms=now_ms + k * 600_000,
                scheduled_departure_ms=now_ms + k * 600_000,
                arrival_ms=now_ms + k * 600_000 + 120_000,
                departure_ms=now_ms + k * 600_000 + 120_000,
                arrival_early_ms=now_ms + k * 600_000 + 60_000,
                arrival_late_ms=now_ms + k * 600_000 + 300_000,
            )
            for k, (stop_id, sequence, _, _) in enumerate(coach.stops[1:], start=1)
        ]
        return TripEtas(
            operator=self.operator,
            trip_id=coach.trip_id,
            route_id=coach.route_id,
            start_date="20261201",
            start_time="08:00:00",
            bus=coach.bus,
            feed_id=1,
            time_ms=now_ms,
            updated_ms=now_ms,
            delay_s=self.delay_s,
            stops=stops,
        )

    async def step(self) -> None:
        now_ms = int(time.time() * 1000)
        for coach in self.coaches:
            coach.at = min(coach.at + POINTS_PER_STEP, len(coach.line) - 1)
            coach.seq += 1
        await self.live.update([self.position(c, now_ms) for c in self.coaches], now_ms)
        if self.coaches[0].seq == 1:
            await self.boards.publish([EtaUpdate(self.etas(c, now_ms)) for c in self.coaches], now_ms)

    async def on_connection(self, work: Callable[[Connection], Awaitable[None]]) -> None:
        async with self.pool.acquire() as conn:
            await work(conn)

    async def deviate(self, coach: Coach) -> None:
        """A ``deviation_started`` of the coach, queued with its state and moved out as ingest does."""
        now_ms = int(time.time() * 1000)
        coach.seq += 1
        position = self.position(coach, now_ms)
        event = Event(
            operator=self.operator,
            bus=coach.bus,
            kind="deviation_started",
            time_ms=now_ms,
            cause_ms=now_ms,
            cause_seq=coach.seq,
            subject=f"{coach.trip_id}/20261201/08:00:00",
            lat=position.lat,
            lon=position.lon,
            trip_id=coach.trip_id,
            route_id=coach.route_id,
            details={"distance_m": 2_400.0, "threshold_m": 2_000.0},
        )
        write = ProcessingWrite(version=None, events=[EVENT_ENCODER.encode(event)])
        await self.live.update([position], now_ms, {(self.operator, coach.bus): write})
        await EventOutbox(self.redis).flush(self.pool, [self.operator])


@dataclass(frozen=True)
class Scene:
    base: str
    operator: str
    token: str
    driver: Driver

    def api(self, path: str, **params: Any) -> Any:
        answer = httpx.get(
            f"{self.base}/v1/operators/{self.operator}/{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        answer.raise_for_status()
        return answer.json()


@dataclass
class Watched:
    """A page with every request and every error it had."""

    page: Page
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} at {message.location}")


@pytest.fixture
def browser(map_bundle: Path, scene: Scene) -> Iterator[Browser]:
    """Chromium for one test, started after the stores' fixtures: playwright's sync API holds an
    event loop in this thread while it runs, so their ``asyncio.run`` must come before it."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: scripts/bootstrap installs it")
    with sync_playwright() as playwright:
        yield _launch(playwright)


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def _coaches(database_url: str, operator: str) -> list[Coach]:
    async def read(conn: asyncpg.Connection) -> list[Coach]:
        shapes = await map_layers.route_shapes(conn, operator)
        coaches = []
        for number, shape in enumerate(shapes[:2], start=1):
            trip = shape.trip_ids[0]
            rows = await conn.fetch(
                "SELECT st.stop_id, st.stop_sequence, s.lon, s.lat FROM gtfs_stop_times st"
                " JOIN gtfs_stops s USING (feed_id, stop_id) JOIN gtfs_feeds f ON f.id = st.feed_id"
                " WHERE f.operator = $1 AND f.state = 'active' AND st.trip_id = $2 ORDER BY st.stop_sequence",
                operator,
                trip,
            )
            coaches.append(
                Coach(
                    bus=f"COACH-{number}",
                    trip_id=trip,
                    route_id=shape.route_id,
                    line=_densified(list(zip(shape.lons, shape.lats, strict=True))),
                    stops=[(r["stop_id"], r["stop_sequence"], r["lon"], r["lat"]) for r in rows],
                )
            )
        return coaches

    return run_on(database_url, read)


def _densified(line: list[tuple[float, float]], step_m: float = STEP_M) -> list[tuple[float, float]]:
    """Points every ``step_m`` along the shape: a coach moves that far per step."""
    out = [line[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(line):
        n = max(1, int(_metres((x0, y0), (x1, y1)) / step_m))
        out += [(x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(1, n + 1)]
    return out


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dx = (b[0] - a[0]) * math.cos(math.radians((a[1] + b[1]) / 2))
    return math.hypot(dx, b[1] - a[1]) * METRES_PER_DEGREE


def _off_line_m(point: tuple[float, float], line: list[tuple[float, float]]) -> float:
    """Distance from a point to a densified polyline (to its nearest vertex: STEP_M apart at most)."""
    return min(_metres(point, vertex) for vertex in line)


@pytest.fixture
def scene(
    feed_operator: str, database_url: str, redis_url: str, serve_settings: ServeSettings
) -> Iterator[Scene]:
    """A serve node over the demo feed, two coaches driving, and a manager token."""
    token, _ = issue_token(serve_settings, role="manager", operators=(feed_operator,), ttl_s=3_600, sub="t")
    driver = Driver(redis_url, database_url, feed_operator, _coaches(database_url, feed_operator))
    driver.start()
    try:
        with serving(create_app(serve_settings, redis_url, database_url), serve_settings) as base:
            yield Scene(base, feed_operator, token, driver)
    finally:
        driver.stop()


@pytest.fixture
def watched(browser: Browser, scene: Scene) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 960, "height": 600}, bypass_csp=True)
    page = context.new_page()
    seen = Watched(page)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("console", seen.console)
    page.on("pageerror", lambda error: seen.errors.append(f"page error: {error}"))
    try:
        yield seen
        assert seen.errors == [], "the page logged errors"
        foreign = [u for u in seen.requests if not u.startswith((f"{scene.base}/", "data:", "blob:"))]
        assert foreign == [], "requests left the machine"
    finally:
        context.close()


def _open(
    watched: Watched, scene: Scene, around: Coach | None = None, at: tuple[float, float] | None = None
) -> Page:
    """The map with the token in its URL: all of Algeria, or (a shared link's ``bbox``) a few km
    around a coach or a point."""
    page = watched.page
    view = ""
    centre = around.line[around.at] if around is not None else at
    if centre is not None:
        lon, lat = centre
        view = f"&bbox={lon - 0.03},{lat - 0.02},{lon + 0.03},{lat + 0.02}"
    page.goto(f"{scene.base}/map?token={scene.token}{view}")
    page.wait_for_function("() => window.fleetMap && window.fleetMap.ready", timeout=WAIT_MS)
    expected = (
        [c.bus for c in scene.driver.coaches] if centre is None else [] if around is None else [around.bus]
    )
    page.wait_for_function(
        "(buses) => buses.every(b => window.fleetMap.busState(b) !== null)", arg=expected, timeout=WAIT_MS
    )
    return page


def _state(page: Page, bus: str) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("(bus) => window.fleetMap.busState(bus)", bus)
    return state


def _drawn_at(page: Page, coach: Coach) -> tuple[float, float]:
    """Where the coach is drawn, in page pixels, once the bus layer has it there."""
    drawn = page.wait_for_function(
        """(bus) => {
            const map = window.fleetMap.map, s = window.fleetMap.busState(bus);
            const p = map.project([s.lon, s.lat]);
            const hit = map.queryRenderedFeatures([p.x, p.y], {layers: ['buses']});
            return hit.some(f => f.properties.bus === bus) && [p.x, p.y];
        }""",
        arg=coach.bus,
        timeout=WAIT_MS,
    ).json_value()
    box = page.locator("#map canvas").bounding_box()
    assert box is not None
    return box["x"] + drawn[0], box["y"] + drawn[1]


def test_the_map_draws_the_live_buses_on_their_routes_and_they_move(
    watched: Watched, scene: Scene, tmp_path: Path
) -> None:
    page = _open(watched, scene)
    coaches = scene.driver.coaches
    before = {c.bus: _state(page, c.bus) for c in coaches}
    for coach in coaches:
        state = before[coach.bus]
        assert state["trip_id"] == coach.trip_id
        assert state["route_id"] == coach.route_id
        assert _off_line_m((state["lon"], state["lat"]), coach.line) < 25
    page.wait_for_function(  # by distance, not time: a loaded machine's driver takes fewer steps a second
        """([buses, perDegree, moved]) => buses.every(([bus, lon, lat]) => {
            const now = window.fleetMap.busState(bus);
            const dx = (now.lon - lon) * Math.cos((((lat + now.lat) / 2) * Math.PI) / 180);
            return Math.hypot(dx, now.lat - lat) * perDegree > moved;
        })""",
        arg=[[[bus, s["lon"], s["lat"]] for bus, s in before.items()], METRES_PER_DEGREE, MOVED_M],
        timeout=WAIT_MS,
    )
    for coach in coaches:
        after = _state(page, coach.bus)
        assert after["time_ms"] > before[coach.bus]["time_ms"]
        assert (
            _metres((after["lon"], after["lat"]), (before[coach.bus]["lon"], before[coach.bus]["lat"]))
            > MOVED_M
        )
        assert _off_line_m((after["lon"], after["lat"]), coach.line) < 25
        assert after["status"] == "on_time"
    page.screenshot(path=tmp_path / "map-live.png")
    assert page.locator("#connection").inner_text() == "live"


def test_clicking_a_bus_opens_its_panel_with_the_etas_the_api_answers(
    watched: Watched, scene: Scene, tmp_path: Path
) -> None:
    coach = scene.driver.coaches[0]
    page = _open(watched, scene, around=coach)
    x, y = _drawn_at(page, coach)
    page.mouse.click(x, y)
    rows = page.locator("#next-stops tbody tr")
    rows.first.wait_for(timeout=WAIT_MS)
    shown = [
        (r.get_attribute("data-stop-id"), int(r.get_attribute("data-arrival-ms") or 0)) for r in rows.all()
    ]
    answer = scene.api(f"trips/{coach.trip_id}/etas")
    (instance,) = answer["instances"]
    expected = [(s["stop_id"], s["arrival_ms"]) for s in instance["stops"]][: len(shown)]
    assert shown == expected
    assert len(shown) >= 2
    assert page.locator("#panel h2").inner_text().endswith(f"Bus {coach.bus}")
    assert page.locator('[data-fact="delay"]').inner_text() == "2 min late"
    assert "bus=" + coach.bus in page.url
    page.screenshot(path=tmp_path / "bus-panel.png")
    page.reload()  # the link keeps the view: the same box, the same bus selected
    page.locator("#next-stops tbody tr").first.wait_for(timeout=WAIT_MS)
    assert page.locator("#panel h2").inner_text().endswith(f"Bus {coach.bus}")


def test_clicking_a_stop_opens_its_arrivals_board(watched: Watched, scene: Scene, tmp_path: Path) -> None:
    coach = scene.driver.coaches[0]
    stop_id, _, lon, lat = coach.stops[2]
    page = _open(watched, scene, at=(lon, lat))
    drawn = page.wait_for_function(
        """([lon, lat, stop]) => {
            const map = window.fleetMap.map, p = map.project([lon, lat]);
            const hit = map.queryRenderedFeatures([p.x, p.y], {layers: ['stops']});
            return hit.some(f => f.properties.stop_id === stop) && [p.x, p.y];
        }""",
        arg=[lon, lat, stop_id],
        timeout=WAIT_MS,
    ).json_value()
    box = page.locator("#map canvas").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + drawn[0], box["y"] + drawn[1])
    rows = page.locator("#board tbody tr")
    rows.first.wait_for(timeout=WAIT_MS)
    shown = [(r.get_attribute("data-bus"), int(r.get_attribute("data-arrival-ms") or 0)) for r in rows.all()]
    answer = scene.api(f"stops/{stop_id}/arrivals", limit=15)
    assert shown == [(a["bus"], a["arrival_ms"]) for a in answer["arrivals"]]
    assert coach.bus in {bus for bus, _ in shown}
    page.screenshot(path=tmp_path / "stop-board.png")


def test_a_deviating_bus_turns_to_the_deviation_color(watched: Watched, scene: Scene, tmp_path: Path) -> None:
    coach = scene.driver.coaches[1]
    page = _open(watched, scene, around=coach)
    assert _state(page, coach.bus)["status"] == "on_time"
    scene.driver.call(lambda: scene.driver.deviate(coach))
    page.wait_for_function(
        "(bus) => window.fleetMap.busState(bus).status === 'deviating'", arg=coach.bus, timeout=WAIT_MS
    )
    assert _state(page, coach.bus)["color"] == DEVIATION_COLOR
    page.wait_for_function(
        "([bus, color]) => window.fleetMap.map.querySourceFeatures('buses')"
        ".some(f => f.properties.bus === bus && f.properties.color === color)",
        arg=[coach.bus, DEVIATION_COLOR],
        timeout=WAIT_MS,
    )
    assert page.locator('#events-list li[data-kind="deviation_started"]').count() == 1
    page.select_option("#events-kind", "stop_arrived")  # the feed filtered by kind
    assert page.locator("#events-list li").count() == 0
    page.select_option("#events-kind", "deviation_started")
    assert page.locator("#events-list li").count() == 1
    page.select_option("#f-status", "on_time")  # the filter hides it, and the URL says so
    page.wait_for_function(
        "(bus) => !window.fleetMap.map.querySourceFeatures('buses').some(f => f.properties.bus === bus)",
        arg=coach.bus,
        timeout=WAIT_MS,
    )
    assert "status=on_time" in page.url
    page.select_option("#f-status", "deviating")
    x, y = _drawn_at(page, coach)
    shot = page.screenshot(
        path=tmp_path / "deviating.png", clip={"x": x - 6, "y": y - 6, "width": 12, "height": 12}
    )
    assert shot


def test_the_replay_plays_a_stored_track(watched: Watched, scene: Scene, tmp_path: Path) -> None:
    coach = scene.driver.coaches[0]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    fixes = coach.line[:120]
    rows = [
        (
            start + timedelta(seconds=10 * k),
            "unit-replay",
            k,
            scene.operator,
            "REPLAY-1",
            lat,
            lon,
            20.0,
            0.0,
            "sim",
            "k1",
            start + timedelta(seconds=10 * k),
        )
        for k, (lon, lat) in enumerate(fixes)
    ]
    arrived = Event(
        operator=scene.operator,
        bus="REPLAY-1",
        kind="stop_arrived",
        time_ms=int(start.timestamp() * 1000) + 60_000,
        cause_ms=int(start.timestamp() * 1000) + 60_000,
        cause_seq=6,
        subject="s",
        lat=fixes[6][1],
        lon=fixes[6][0],
    )

    async def store(conn: Connection) -> None:
        await copy_fixes(conn, rows)
        await write_events(conn, [arrived])

    scene.driver.call(lambda: scene.driver.on_connection(store))
    page = _open(watched, scene)
    page.fill("#replay-bus", "REPLAY-1")
    local = page.evaluate(
        "(ms) => { const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);"
        " return d.toISOString().slice(0, 19); }",
        int(start.timestamp() * 1000) - 60_000,
    )
    page.fill("#replay-from", local)
    page.fill("#replay-to", _plus_hour(local))
    page.get_by_role("button", name="Load track").click()
    page.wait_for_function("() => window.fleetMap.replay().points === 120", timeout=WAIT_MS)
    assert page.locator("#replay-status").inner_text() == "120 fixes, 1 event."
    first = page.evaluate("() => window.fleetMap.replay()")
    assert first["position"] == pytest.approx(list(fixes[0]))
    page.select_option("#replay-speed", "300")
    page.locator("#replay-play").click()
    page.wait_for_function(
        "(t) => window.fleetMap.replay().timeMs > t + 300000", arg=first["timeMs"], timeout=WAIT_MS
    )
    played = page.evaluate("() => window.fleetMap.replay()")
    assert _off_line_m(tuple(played["position"]), fixes) < 25
    page.screenshot(path=tmp_path / "replay.png")


def _plus_hour(local: str) -> str:
    moment = datetime.fromisoformat(local) + timedelta(hours=1)
    return moment.isoformat(timespec="seconds")


def test_an_expired_token_asks_for_a_new_one(
    watched: Watched, scene: Scene, serve_settings: ServeSettings
) -> None:
    expired, _ = issue_token(
        serve_settings,
        role="manager",
        operators=(scene.operator,),
        ttl_s=60,
        sub="t",
        now_s=int(time.time()) - 3_600,
    )
    page = watched.page
    page.goto(f"{scene.base}/map?token={expired}")
    message = page.locator("#login-message")
    message.wait_for(timeout=WAIT_MS)
    assert "expired" in message.inner_text()
    assert "token=" not in page.url
    assert page.locator("#login-token").is_visible()
