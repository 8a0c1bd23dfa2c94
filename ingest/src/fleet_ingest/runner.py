"""Wires one ``fleet ingest`` process: servers, key cache, metrics endpoint, signals, upkeep.

Everything here is I/O at the edge; the loop itself is :class:`fleet_ingest.service.Ingest`.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import start_http_server

from fleet_ingest.feeds import Networks
from fleet_ingest.intake import Intake
from fleet_ingest.keycache import KeyCache
from fleet_ingest.mqtt_consumer import Consumer
from fleet_ingest.ratelimit import RateLimiter
from fleet_ingest.service import Ingest, IngestOptions, open_pool, open_redis, subscriptions
from fleet_ingest.settings import HttpIngestSettings, IngestSettings
from fleet_ingest.tokencache import TokenCache
from fleet_schemas.backoff import sleep_unless_stopped
from fleet_store.collector import tune_collector
from fleet_store.errors import ConfigError
from fleet_store.etas import EtaBoards
from fleet_store.events import EventOutbox
from fleet_store.history import refresh_segment_times
from fleet_store.live import LiveState
from fleet_store.maintain import maintain, refresh_rollups
from fleet_store.outages import POSTGRES_UNAVAILABLE
from fleet_store.secretbox import load_key_encryption_key
from fleet_store.settings import ServiceUrls, Settings

log = logging.getLogger("fleet_ingest.runner")

ROLLUP_EVERY_S = 60.0
RETENTION_EVERY_S = 3_600.0
_MAINTENANCE_LOCK = 0x666C656574 + 1


def serve_metrics(address: str) -> None:
    """Serve Prometheus metrics on ``host:port`` in a thread; an empty address serves none."""
    if not address:
        return
    host, _, port = address.rpartition(":")
    try:
        start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104 - the operator chose it
    except (ValueError, OSError) as exc:
        raise ConfigError(f"FLEET_METRICS_ADDR={address!r} cannot be served: {exc}") from exc
    log.info("metrics served", extra={"address": address})


async def _maintenance(database_url: str, settings: Settings, stop: asyncio.Event) -> None:
    """Rollups (positions, travel times) every minute and retention every hour, by the lock's holder."""
    last_retention = 0.0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        await sleep_unless_stopped(stop, ROLLUP_EVERY_S)
        if stop.is_set():
            return
        try:
            conn = await asyncpg.connect(database_url)
            try:
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _MAINTENANCE_LOCK):
                    continue
                if loop.time() - last_retention >= RETENTION_EVERY_S:
                    report = await maintain(database_url, settings.retention)
                    last_retention = loop.time()
                    log.info(
                        "maintenance done",
                        extra={"minutes": report.minutes_refreshed, "dropped": str(report.chunks_dropped)},
                    )
                else:
                    await refresh_rollups(conn)
                    await refresh_segment_times(conn)
            finally:
                await conn.close()
        except POSTGRES_UNAVAILABLE as exc:
            log.warning("maintenance failed; will retry", extra={"error": str(exc)})


async def open_session(mqtt_url: str, client_id: str, share_group: str, expiry_s: int = 604_800) -> None:
    """Create (or keep) an instance's persistent session before its first run: the broker queues its share.

    Without Clean Start: an existing session keeps what it queued, and Mosquitto writes a
    session to its persistence only if the client's last CONNECT did not ask for a clean start,
    so one created with it would be lost, queue and all, by a broker restart before ingest ran.
    """
    await _session(mqtt_url, client_id, share_group, clean_start=False, expiry_s=expiry_s)


async def forget_session(mqtt_url: str, client_id: str, share_group: str) -> None:
    """Delete an ingest instance's persistent session (and what the broker queued for it)."""
    await _session(mqtt_url, client_id, share_group, clean_start=True, expiry_s=0)


async def _session(
    mqtt_url: str, client_id: str, share_group: str, *, clean_start: bool, expiry_s: int
) -> None:
    async with Consumer(
        mqtt_url, client_id, subscriptions(share_group), clean_start=clean_start, session_expiry_s=expiry_s
    ):
        pass


async def run_ingest(
    settings: Settings,
    ingest_settings: IngestSettings,
    urls: ServiceUrls,
    *,
    client_id: str,
    burst_idle_s: float | None,
) -> int:
    """Run until SIGTERM/SIGINT (or idle in burst mode); return the number of batches handled."""
    kek = load_key_encryption_key(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    options = _options(settings, ingest_settings, client_id=client_id, burst_idle_s=burst_idle_s)
    pool = await open_pool(urls.database_url, ingest_settings.db_timeout_s)
    redis_client = open_redis(urls.redis_url)
    try:
        async with KeyCache(urls.database_url, kek) as registry:
            ingest = _pipeline(settings, ingest_settings, urls, pool, redis_client, registry, options)
            upkeep = asyncio.create_task(_maintenance(urls.database_url, settings, stop))
            tune_collector()
            try:
                await ingest.run(stop)
            finally:
                stop.set()
                await upkeep
            return ingest.batches
    finally:
        await pool.close()
        await redis_client.aclose()


def _options(
    settings: Settings,
    ingest_settings: IngestSettings,
    *,
    client_id: str,
    burst_idle_s: float | None = None,
    give_up_s: float | None = None,
) -> IngestOptions:
    return IngestOptions(
        client_id=client_id,
        share_group=ingest_settings.group,
        batch_max=ingest_settings.batch_max,
        store_parts=ingest_settings.store_parts,
        flush_ms=ingest_settings.flush_ms,
        session_expiry_s=ingest_settings.session_expiry_s,
        live_ttl_s=settings.live_ttl_s,
        burst_idle_s=burst_idle_s,
        filters=ingest_settings.filters,
        detectors=ingest_settings.detectors,
        sweep_s=ingest_settings.sweep_s,
        give_up_s=give_up_s,
        recover_s=ingest_settings.recover_s,
        recover_fixes=ingest_settings.recover_fixes,
        recover_timeout_s=ingest_settings.db_timeout_s,
    )


def _pipeline(
    settings: Settings,
    ingest_settings: IngestSettings,
    urls: ServiceUrls,
    pool: asyncpg.Pool,
    redis_client: aioredis.Redis,
    registry: KeyCache,
    options: IngestOptions,
) -> Ingest:
    """The pipeline both fronts run: checks, storage, trip processing, events."""
    return Ingest(
        urls.mqtt_url,
        pool,
        LiveState(redis_client, settings.live_ttl_s, ingest_settings.state_ttl_s),
        registry,
        options,
        boards=EtaBoards(redis_client, ingest_settings.eta_ttl_s),
        networks=Networks(ingest_settings.feed_refresh_s) if ingest_settings.trips else None,
        outbox=EventOutbox(redis_client),
    )


def _host_port(address: str, name: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"{name}={address!r}: expected host:port, as 0.0.0.0:5055")
    return host or "0.0.0.0", int(port)  # noqa: S104 - the operator chose it


async def run_http_ingest(
    settings: Settings, ingest_settings: IngestSettings, http_settings: HttpIngestSettings, urls: ServiceUrls
) -> None:
    """Serve the HTTP front until SIGTERM/SIGINT: in-flight requests are answered, then the pipeline stops.

    No broker is involved: it needs PostgreSQL and Redis only. Maintenance
    (rollups, retention) and the offline sweep stay with ``fleet ingest``.
    """
    import uvicorn

    from fleet_ingest.http_front import HttpFront  # litestar: loaded by the HTTP front only

    host, port = _host_port(http_settings.addr, "FLEET_HTTP_INGEST_ADDR")
    kek = load_key_encryption_key(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)  # uvicorn takes them while it serves, and raises them again
    options = _options(settings, ingest_settings, client_id="http", give_up_s=http_settings.give_up_s)
    pool = await open_pool(urls.database_url, ingest_settings.db_timeout_s)
    redis_client = open_redis(urls.redis_url)
    try:
        async with (
            KeyCache(urls.database_url, kek) as registry,
            TokenCache(pool, urls.database_url) as tokens,
        ):
            ingest = _pipeline(settings, ingest_settings, urls, pool, redis_client, registry, options)
            intake = Intake(ingest, http_settings.batch_max)
            limiter = RateLimiter(http_settings.rate_per_s, http_settings.burst)
            front = HttpFront(intake, tokens, limiter, http_settings.max_body_bytes)
            server = uvicorn.Server(
                uvicorn.Config(
                    front.app(),
                    host=host,
                    port=port,
                    log_config=None,
                    access_log=False,  # request URLs hold device tokens
                    lifespan="off",
                    timeout_graceful_shutdown=10,
                )
            )
            running = [asyncio.create_task(intake.run(stop)), asyncio.create_task(ingest.keep_models(stop))]
            log.info("http ingest listening", extra={"address": f"{host}:{port}"})
            try:
                await server.serve()
            finally:
                stop.set()
                await asyncio.gather(*running, return_exceptions=True)
    finally:
        await pool.close()
        await redis_client.aclose()
