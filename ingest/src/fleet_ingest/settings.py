"""Settings of ``fleet ingest`` alone, read once from ``FLEET_INGEST_*`` (and the metrics address).

The servers, keys and retention every process shares are in
:mod:`fleet_store.settings`; these only tune the ingest loop and its checks.

| variable | default | meaning |
|---|---|---|
| ``FLEET_METRICS_ADDR`` | ``127.0.0.1:9464`` | where ``/metrics`` is served (empty: nowhere) |
| ``FLEET_INGEST_GROUP`` | ``ingest`` | MQTT 5 shared-subscription group of the ingest processes |
| ``FLEET_INGEST_CLIENT_ID`` | ``ingest-<host>`` | MQTT client id (persistent session); one per process |
| ``FLEET_INGEST_BATCH_MAX`` | ``2000`` | messages per micro-batch at most |
| ``FLEET_INGEST_STORE_PARTS`` | ``2`` | big-batch transactions at once (1-4; 1: many processes, one host) |
| ``FLEET_INGEST_SESSION_EXPIRY_S`` | ``604800`` | the broker queues an absent instance's share this long |
| ``FLEET_INGEST_FLUSH_MS`` | ``5`` | how long a batch waits to fill once its first message arrived |
| ``FLEET_INGEST_HORIZON_DAYS`` | ``30`` | frames older than this are rejected (``too_old``) |
| ``FLEET_INGEST_FUTURE_TOLERANCE_S`` | ``120`` | frames further in the future are rejected (``future``) |
| ``FLEET_INGEST_MAX_ACCURACY_M`` | ``500`` | frames less accurate are rejected (``inaccurate``) |
| ``FLEET_INGEST_MAX_SPEED_MPS`` | ``55`` | jumps implying more are rejected (``teleport``) |
| ``FLEET_INGEST_TRIPS`` | ``on`` | follow buses on their trips (progress, ETAs); ``off``: positions only |
| ``FLEET_INGEST_FEED_REFRESH_S`` | ``30`` | how often the active feed versions are checked |
| ``FLEET_INGEST_ETA_TTL_S`` | ``3600`` | trip ETAs and stop boards expire this long after their last update |
| ``FLEET_INGEST_STATE_TTL_S`` | ``604800`` | a bus's progress and detector state expire after this |
| ``FLEET_INGEST_OFFLINE_S`` | ``600`` | a bus silent this long gets ``bus_offline`` |
| ``FLEET_INGEST_SWEEP_S`` | ``15`` | how often each process looks for silent buses |
| ``FLEET_INGEST_DEVIATION_M`` | ``2000`` | off its trip's line further than this, a bus leaves its corridor |
| ``FLEET_INGEST_DEVIATION_RETURN_M`` | ``1500`` | and is back under this |
| ``FLEET_INGEST_DEVIATION_MIN_S`` | ``60`` | for at least this long before ``deviation_started`` |
| ``FLEET_INGEST_DELAY_BANDS_S`` | ``-120,300,900,1800`` | lower limits of on time, 5, 15, 30 min late |
| ``FLEET_INGEST_OVERSPEED_MIN_S`` | ``5`` | above a fence's speed limit this long raises ``overspeed`` |
| ``FLEET_INGEST_DB_TIMEOUT_S`` | ``10`` | a PostgreSQL connect or query unanswered this long is retried |
| ``FLEET_INGEST_RECOVER_S`` | ``3600`` | no state in Redis: replay from this long before the batch (0: no) |
| ``FLEET_INGEST_RECOVER_FIXES`` | ``600`` | of those, its newest this many at most |

The HTTP front for drivers' phones (``fleet ingest http``) reads these too, and:

| variable | default | meaning |
|---|---|---|
| ``FLEET_HTTP_INGEST_ADDR`` | ``127.0.0.1:5055`` | where it listens (5055: Traccar's OsmAnd port) |
| ``FLEET_HTTP_INGEST_METRICS_ADDR`` | ``127.0.0.1:9465`` | its ``/metrics`` (empty: nowhere) |
| ``FLEET_HTTP_INGEST_RATE_PER_S`` | ``2`` | requests a second per device, sustained |
| ``FLEET_HTTP_INGEST_BURST`` | ``120`` | requests per device at once (an app emptying its offline queue) |
| ``FLEET_HTTP_INGEST_MAX_BODY_BYTES`` | ``524288`` | larger bodies get 413 |
| ``FLEET_HTTP_INGEST_GIVE_UP_S`` | ``5`` | a store down this long answers 503 with Retry-After |
| ``FLEET_HTTP_INGEST_BATCH_MAX`` | ``500`` | requests committed in one transaction at most |
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import msgspec

from fleet_processing.detection import DetectorPolicy
from fleet_processing.filters import FilterPolicy
from fleet_store.errors import ConfigError
from fleet_store.settings import PREFIX, env_number

POOL_CONNECTIONS = 4
"""connections of an ingest process's PostgreSQL pool: a batch's concurrent parts at most"""


class IngestSettings(msgspec.Struct, frozen=True):
    """What one ingest process reads beyond the shared settings."""

    metrics_addr: str = "127.0.0.1:9464"
    group: str = "ingest"
    client_id: str = "ingest"
    batch_max: int = 2_000
    store_parts: int = 2
    flush_ms: float = 5.0
    session_expiry_s: int = 604_800
    trips: bool = True
    feed_refresh_s: float = 30.0
    eta_ttl_s: int = 3_600
    state_ttl_s: int = 604_800
    sweep_s: float = 15.0
    db_timeout_s: float = 10.0
    """a silent network drops packets without an error: without a deadline a query waits for TCP's
    retransmission backoff, up to two minutes after the network is back"""
    recover_s: float = 3_600.0
    recover_fixes: int = 600
    filters: FilterPolicy = msgspec.field(default_factory=FilterPolicy)
    detectors: DetectorPolicy = msgspec.field(default_factory=DetectorPolicy)


class HttpIngestSettings(msgspec.Struct, frozen=True):
    """What ``fleet ingest http`` reads beyond the ingest settings."""

    addr: str = "127.0.0.1:5055"
    metrics_addr: str = "127.0.0.1:9465"
    rate_per_s: float = 2.0
    burst: float = 120.0
    max_body_bytes: int = 524_288
    give_up_s: float = 5.0
    batch_max: int = 500


def load_http_ingest_settings(environ: Mapping[str, str] | None = None) -> HttpIngestSettings:
    """Read the FLEET_HTTP_INGEST_* variables once."""
    env = os.environ if environ is None else environ
    return HttpIngestSettings(
        addr=env.get(f"{PREFIX}HTTP_INGEST_ADDR") or "127.0.0.1:5055",
        metrics_addr=env.get(f"{PREFIX}HTTP_INGEST_METRICS_ADDR", "127.0.0.1:9465"),
        rate_per_s=env_number(env, "HTTP_INGEST_RATE_PER_S", 2.0) or 2.0,
        burst=max(1.0, env_number(env, "HTTP_INGEST_BURST", 120.0)),
        max_body_bytes=int(env_number(env, "HTTP_INGEST_MAX_BODY_BYTES", 524_288)) or 524_288,
        give_up_s=env_number(env, "HTTP_INGEST_GIVE_UP_S", 5.0),
        batch_max=int(env_number(env, "HTTP_INGEST_BATCH_MAX", 500)) or 1,
    )


def load_ingest_settings(environ: Mapping[str, str] | None = None) -> IngestSettings:
    """Read the ingest variables once into a typed IngestSettings."""
    env = os.environ if environ is None else environ
    return IngestSettings(
        metrics_addr=env.get(f"{PREFIX}METRICS_ADDR", "127.0.0.1:9464"),
        group=env.get(f"{PREFIX}INGEST_GROUP", "ingest"),
        client_id=env.get(f"{PREFIX}INGEST_CLIENT_ID") or f"ingest-{socket.gethostname()}",
        batch_max=int(env_number(env, "INGEST_BATCH_MAX", 2_000)) or 1,
        store_parts=max(1, min(POOL_CONNECTIONS, int(env_number(env, "INGEST_STORE_PARTS", 2)))),
        flush_ms=env_number(env, "INGEST_FLUSH_MS", 5.0),
        session_expiry_s=int(env_number(env, "INGEST_SESSION_EXPIRY_S", 604_800)),
        trips=_switch(env, "INGEST_TRIPS", default=True),
        feed_refresh_s=env_number(env, "INGEST_FEED_REFRESH_S", 30.0),
        eta_ttl_s=int(env_number(env, "INGEST_ETA_TTL_S", 3_600)),
        state_ttl_s=int(env_number(env, "INGEST_STATE_TTL_S", 604_800)) or 1,
        sweep_s=env_number(env, "INGEST_SWEEP_S", 15.0) or 15.0,
        db_timeout_s=env_number(env, "INGEST_DB_TIMEOUT_S", 10.0) or 10.0,
        recover_s=max(0.0, env_number(env, "INGEST_RECOVER_S", 3_600.0)),
        recover_fixes=max(1, int(env_number(env, "INGEST_RECOVER_FIXES", 600))),
        detectors=DetectorPolicy(
            deviation_leave_m=env_number(env, "INGEST_DEVIATION_M", 2_000.0),
            deviation_return_m=env_number(env, "INGEST_DEVIATION_RETURN_M", 1_500.0),
            deviation_min_s=env_number(env, "INGEST_DEVIATION_MIN_S", 60.0),
            delay_bands_s=_bands(env),
            overspeed_min_s=env_number(env, "INGEST_OVERSPEED_MIN_S", 5.0),
            offline_s=env_number(env, "INGEST_OFFLINE_S", 600.0),
        ),
        filters=FilterPolicy(
            future_tolerance_s=env_number(env, "INGEST_FUTURE_TOLERANCE_S", 120.0),
            horizon_s=env_number(env, "INGEST_HORIZON_DAYS", 30.0) * 86_400,
            max_accuracy_m=env_number(env, "INGEST_MAX_ACCURACY_M", 500.0),
            max_speed_mps=env_number(env, "INGEST_MAX_SPEED_MPS", 55.0),
        ),
    )


def _bands(env: Mapping[str, str]) -> tuple[float, float, float, float]:
    name = f"{PREFIX}INGEST_DELAY_BANDS_S"
    raw = env.get(name, "").strip()
    if not raw:
        return DetectorPolicy().delay_bands_s
    try:
        limits = tuple(float(part) for part in raw.split(","))
    except ValueError:
        limits = ()
    if len(limits) != 4 or list(limits) != sorted(set(limits)):
        raise ConfigError(
            f"{name}={raw!r}: expected four increasing numbers of seconds, as -120,300,900,1800"
        )
    return (limits[0], limits[1], limits[2], limits[3])


def _switch(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(f"{PREFIX}{name}", "").strip().lower()
    if not raw:
        return default
    if raw in {"on", "1", "true", "yes"}:
        return True
    if raw in {"off", "0", "false", "no"}:
        return False
    raise ConfigError(f"{PREFIX}{name}={raw!r}: expected on or off")
