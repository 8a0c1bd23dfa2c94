"""``fleet ingest``: broker → checks → TimescaleDB + Redis → ack, at least once.

One loop per process: take a micro-batch from the consumer (flushed by size
or after ``flush_ms``), assess it (pure), commit it to PostgreSQL, run the
processing step (pure: progress, ETAs, detectors) from each bus's state in
Redis, write positions, states and events back with a compare-and-set per
bus (a bus another process advanced meanwhile is recomputed from the state
that won), store and publish the events, then PUBACK every message in it.
The next batch is taken and assessed while one commits (the CPU work here
overlaps the wait on PostgreSQL and Redis); commits and acks still go one
batch at a time, in arrival order. A failed write is
retried with backoff and nothing is acked meanwhile; the consumer's receive
maximum then stops the broker from sending more (backpressure), and the
broker keeps the rest in the persistent session. SIGTERM finishes the batches
in hand, acks them and disconnects; what was received but not acked comes
again after the restart and is deduplicated by (device, seq).

The HTTP front (``fleet ingest http``) runs the same steps through
:meth:`Ingest.take_in`, without the broker: its requests are answered once
their batch is committed, and a store down longer than ``give_up_s`` fails the
batch with :class:`StoreUnavailable` (a 503: the app retries) instead of
waiting, since a phone's request cannot wait as long as the broker can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

import asyncpg
import msgspec
import numpy as np
import redis.asyncio as aioredis
import redis.exceptions

from fleet_ingest import metrics, owntracks
from fleet_ingest.assess import Accepted, Assessment, BusKey, DeviceInfo, Incoming, assess
from fleet_ingest.detectors import Detectors
from fleet_ingest.feeds import Networks
from fleet_ingest.live import newest_positions, previous
from fleet_ingest.mqtt_consumer import BATCH_MAX_BYTES, Consumer, Message, MqttError
from fleet_ingest.reprocess import frames_before, recovered_states
from fleet_ingest.settings import POOL_CONNECTIONS
from fleet_ingest.storage import Stored, prepare_connection, store_messages
from fleet_ingest.trips import Followed, SavedBus, follow
from fleet_processing.detect import STATE_ENCODER, load_state, went_offline
from fleet_processing.detection import DetectorPolicy
from fleet_processing.filters import BusTrack, FilterPolicy
from fleet_schemas import DeviceKey, Frame, frames_subscription
from fleet_schemas.backoff import Backoff, sleep_unless_stopped
from fleet_schemas.events import EVENT_ENCODER
from fleet_schemas.owntracks import KNOWN_TYPES, owntracks_subscription
from fleet_schemas.trips import StopVisit
from fleet_store import sessions
from fleet_store.etas import EtaBoards
from fleet_store.history import write_visits
from fleet_store.live import NOTHING_HELD, LiveState, OfflineWrite, ProcessingWrite, Updated
from fleet_store.outages import POSTGRES_UNAVAILABLE

_STORE_DOWN: tuple[type[Exception], ...] = (*POSTGRES_UNAVAILABLE, redis.exceptions.RedisError)
_FRAMES_UNREAD: tuple[type[Exception], ...] = (*POSTGRES_UNAVAILABLE, TimeoutError)

log = logging.getLogger("fleet_ingest.service")

T = TypeVar("T")


class _Abandoned(Exception):
    """A batch given up unacked because the process stops while a store is down."""


class StoreUnavailable(Exception):
    """A store stayed down longer than ``IngestOptions.give_up_s``; the batch may be retried whole."""

    def __init__(self, store: str) -> None:
        super().__init__(f"{store} is unavailable")
        self.store = store


class Taken(msgspec.Struct):
    """What one batch came to: the checks' verdict, what the commit did, and the frames shown live."""

    outcome: Assessment
    stored: Stored
    live: list[Accepted]


class _Checked(msgspec.Struct, frozen=True):
    """A batch taken from the broker and checked, waiting for its turn to commit."""

    messages: list[Message]
    incoming: list[Incoming]
    outcome: Assessment | None
    """None when the batch held nothing to assess (OwnTracks chatter only)"""
    ignored: list[str]
    """OwnTracks message types that carry no position, counted"""
    started: float
    """monotonic time the batch was taken"""


CAS_ROUNDS = 8
"""rounds of recomputing the buses another process advanced meanwhile before writing them unchecked"""
RECOVER_FRAMES_MAX = 100_000
"""stored frames a batch replays at most to rebuild the state of buses Redis holds none for (after a
Redis that lost its keys, a whole fleet's first batch): each bus gets its share, up to recover_fixes;
about 2 s of replay on the event loop, once"""
CHECK_SLICE_BYTES = 64 * 1024
"""payload checked between two yields to the event loop (about 350 one-frame messages, or 10 of
100 frames: a few milliseconds). A whole batch's check (30 ms for 2,000 one-frame messages, most
of a second for 140,000 frames) held back each step of the commit running beside it."""


class Outbox(Protocol):
    """Stores and publishes the events queued with the states (fleet_store.events.EventOutbox)."""

    async def flush(self, pool: asyncpg.Pool, operators: Iterable[str]) -> int: ...


class Registry(Protocol):
    """The view of devices and keys ingest checks against (fleet_ingest.keycache.KeyCache)."""

    def key(self, key_id: str) -> DeviceKey | None: ...

    def device(self, device: str) -> DeviceInfo | None: ...

    def tracker(self, device: str) -> owntracks.Tracker | None: ...


class IngestOptions(msgspec.Struct, frozen=True):
    """How one ingest process runs (FLEET_INGEST_* settings)."""

    client_id: str
    share_group: str = "ingest"
    batch_max: int = 2_000
    batch_max_bytes: int = BATCH_MAX_BYTES
    """payload per batch, so a batch of big messages cannot block the event loop for seconds"""
    flush_ms: float = 5.0
    receive_maximum: int = 20_000
    store_parts: int = 2
    """transactions a big batch is stored in, concurrently (FLEET_INGEST_STORE_PARTS); at most the pool's"""
    session_expiry_s: int = 604_800
    """how long the broker queues this instance's share while it is away (FLEET_INGEST_SESSION_EXPIRY_S)"""
    live_ttl_s: int = 900
    burst_idle_s: float | None = None
    """exit after this long with nothing to do (tests and one-off drains); None runs until stopped"""
    filters: FilterPolicy = msgspec.field(default_factory=FilterPolicy)
    detectors: DetectorPolicy = msgspec.field(default_factory=DetectorPolicy)
    sweep_s: float = 15.0
    """how often this process looks for buses gone silent (FLEET_INGEST_SWEEP_S)"""
    give_up_s: float | None = None
    """how long a write is retried before :class:`StoreUnavailable`; None: until it succeeds (MQTT)"""
    recover_s: float = 3_600.0
    """a bus with no processing state in Redis goes on from its stored frames of this long before its
    batch (FLEET_INGEST_RECOVER_S; 0: from nothing)"""
    recover_fixes: int = 600
    """of those, its newest this many at most (FLEET_INGEST_RECOVER_FIXES)"""
    recover_timeout_s: float = 10.0
    """the stored frames unread by then, the buses start from nothing (FLEET_INGEST_DB_TIMEOUT_S)"""


class FailingBuses:
    """Buses whose processing step failed lately, and when: their state was not written, so each of their
    batches would otherwise look up and replay their stored frames again, a query and a replay a batch."""

    def __init__(self, size: int = 100_000) -> None:
        self._size = size
        self._failed: OrderedDict[BusKey, float] = OrderedDict()

    def note(self, buses: Iterable[BusKey], now: float) -> None:
        for bus in buses:
            self._failed.pop(bus, None)
            self._failed[bus] = now
        while len(self._failed) > self._size:
            self._failed.popitem(last=False)

    def without(self, buses: Iterable[BusKey], now: float, window_s: float) -> set[BusKey]:
        """Those of ``buses`` that have not failed within ``window_s`` before ``now``."""
        return {b for b in buses if now - self._failed.get(b, -window_s - 1.0) > window_s}


def check_slices(incoming: Sequence[Incoming], max_bytes: int = CHECK_SLICE_BYTES) -> list[tuple[int, int]]:
    """The batch as consecutive (start, stop) ranges of at most ``max_bytes`` of payload, or one message."""
    slices: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, message in enumerate(incoming):
        if index > start and size + len(message.payload) > max_bytes:
            slices.append((start, index))
            start, size = index, 0
        size += len(message.payload)
    if start < len(incoming):
        slices.append((start, len(incoming)))
    return slices


def subscriptions(share_group: str) -> tuple[str, str]:
    """What an ingest process takes its share of: every device's signed frames, every OwnTracks app's JSON."""
    return frames_subscription(share_group), owntracks_subscription(share_group)


class _BusCache(Mapping[BusKey, BusTrack]):
    """Each bus's track for the checks, bounded; stale entries are still valid teleport references."""

    def __init__(self, size: int = 200_000) -> None:
        self._items: OrderedDict[BusKey, BusTrack] = OrderedDict()
        self._size = size

    def update(self, items: dict[BusKey, BusTrack]) -> None:
        for key, track in items.items():
            self._items[key] = track
            self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def __getitem__(self, key: BusKey) -> BusTrack:
        return self._items[key]

    def __iter__(self) -> Iterator[BusKey]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class Ingest:
    """One ingest process's loop; the stores and registry are handed in, opened by the caller."""

    def __init__(
        self,
        mqtt_url: str,
        pool: asyncpg.Pool,
        live: LiveState,
        registry: Registry,
        options: IngestOptions,
        boards: EtaBoards | None = None,
        networks: Networks | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._mqtt_url = mqtt_url
        self._pool = pool
        self._live = live
        self._registry = registry
        self._options = options
        self._boards = boards
        self._networks = networks
        self._outbox = outbox
        self._detectors = Detectors(options.detectors)
        self._buses = _BusCache()
        self._stop = asyncio.Event()
        self._failing = FailingBuses()
        self.batches = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` (or, in burst mode, until idle); reconnect to the broker on failure."""
        self._stop = stop
        await self.refresh_models()
        upkeep = asyncio.create_task(self._upkeep(stop))
        sweep = asyncio.create_task(self._sweep(stop))
        try:
            await self._connect_and_consume(stop)
        finally:
            upkeep.cancel()
            sweep.cancel()

    async def _upkeep(self, stop: asyncio.Event) -> None:
        """Every 30 s: say this instance holds its session, drop expired buses, count the live ones."""
        options = self._options
        while not stop.is_set():
            try:
                await sessions.record(
                    self._pool, options.client_id, options.share_group, options.session_expiry_s
                )
            except POSTGRES_UNAVAILABLE as exc:
                log.warning("recording the session failed", extra={"error": str(exc)})
            await self.refresh_models()
            try:
                await self._live.prune()
                metrics.BUSES_LIVE.set(await self._live.buses_live())
                metrics.BUSES_OFFLINE.set(await self._live.buses_offline())
                await self._flush_events(await self._live.operators())  # left by a process that died
            except _STORE_DOWN as exc:
                log.warning("live-state upkeep failed", extra={"error": str(exc)})
            await sleep_unless_stopped(stop, 30.0)

    async def refresh_models(self) -> None:
        """Follow the active feeds, fences and route limits; a failure keeps what is held (retried later)."""
        try:
            if self._networks is not None:
                await self._networks.refresh(self._pool)
            await self._detectors.refresh(self._pool)
        except POSTGRES_UNAVAILABLE as exc:
            log.warning("loading feeds or fences failed; will retry", extra={"error": str(exc)})

    async def _connect_and_consume(self, stop: asyncio.Event) -> None:
        backoff = Backoff(0.5, 15.0, stable_after_s=30.0)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                up_since: float | None = None
                try:
                    async with contextlib.AsyncExitStack() as session:
                        # The handshake races SIGTERM: a broker that never answers must not hold up a stop.
                        entering = asyncio.ensure_future(
                            session.enter_async_context(
                                Consumer(
                                    self._mqtt_url,
                                    self._options.client_id,
                                    subscriptions(self._options.share_group),
                                    session_expiry_s=self._options.session_expiry_s,
                                    receive_maximum=self._options.receive_maximum,
                                )
                            )
                        )
                        await asyncio.wait([entering, stopping], return_when=asyncio.FIRST_COMPLETED)
                        if not entering.done():
                            entering.cancel()
                            await asyncio.gather(entering, return_exceptions=True)
                            return
                        consumer = entering.result()
                        up_since = time.monotonic()
                        log.info(
                            "subscribed",
                            extra={
                                "client_id": consumer.client_id,
                                "session_present": consumer.session_present,
                                "keepalive_s": consumer.keepalive_s,
                            },
                        )
                        if await self._consume(consumer, stopping):
                            return
                except _Abandoned as exc:
                    log.warning(
                        "stopping with a batch unacked; the broker will deliver it again",
                        extra={"store": str(exc)},
                    )
                    return
                except MqttError as exc:
                    metrics.RECONNECTS.inc()
                    delay = backoff.next_delay(0.0 if up_since is None else time.monotonic() - up_since)
                    log.warning(
                        "broker connection lost; reconnecting",
                        extra={
                            "error": str(exc),
                            "reason_code": exc.reason_code,
                            "retry_in_s": round(delay, 2),
                        },
                    )
                    await sleep_unless_stopped(stop, delay)
        finally:
            stopping.cancel()

    async def _consume(self, consumer: Consumer, stopping: asyncio.Future[Literal[True]]) -> bool:
        """Batches until stopped (False) or idle in burst mode (True).

        Two batches are in hand at most: the next one is taken and checked (CPU
        in this process) while the one before it commits (waiting on PostgreSQL
        and Redis), so neither waits for the other. The check yields to the
        loop between slices (:func:`check_slices`), so each step of the commit
        waits for one slice at most. Commits, live updates and acks still go one
        batch at a time, in the order the batches came.
        """
        idle_since = time.monotonic()
        committing: asyncio.Task[None] | None = None
        try:
            while not stopping.done():
                messages = await self._take(consumer, stopping)
                metrics.IN_FLIGHT.set(consumer.waiting + len(messages))
                if not messages:
                    if committing is not None:  # its acks may be what lets the broker send more
                        earlier, committing = committing, None
                        await earlier
                        idle_since = time.monotonic()
                        continue
                    burst = self._options.burst_idle_s
                    if burst is not None and time.monotonic() - idle_since >= burst:
                        return True
                    continue
                checked = await self._check(messages)
                if committing is not None:
                    earlier, committing = committing, None
                    await earlier
                committing = asyncio.create_task(self._commit_and_ack(consumer, checked))
                idle_since = time.monotonic()
        finally:
            if committing is not None:
                await committing
        return False

    async def _take(self, consumer: Consumer, stopping: asyncio.Future[Literal[True]]) -> list[Message]:
        """One batch: wait for a first message, give more ``flush_ms`` to arrive, take up to the limits."""
        arriving = asyncio.ensure_future(consumer.wait(1.0))
        waiters: list[asyncio.Future[Any]] = [arriving, stopping]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not arriving.done():
            arriving.cancel()
            return []
        arriving.result()
        options = self._options
        if (
            0 < consumer.waiting < options.batch_max
            and consumer.waiting_bytes < options.batch_max_bytes
            and not stopping.done()
        ):
            await asyncio.sleep(options.flush_ms / 1000)
        return consumer.take(options.batch_max, options.batch_max_bytes)

    async def _check(self, messages: list[Message]) -> _Checked:
        """Sort out one batch's OwnTracks chatter and assess the rest (the batch's CPU work)."""
        started = time.monotonic()
        registry = self._registry
        incoming, ignored = owntracks.sort_out(
            ((m.topic, m.payload) for m in messages), registry.tracker, registry.device
        )
        outcome = await self._assess(incoming) if incoming else None
        return _Checked(messages, incoming, outcome, ignored, started)

    async def _commit_and_ack(self, consumer: Consumer, checked: _Checked) -> None:
        if checked.outcome is not None:
            await self._commit(checked.incoming, checked.outcome)
        for kind in checked.ignored:
            metrics.OWNTRACKS_IGNORED.labels(kind if kind in KNOWN_TYPES else "other").inc()
        consumer.ack([m.packet_id for m in checked.messages])
        metrics.MESSAGES.inc(len(checked.messages))
        metrics.FLUSH_SECONDS.observe(time.monotonic() - checked.started)
        self.batches += 1

    async def take_in(self, incoming: list[Incoming]) -> Taken:
        """Check, commit and process one batch; return once it is committed and shown live.

        Raises StoreUnavailable if PostgreSQL (or Redis, before the commit) stays
        down past ``give_up_s``. A Redis failure after the commit does not undo
        it: the frames are in history, and only their live update is lost.
        """
        return await self._commit(incoming, await self._assess(incoming))

    async def _commit(self, incoming: list[Incoming], outcome: Assessment) -> Taken:
        """Store an assessed batch, then process and show live what it kept."""
        batch_id = uuid.uuid4()
        done: dict[uuid.UUID, Stored] = {}  # what each transaction committed, kept across retries
        stored = await self._retry("postgresql", lambda: self._store(batch_id, incoming, outcome, done))
        live = stored.kept(outcome.accepted)
        self._count(outcome, stored, live)
        if live:
            try:
                await self._process(live)
            except StoreUnavailable:
                metrics.LIVE_SKIPPED.inc(len(live))
                log.warning(
                    "batch committed but not shown live: redis unavailable", extra={"frames": len(live)}
                )
        return Taken(outcome, stored, live)

    async def keep_models(self, stop: asyncio.Event) -> None:
        """Follow the feeds, fences and route limits every 30 s, for a process that does not :meth:`run`."""
        self._stop = stop
        while not stop.is_set():
            await self.refresh_models()
            await sleep_unless_stopped(stop, 30.0)

    def _checked(self, incoming: list[Incoming], first_index: int) -> Assessment:
        now_ms = int(time.time() * 1000)
        return assess(
            incoming,
            self._registry.key,
            self._registry.device,
            self._buses,
            self._options.filters,
            now_ms,
            first_index,
        )

    async def _assess(self, incoming: list[Incoming]) -> Assessment:
        """Assess a batch a slice at a time, letting the running commit go on between slices."""
        outcome = Assessment(accepted=[], rejected=[], tracks={})
        for start, stop in check_slices(incoming):
            if start:
                await asyncio.sleep(0)
            part = await self._assess_slice(incoming[start:stop], start)
            outcome.accepted += part.accepted
            outcome.rejected += part.rejected
            outcome.tracks.update(part.tracks)
        return outcome

    async def _assess_slice(self, incoming: list[Incoming], first_index: int) -> Assessment:
        """Assess messages and remember their buses' tracks for the next ones' checks.

        The tracks are kept before the batch commits, so the next slice and batch
        can be checked meanwhile; a batch that then fails to commit comes again,
        and a frame judged against a track that already holds it passes again.
        """
        outcome = self._checked(incoming, first_index)
        unknown = {
            (a.operator, a.frame.bus)
            for a in outcome.accepted
            if (a.operator, a.frame.bus) not in self._buses
        }
        if unknown:
            # First frames of buses this process has not seen: check them against Redis's last fix too.
            seeded = await self._retry("redis", lambda: previous(self._live, unknown))
            if seeded:
                self._buses.update(seeded)
                outcome = self._checked(incoming, first_index)
        self._buses.update(outcome.tracks)
        return outcome

    async def _store(
        self,
        batch_id: uuid.UUID,
        incoming: list[Incoming],
        outcome: Assessment,
        done: dict[uuid.UUID, Stored],
    ) -> Stored:
        started = time.monotonic()
        stored = await store_messages(
            self._pool,
            batch_id,
            incoming,
            outcome.accepted,
            outcome.rejected,
            parts=self._options.store_parts,
            done=done,
        )
        committed = time.time()
        metrics.DB_WRITE_SECONDS.observe(time.monotonic() - started)
        fix_ms = np.fromiter((a.frame.time_ms for a in outcome.accepted), np.float64, len(outcome.accepted))
        metrics.LAG_SECONDS.observe_many(np.maximum(0.0, committed - fix_ms / 1000))
        return stored

    async def _retry(self, store: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Retry a write until it succeeds; meanwhile nothing is acked (the broker holds the messages).

        If the process is told to stop while a store is down, the batch is
        abandoned unacked: the broker delivers it again after the restart.
        """
        backoff = Backoff(0.2, 5.0)
        give_up_at = None if self._options.give_up_s is None else time.monotonic() + self._options.give_up_s
        while True:
            try:
                if give_up_at is None:
                    return await attempt()
                # A server that does not answer at all (not even a refused connection) is down too.
                return await asyncio.wait_for(attempt(), max(0.1, give_up_at - time.monotonic()))
            except _STORE_DOWN as exc:
                metrics.STORE_ERRORS.labels(store).inc()
                delay = backoff.next_delay()
                if store == "postgresql":
                    # Connections that saw the server go away may be half-broken: take fresh ones.
                    await self._pool.expire_connections()
                log.warning(
                    "write failed; retrying, nothing acked meanwhile",
                    extra={"store": store, "error": str(exc), "retry_in_s": round(delay, 2)},
                )
                if self._stop.is_set():
                    raise _Abandoned(store) from exc
                if give_up_at is not None and time.monotonic() + delay > give_up_at:
                    raise StoreUnavailable(store) from exc
                await sleep_unless_stopped(self._stop, delay)

    async def _process(self, kept: list[Accepted]) -> None:
        """Process the kept frames and write the result, bus by bus compare-and-set.

        A bus another process wrote between our read and our write comes back
        as a conflict: it is read again and its frames run again from the
        state that won (those not newer than it are then late). After
        ``CAS_ROUNDS`` rounds its position is written without the check, and
        without events. A bus Redis holds no state for, in any round, starts
        from the state its stored frames lead to (:meth:`_recover`), still
        written only if Redis holds none for it yet.
        """
        pending = kept
        for _ in range(CAS_ROUNDS):
            buses = sorted({(a.operator, a.frame.bus) for a in pending})
            held = await self._retry("redis", partial(self._live.processing, buses))
            saved = dict(zip(buses, held, strict=True))
            carried = {k: SavedBus(h.progress, h.state) for k, h in saved.items()}
            # Also after a conflict: the bus's hash may have been lost (a Redis that restarted empty)
            # between our read and our write, rather than written by another process.
            empty = {k for k, h in saved.items() if h == NOTHING_HELD}
            if empty and self._options.recover_s > 0:
                carried |= await self._recover(pending, empty)
            followed = self._follow(pending, carried)
            if followed is None:
                self._failing.note(buses, time.monotonic())
                await self._retry("redis", partial(self._update_live, pending, None, {}))
                return
            events: dict[BusKey, list[bytes]] = defaultdict(list)
            for event in followed.events:
                events[(event.operator, event.bus)].append(EVENT_ENCODER.encode(event))
            writes = {
                key: ProcessingWrite(
                    saved[key].version,
                    followed.progress.get(key),
                    followed.states.get(key),
                    events.get(key, ()),
                )
                for key in buses
            }
            updated = await self._retry("redis", partial(self._update_live, pending, followed, writes))
            await self._publish(followed.only(set(buses) - updated.conflicts))
            if not updated.conflicts:
                return
            metrics.STATE_CONFLICTS.inc(len(updated.conflicts))
            pending = [a for a in pending if (a.operator, a.frame.bus) in updated.conflicts]
        log.warning("buses still contended; written without events", extra={"buses": len(pending)})
        await self._retry("redis", partial(self._update_live, pending, None, {}))

    async def _recover(self, kept: list[Accepted], empty: set[BusKey]) -> dict[BusKey, SavedBus]:
        """The state each bus of ``empty`` would have, from its stored frames other than this batch's.

        A new bus has none and keeps starting from nothing; one whose state Redis lost (or let expire)
        goes on where its frames left it, so its trip, the fences it is in and its online state are
        not found, and raised, a second time. Best effort: a batch reads ``RECOVER_FRAMES_MAX``
        frames at most, a bus whose processing failed lately is not looked up again for
        ``recover_s``, and a database that fails or is slow, or a replay that fails, leaves the buses
        starting from nothing (as before the recovery existed), logged and counted, never a stalled batch.
        """
        wanted = self._failing.without(empty, time.monotonic(), self._options.recover_s)
        if not wanted:
            return {}
        batch: dict[str, dict[str, list[Frame]]] = defaultdict(lambda: defaultdict(list))
        for a in kept:
            if (a.operator, a.frame.bus) in wanted:
                batch[a.operator][a.frame.bus].append(a.frame)
        per_bus = max(1, min(self._options.recover_fixes, RECOVER_FRAMES_MAX // len(wanted)))
        frames: list[Accepted] = []
        try:
            async with asyncio.timeout(self._options.recover_timeout_s), self._pool.acquire() as conn:
                for operator, buses in batch.items():
                    frames += await frames_before(conn, operator, buses, self._options.recover_s, per_bus)
        except _FRAMES_UNREAD as exc:
            metrics.RECOVERY_FAILURES.inc()
            log.warning(
                "stored frames unreadable; buses without state start from nothing",
                extra={"buses": len(wanted), "error": str(exc) or type(exc).__name__},
            )
            return {}
        if not frames:
            return {}
        models = self._networks.models if self._networks is not None else {}
        try:
            recovered = recovered_states(models, self._detectors.contexts(batch.keys()), frames)
        except Exception:
            metrics.RECOVERY_FAILURES.inc()
            log.exception("replaying stored frames failed; buses without state start from nothing")
            return {}
        metrics.STATES_RECOVERED.inc(len(recovered))
        log.info(
            "processing state rebuilt from stored frames",
            extra={"buses": len(recovered), "frames": len(frames)},
        )
        return recovered

    def _follow(self, kept: list[Accepted], saved: Mapping[BusKey, SavedBus]) -> Followed | None:
        """The processing step (pure, in fleet_processing) on the kept frames.

        Its output is derived data: if it fails (a bug, a feed it cannot
        handle), the batch is still stored, acked and shown live without trip
        data or events, and the failure is logged and counted, never a stalled stream.
        """
        models = self._networks.models if self._networks is not None else {}
        contexts = self._detectors.contexts({a.operator for a in kept})
        started = time.monotonic()
        try:
            followed = follow(models, contexts, kept, saved, int(time.time() * 1000))
        except Exception:
            metrics.PROCESSING_ERRORS.inc()
            log.exception(
                "processing step failed; batch stored without trip data", extra={"buses": len(saved)}
            )
            return None
        metrics.PROCESSING_SECONDS.observe(time.monotonic() - started)
        return followed

    async def _publish(self, won: Followed) -> None:
        """What the written buses' processing gave: visits to history, ETAs to the boards, events out."""
        for calculated in won.calculated.values():
            metrics.BUSES_BY_TRIP_STATE.labels(calculated.state).inc()
        metrics.FRAMES_LATE.inc(sum(won.late.values()))
        for event in won.events:
            metrics.EVENTS.labels(event.kind).inc()
        if won.visits:
            await self._retry("postgresql", lambda: self._store_visits(won.visits))
        if won.etas and self._boards is not None:
            boards = self._boards
            await self._retry("redis", lambda: boards.publish(won.etas, int(time.time() * 1000)))
        if won.events:
            operators = {e.operator for e in won.events}
            await self._retry("postgresql", lambda: self._flush_events(operators))

    async def _flush_events(self, operators: Iterable[str]) -> None:
        if self._outbox is not None:
            metrics.EVENTS_STORED.inc(await self._outbox.flush(self._pool, operators))

    async def _sweep(self, stop: asyncio.Event) -> None:
        """Every ``sweep_s``: declare offline the buses silent for the policy's ``offline_s``.

        Any number of processes may sweep at once: each bus's ``bus_offline``
        is written by one compare-and-set on its state, so only one wins.
        """
        while not stop.is_set():
            await sleep_unless_stopped(stop, self._options.sweep_s)
            if stop.is_set():
                return
            try:
                await self._sweep_once(int(time.time() * 1000))
            except _STORE_DOWN as exc:
                log.warning("offline sweep failed; will retry", extra={"error": str(exc)})

    async def _sweep_once(self, now_ms: int) -> int:
        cutoff = now_ms - round(self._options.detectors.offline_s * 1000)
        metrics.OFFLINE_SWEEPS.inc()
        declared = 0
        for operator in await self._live.operators():
            silent = await self._live.silent(operator, cutoff)
            if not silent:
                continue
            context = self._detectors.contexts([operator])[operator]
            writes = []
            for bus in silent:
                result = went_offline(bus.bus, load_state(bus.processing.state), context)
                if result is None:
                    writes.append(OfflineWrite(operator, bus.bus, bus.processing.version))
                else:
                    state, event = result
                    writes.append(
                        OfflineWrite(
                            operator,
                            bus.bus,
                            bus.processing.version,
                            STATE_ENCODER.encode(state),
                            EVENT_ENCODER.encode(event),
                        )
                    )
            found = await self._live.declare_offline(writes, cutoff)
            if found:
                metrics.EVENTS.labels("bus_offline").inc(found)
                await self._flush_events([operator])
            declared += found
        return declared

    async def _store_visits(self, visits: list[StopVisit]) -> None:
        async with self._pool.acquire() as conn:
            metrics.STOP_VISITS.inc(await write_visits(conn, visits))

    async def _update_live(
        self, accepted: list[Accepted], followed: Followed | None, writes: Mapping[BusKey, ProcessingWrite]
    ) -> Updated:
        started = time.monotonic()
        now_ms = int(time.time() * 1000)
        positions = newest_positions(accepted, now_ms, followed.calculated if followed is not None else None)
        updated = await self._live.update(positions, now_ms, writes)
        metrics.REDIS_WRITE_SECONDS.observe(time.monotonic() - started)
        return updated

    @staticmethod
    def _count(outcome: Assessment, stored: Stored, kept: list[Accepted]) -> None:
        metrics.BATCH_FRAMES.observe(len(outcome.accepted) + len(outcome.rejected))
        metrics.FRAMES_RECEIVED.inc(len(outcome.accepted) + len(outcome.rejected))
        metrics.FRAMES_ACCEPTED.inc(len(stored.new))
        metrics.DUPLICATES.inc(max(0, len(kept) - len(stored.new)))
        metrics.REJECTIONS_REPEATED.inc(stored.repeated)
        for rejected in (*outcome.rejected, *stored.refused):
            if rejected.message not in stored.dropped or rejected.reason == "unstorable":
                metrics.FRAMES_REJECTED.labels(rejected.reason).inc()


async def open_pool(database_url: str, timeout_s: float | None = None) -> asyncpg.Pool:
    """The connection pool ingest writes through (each connection has its staging table).

    ``timeout_s`` bounds each connect and each query: one that times out is
    retried like any store error (:meth:`Ingest._retry`), on a new connection.
    """
    pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=POOL_CONNECTIONS,
        init=prepare_connection,
        command_timeout=timeout_s,
        timeout=timeout_s if timeout_s is not None else 60.0,
    )
    assert pool is not None
    return pool


def open_redis(redis_url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
    )
