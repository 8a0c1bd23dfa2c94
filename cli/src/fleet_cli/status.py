"""``fleet status``: the health of every component, looked at once, each with a deadline.

Each check asks the component itself (the broker's ``$SYS`` totals, the
ingest session registry and the newest stored frames, each serve node's
``/readyz``, PostgreSQL, Redis, the live state, the newest events). A check
that fails or times out reports its component down with the reason; it never
stops the others. Mosquitto says how many messages it holds in all, not per
session, so an ingest session's own backlog is not measurable there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial

import asyncpg
import msgspec
import redis.asyncio as aioredis

from fleet_schemas.broker import BrokerUrl
from fleet_schemas.events import Event
from fleet_store import sessions
from fleet_store.events import read_events
from fleet_store.live import LiveState
from fleet_store.settings import ServiceUrls

CHECK_S = 5.0
"""each component gets this long to answer"""
RUNNING_S = 90.0
"""an ingest instance that refreshed its session this recently is running (it does every 30 s)"""

Fact = int | float | str | None


class Component(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str
    facts: dict[str, Fact] = msgspec.field(default_factory=dict)


class Buses(msgspec.Struct, frozen=True):
    operator: str
    live: int
    offline: int


class Status(msgspec.Struct, frozen=True):
    ok: bool
    checked_ms: int
    components: list[Component]
    buses: list[Buses]
    last_events: list[Event]


async def _checked(name: str, check: Callable[[], Awaitable[Component]]) -> Component:
    try:
        return await asyncio.wait_for(check(), CHECK_S)
    except TimeoutError:
        return Component(name, False, f"no answer within {CHECK_S:g} s")
    except (OSError, asyncpg.PostgresError, aioredis.RedisError, urllib.error.URLError) as exc:
        return Component(name, False, f"{type(exc).__name__}: {exc}")


async def _broker(mqtt_url: str) -> Component:
    store = await asyncio.to_thread(sessions.broker_store, mqtt_url, CHECK_S - 1)
    where = BrokerUrl.parse(mqtt_url)
    facts: dict[str, Fact] = dict(msgspec.structs.asdict(store))
    if store.stored_messages is None:
        return Component("broker", False, f"{where.host}:{where.port} sent no $SYS totals", facts)
    return Component(
        "broker",
        True,
        f"{where.host}:{where.port}: {store.stored_messages:,} messages stored"
        f" ({store.stored_bytes or 0:,} bytes), {store.disconnected_clients or 0} disconnected clients"
        " with a session",
        facts,
    )


async def _postgresql(conn: asyncpg.Connection) -> Component:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM pg_stat_activity), current_setting('max_connections')::int"
    )
    assert row is not None  # a SELECT without FROM returns one row
    used, limit = row
    return Component(
        "postgresql", True, f"{used} of {limit} connections", {"connections": used, "max_connections": limit}
    )


async def _ingest(conn: asyncpg.Connection, now: datetime) -> Component:
    rows = await sessions.listed(conn)
    running = [r for r in rows if (now - r.last_seen).total_seconds() < RUNNING_S]
    row = await conn.fetchrow(
        "SELECT max(received_at),"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - time)),"
        " count(*) FROM positions"
        " WHERE time > now() - interval '1 day' AND received_at > now() - interval '5 minutes'"
    )
    assert row is not None  # an aggregate returns one row
    newest, lag_p99, frames = row
    facts: dict[str, Fact] = {
        "instances_running": len(running),
        "instances_absent": len(rows) - len(running),
        "frames_last_5min": frames,
        "lag_p99_s": None if lag_p99 is None else round(float(lag_p99), 3),
        "last_stored_s_ago": None if newest is None else round((now - newest).total_seconds(), 1),
    }
    names = ", ".join(r.client_id for r in running) or "none"
    flow = (
        "no frame stored in the last 5 min"
        if newest is None
        else f"{frames:,} frames in the last 5 min, fix-to-store lag p99 {float(lag_p99):.1f} s"
    )
    absent = f" ({facts['instances_absent']} absent)" if facts["instances_absent"] else ""
    return Component("ingest", bool(running), f"running: {names}{absent}; {flow}", facts)


async def _serve(url: str) -> Component:
    def ready() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/readyz", timeout=CHECK_S - 1) as response:  # noqa: S310
                return response.status, response.read().decode(errors="replace")[:200]
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")[:200]

    code, body = await asyncio.to_thread(ready)
    return Component(
        f"serve {url}", code == 200, "ready" if code == 200 else f"{code}: {body}", {"status": code}
    )


async def _redis(client: aioredis.Redis) -> Component:
    memory = await client.info("memory")
    used, limit = int(memory["used_memory"]), int(memory.get("maxmemory", 0))
    bound = f"{used / limit:.0%} of maxmemory" if limit else "no maxmemory set"
    return Component(
        "redis", True, f"{used / 2**20:.1f} MiB used, {bound}", {"used_memory": used, "maxmemory": limit}
    )


async def gather_status(urls: ServiceUrls, serve_urls: list[str], events: int = 5) -> Status:
    """Look at every component; ``ok`` is whether every one answered as it should."""
    now = datetime.now(UTC)
    client = aioredis.Redis.from_url(urls.redis_url, socket_connect_timeout=CHECK_S, socket_timeout=CHECK_S)
    buses: list[Buses] = []
    last_events: list[Event] = []
    conn: asyncpg.Connection | None = None

    async def connect() -> Component:
        nonlocal conn
        conn = await asyncpg.connect(urls.database_url, timeout=CHECK_S)
        return await _postgresql(conn)

    async def live() -> Component:
        component = await _redis(client)
        state = LiveState(client)
        for operator in sorted(await state.operators()):
            buses.append(Buses(operator, *await state.bus_counts(operator)))
        return component

    try:
        components = list(
            await asyncio.gather(
                _checked("broker", lambda: _broker(urls.mqtt_url)),
                _checked("postgresql", connect),
                _checked("redis", live),
                *(_checked(f"serve {url}", partial(_serve, url)) for url in serve_urls),
            )
        )
        if conn is not None:
            held = conn
            components.insert(2, await _checked("ingest", lambda: _ingest(held, now)))
            # On a database error the ingest check above already says what is wrong.
            with contextlib.suppress(asyncpg.PostgresError):
                last_events = await read_events(held, None, limit=events)
        else:
            components.insert(2, Component("ingest", False, "not checked: PostgreSQL is down"))
    finally:
        if conn is not None:
            await conn.close()
        await client.aclose()
    return Status(
        ok=all(c.ok for c in components),
        checked_ms=int(time.time() * 1000),
        components=components,
        buses=buses,
        last_events=last_events,
    )
