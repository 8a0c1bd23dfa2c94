"""``fleet events reprocess`` gives exactly the live events of the real chain, duplicates and two processes.

Two coaches drive a line of a synthetic feed (stored as the operator's
active version). Their signed frames go through Mosquitto to two ``fleet
ingest`` processes sharing the subscription, every message published twice.
Each coach's next message is published once its previous one is live, so its
frames are processed in order (the live rule: a frame older than the bus's
state raises nothing, and replay cannot know which ones were), while the
copies and the other coach's messages land on either process at any time.
Then ``fleet events reprocess`` recomputes the range from PostgreSQL alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner
from prometheus_client import REGISTRY

from fleet_cli.cli import main
from fleet_ingest.assess import Incoming
from fleet_ingest.feeds import Networks
from fleet_ingest.fences import stored_fence
from fleet_ingest.keycache import KeyCache
from fleet_ingest.reprocess import ReprocessReport
from fleet_ingest.service import Ingest, IngestOptions, open_pool, open_redis
from fleet_processing.fence_geojson import fences_from_geojson
from fleet_processing.progress import FixPoint
from fleet_schemas import DeviceKey, Frame, frames_topic, seal
from fleet_store.events import EventOutbox, read_events
from fleet_store.geofences import import_fences
from fleet_store.gtfs import activate, write_feed
from fleet_store.live import LiveState, Processing, proc_key
from fleet_store.mqtt import connect_client
from fleet_testing.ingest import IngestProcesses, register_devices
from fleet_testing.trips import (
    TWO_DEPARTURES,
    coaches_on_the_straight_line,
    frames_of,
    line,
    network,
    straight_line_fences,
)

pytestmark = pytest.mark.stack

H = 3_600


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _messages(device: str, bus: str, key: DeviceKey, fixes: list[FixPoint]) -> list[list[Frame]]:
    """The coach's frames in messages of 1 to 4, as an agent sends after a short outage."""
    rng = random.Random(device)
    frames = frames_of(device, bus, fixes)
    out, k = [], 0
    while k < len(frames):
        size = rng.randint(1, 4)
        out.append(frames[k : k + size])
        k += size
    return out


async def _store_feed_and_fences(database_url: str, operator: str) -> None:
    feed, _ = network([line("straight", departures_s=TWO_DEPARTURES)])
    fences = [stored_fence(f) for f in fences_from_geojson(operator, straight_line_fences())]
    conn = await asyncpg.connect(database_url)
    try:
        feed_id = await write_feed(conn, operator, feed, source="synthetic", sha256="0" * 64, report={})
        await activate(conn, operator, feed_id)
        await import_fences(conn, operator, fences)
    finally:
        await conn.close()


Coaches = dict[str, tuple[str, DeviceKey, list[list[Frame]]]]
"""by device: its bus, its key and its messages in order"""


def _two_coaches(
    ingest: IngestProcesses, operator: str
) -> tuple[Coaches, tuple[str, str], tuple[list[FixPoint], list[FixPoint]]]:
    """The straight line's feed and fences stored, two devices registered, their coaches' messages."""
    asyncio.run(_store_feed_and_fences(ingest.database_url, operator))
    buses, keys = asyncio.run(register_devices(ingest.database_url, ingest.kek, operator, 2))
    (one, bus_one), (two, bus_two) = buses.items()
    feed, _ = network([line("straight", departures_s=TWO_DEPARTURES)])
    first, second = coaches_on_the_straight_line(feed)
    coaches = {
        one: (bus_one, keys[0], _messages(one, bus_one, keys[0], first)),
        two: (bus_two, keys[1], _messages(two, bus_two, keys[1], second)),
    }
    return coaches, (bus_one, bus_two), (first, second)


async def _publish_in_order(ingest: IngestProcesses, operator: str, coaches: Coaches) -> None:
    """Each coach's messages, twice each, the next one once the previous is live."""
    client = aioredis.Redis.from_url(ingest.redis_url)
    live = LiveState(client)
    publisher = connect_client(ingest.urls.mqtt_url)
    try:
        for step in range(max(len(m) for _, _, m in coaches.values())):
            waiting: dict[str, int] = {}
            batch: list[tuple[str, bytes]] = []
            for device, (bus, key, messages) in coaches.items():
                if step < len(messages):
                    payload = seal(messages[step], key)
                    batch += [(frames_topic(operator, device), payload)] * 2
                    waiting[bus] = messages[step][-1].time_ms
            for topic, payload in batch:
                sent = publisher.publish(topic, payload, qos=1)
                await asyncio.to_thread(sent.wait_for_publish, 10)
                assert sent.is_published()
            deadline = time.monotonic() + 30
            while waiting:
                assert time.monotonic() < deadline, f"ingest did not take {waiting}"
                for bus, t in list(waiting.items()):
                    position = await live.position(operator, bus)
                    if position is not None and position.time_ms >= t:
                        del waiting[bus]
                await asyncio.sleep(0.005)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        await client.aclose()


def _reprocess(
    ingest: IngestProcesses, operator: str, from_ms: int, to_ms: int, *options: str
) -> ReprocessReport:
    """``fleet events reprocess`` of the range, its report."""
    args = ["events", "reprocess", "--operator", operator, "--from", _iso(from_ms), "--to", _iso(to_ms)]
    result = CliRunner().invoke(main, [*args, "--json", *options], env=ingest.env())
    assert result.exit_code == 0, result.output
    return msgspec.json.decode(result.stdout, type=ReprocessReport)


def _assert_each_event_raised_once(
    ingest: IngestProcesses, operator_id: str, first: list[FixPoint], second: list[FixPoint]
) -> None:
    """The stored events are exactly those a replay of the whole drives finds: none twice, none missing."""
    to_ms = max(first[-1].time_ms, second[-1].time_ms) + 60_000
    compared = _reprocess(ingest, operator_id, first[0].time_ms, to_ms, "--dry-run")
    assert compared.fixes == len(first) + len(second), "each frame stored once"
    twice = [(e.bus, e.kind) for e in compared.stored_not_recomputed]
    assert twice == [], f"raised again after the state was lost: {twice}"
    assert (compared.missing, compared.changed) == ([], [])
    assert compared.recomputed == compared.already_stored > 0


def test_reprocess_yields_the_live_events_of_two_ingest_processes_fed_every_message_twice(
    ingest: IngestProcesses, operator_id: str
) -> None:
    coaches, (bus_one, bus_two), (first, second) = _two_coaches(ingest, operator_id)
    asyncio.run(ingest.open_sessions("a", "b"))
    ingest.start("a")
    ingest.start("b")
    asyncio.run(_publish_in_order(ingest, operator_id, coaches))
    ingest.wait("a")
    ingest.wait("b")

    from_ms = first[0].time_ms
    # both coaches stop at the same time: the range ends before the sweep would call them offline
    to_ms = max(first[-1].time_ms, second[-1].time_ms) + 60_000

    async def stored() -> list[tuple[str, str]]:
        conn = await asyncpg.connect(ingest.database_url)
        try:
            found = await read_events(conn, operator_id, since_ms=from_ms, until_ms=to_ms, limit=None)
        finally:
            await conn.close()
        return [(e.bus, e.kind) for e in found]

    live = Counter(asyncio.run(stored()))
    assert {(bus_one, "bus_offline"), (bus_one, "bus_online")} <= live.keys(), live
    assert {(bus, "trip_assigned") for bus in (bus_one, bus_two)} <= live.keys(), live
    assert {(bus, "stop_arrived") for bus in (bus_one, bus_two)} <= live.keys(), live
    assert {(bus, "overspeed") for bus in (bus_one, bus_two)} <= live.keys(), live
    assert {(bus, "geofence_dwell") for bus in (bus_one, bus_two)} <= live.keys(), live

    compared = _reprocess(ingest, operator_id, from_ms, to_ms, "--dry-run")
    assert compared.fixes == len(first) + len(second), "each frame stored once"
    assert (compared.missing, compared.stored_not_recomputed, compared.changed) == ([], [], [])
    assert compared.recomputed == compared.already_stored == sum(live.values())
    again = _reprocess(ingest, operator_id, from_ms, to_ms)
    assert (again.added, again.deleted, again.already_stored) == (0, 0, sum(live.values()))


def test_a_bus_whose_state_redis_lost_mid_drive_goes_on_without_raising_an_event_twice(
    ingest: IngestProcesses, operator_id: str
) -> None:
    """Halfway through the drives Redis loses both buses' processing state; ingest rebuilds it from
    their stored frames, so the events stored are exactly those a replay of the whole range finds: no
    second ``trip_assigned``, ``geofence_entered`` or ``bus_online`` when the frames come back."""
    coaches, (bus_one, bus_two), (first, second) = _two_coaches(ingest, operator_id)
    # the second coach starts late: cut where both have driven a while, the first coach past its silence
    cut_ms = second[len(second) // 2].time_ms

    def part(before: bool) -> Coaches:
        return {
            device: (bus, key, [m for m in messages if (m[-1].time_ms < cut_ms) == before])
            for device, (bus, key, messages) in coaches.items()
        }

    async def forget_states() -> int:
        client = aioredis.Redis.from_url(ingest.redis_url)
        try:
            return int(await client.delete(*(proc_key(operator_id, bus) for bus in (bus_one, bus_two))))
        finally:
            await client.aclose()

    asyncio.run(ingest.open_sessions("a"))
    ingest.start("a", burst_s=None)
    asyncio.run(_publish_in_order(ingest, operator_id, part(before=True)))
    assert asyncio.run(forget_states()) == 2, "both buses had a state to lose"
    asyncio.run(_publish_in_order(ingest, operator_id, part(before=False)))
    ingest.terminate("a")

    _assert_each_event_raised_once(ingest, operator_id, first, second)


@contextlib.asynccontextmanager
async def _ingest_here(
    ingest: IngestProcesses, name: str, live: Callable[[aioredis.Redis], LiveState] = LiveState
) -> AsyncIterator[tuple[Ingest, aioredis.Redis]]:
    """An ``Ingest`` in this process on the test's servers, feeds and fences loaded: its batches are
    taken in one by one, and its Redis (yielded beside it) can be made to fail where a test needs it to."""
    pool = await open_pool(ingest.database_url)
    client = open_redis(ingest.redis_url)
    try:
        async with KeyCache(ingest.database_url, ingest.kek) as registry:
            process = Ingest(
                "mqtt://unused",
                pool,
                live(client),
                registry,
                IngestOptions(name, give_up_s=30.0),
                networks=Networks(),
                outbox=EventOutbox(client),
            )
            await process.refresh_models()
            yield process, client
    finally:
        await pool.close()
        await client.aclose()


class _LosesStatesAfterReading(LiveState):
    """The stack's Redis, where the buses in ``losing`` lose their processing hash right after a batch
    read it: as a Redis that restarted empty while the batch was being processed."""

    def __init__(self, client: aioredis.Redis, operator: str) -> None:
        super().__init__(client)
        self._redis = client
        self._operator = operator
        self.losing: set[str] = set()

    async def processing(self, buses: Sequence[tuple[str, str]]) -> list[Processing]:
        held = await super().processing(buses)
        lost = [bus for operator, bus in buses if operator == self._operator and bus in self.losing]
        if lost:
            await self._redis.delete(*(proc_key(self._operator, bus) for bus in lost))
            self.losing -= set(lost)
        return held


def test_a_bus_whose_state_redis_lost_between_read_and_write_is_rebuilt_not_restarted(
    ingest: IngestProcesses, operator_id: str
) -> None:
    """The write of a state read before Redis lost it is refused (its version is gone), and the bus is
    read again: empty. It must then go on from its stored frames, as a bus found empty at once does,
    not from nothing (a second ``trip_assigned``, ``geofence_entered``...; seen with two processes in
    the chaos test of a Redis that lost its data)."""
    coaches, (bus_one, bus_two), (first, second) = _two_coaches(ingest, operator_id)
    cut_ms = second[len(second) // 2].time_ms

    losing: set[str] = set()

    def loses(client: aioredis.Redis) -> LiveState:
        live = _LosesStatesAfterReading(client, operator_id)
        live.losing = losing
        return live

    async def drive() -> None:
        async with _ingest_here(ingest, "lost-between", loses) as (process, _):
            armed = False
            for step in range(max(len(m) for _, _, m in coaches.values())):
                for device, (_bus, key, messages) in coaches.items():
                    if step >= len(messages):
                        continue
                    if not armed and messages[step][-1].time_ms >= cut_ms:
                        losing.update((bus_one, bus_two))
                        armed = True
                    payload = seal(messages[step], key)
                    taken = await process.take_in([Incoming(frames_topic(operator_id, device), payload)])
                    assert taken.outcome is not None
                    assert not taken.outcome.rejected
            assert armed
            assert not losing, "both buses lost their state after a read"

    counted = ("fleet_ingest_state_conflicts_total", "fleet_ingest_states_recovered_total")
    before = [REGISTRY.get_sample_value(name) or 0.0 for name in counted]
    asyncio.run(asyncio.wait_for(drive(), 120))
    after = [REGISTRY.get_sample_value(name) or 0.0 for name in counted]
    conflicts, recovered = (a - b for a, b in zip(after, before, strict=True))
    assert conflicts >= 2, "each bus's write was refused once, its state gone"
    assert recovered >= 2, "and each was rebuilt after it"
    _assert_each_event_raised_once(ingest, operator_id, first, second)


def test_a_batch_after_the_loss_holding_an_old_redelivered_message_rebuilds_the_state_up_to_its_newest(
    ingest: IngestProcesses, operator_id: str
) -> None:
    """Redis lost both buses' states; the next batch of each coach holds its message of 20 messages back
    (a redelivery after a crash, already stored and processed) beside its next one. The state is rebuilt
    from every stored frame up to the batch's newest, its own left out: the old frames are then late, as
    they would have been live, and the frames between are in the state (rebuilt only up to the batch's
    oldest frame, they were not, and their fences, stops and trip were found again)."""
    coaches, (bus_one, bus_two), (first, second) = _two_coaches(ingest, operator_id)
    cut_ms = second[len(second) // 2].time_ms
    back = 20

    async def drive() -> None:
        async with _ingest_here(ingest, "old-redelivered") as (process, client):
            lost = False
            for step in range(max(len(m) for _, _, m in coaches.values())):
                losing = (
                    not lost
                    and step >= back
                    and any(step < len(m) and m[step][-1].time_ms >= cut_ms for _, _, m in coaches.values())
                )
                if losing:
                    lost = True
                    await client.delete(*(proc_key(operator_id, bus) for bus in (bus_one, bus_two)))
                for device, (_bus, key, messages) in coaches.items():
                    if step >= len(messages):
                        continue
                    topic = frames_topic(operator_id, device)
                    again = [Incoming(topic, seal(messages[step - back], key))] if losing else []
                    await process.take_in([*again, Incoming(topic, seal(messages[step], key))])
            assert lost

    asyncio.run(asyncio.wait_for(drive(), 120))
    _assert_each_event_raised_once(ingest, operator_id, first, second)
