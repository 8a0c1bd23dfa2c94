"""Prometheus metrics of ingest; labels are bounded (reason codes), never device ids."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from fleet_ingest.batch_histogram import BatchHistogram
from fleet_schemas.events import EVENT_KINDS
from fleet_schemas.trips import AssignmentState

MESSAGES = Counter("fleet_ingest_messages_total", "MQTT messages taken from the broker")
FRAMES_RECEIVED = Counter(
    "fleet_ingest_frames_received_total", "Frames in verified messages, plus one per bad message"
)
FRAMES_ACCEPTED = Counter(
    "fleet_ingest_frames_accepted_total", "Frames that passed every check and were stored"
)
FRAMES_REJECTED = Counter(
    "fleet_ingest_frames_rejected_total", "Messages or frames rejected, by reason", ["reason"]
)
REJECTIONS_REPEATED = Counter(
    "fleet_ingest_rejections_repeated_total",
    "Rejections already recorded from an earlier delivery of the same message (not stored again)",
)
OWNTRACKS_IGNORED = Counter(
    "fleet_ingest_owntracks_ignored_total",
    "OwnTracks messages acknowledged without a position (lwt, transition, status...), by _type",
    ["type"],
)
DUPLICATES = Counter(
    "fleet_ingest_frames_duplicate_total", "Accepted frames already stored (redeliveries, retries)"
)
BATCH_FRAMES = Histogram(
    "fleet_ingest_batch_frames",
    "Frames per micro-batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
FLUSH_SECONDS = Histogram("fleet_ingest_flush_seconds", "From a batch taken to its acks written")
DB_WRITE_SECONDS = Histogram("fleet_ingest_db_write_seconds", "One batch's PostgreSQL transaction")
REDIS_WRITE_SECONDS = Histogram("fleet_ingest_redis_write_seconds", "One batch's Redis live-state update")
LAG_SECONDS = BatchHistogram(
    "fleet_ingest_lag_seconds",
    "Fix time to committed, per accepted frame",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)
IN_FLIGHT = Gauge("fleet_ingest_in_flight_messages", "Messages received and not yet acked")
BUSES_LIVE = Gauge("fleet_ingest_buses_live", "Buses with a live position in Redis")
BUSES_OFFLINE = Gauge(
    "fleet_ingest_buses_offline", "Buses with a live position in Redis that were declared offline since"
)
STORE_ERRORS = Counter("fleet_ingest_store_errors_total", "Failed writes (retried, never acked)", ["store"])
RECONNECTS = Counter("fleet_ingest_broker_reconnects_total", "Broker connections lost and retried")
LIVE_SKIPPED = Counter(
    "fleet_ingest_live_skipped_total",
    "Committed frames not shown live because Redis stayed down past the HTTP front's patience",
)
PROCESSING_SECONDS = Histogram(
    "fleet_ingest_processing_seconds", "One batch's trip step: progress, assignment, delay and ETAs"
)
PROCESSING_ERRORS = Counter(
    "fleet_ingest_processing_errors_total",
    "Batches whose trip step failed (positions still stored and live, without trip data)",
)
BUSES_BY_TRIP_STATE = Counter(
    "fleet_ingest_trip_states_total", "Buses per batch by trip assignment state", ["state"]
)
STOP_VISITS = Counter("fleet_ingest_stop_visits_total", "Stop visits stored (travel-time history)")
FEEDS_LOADED = Gauge("fleet_ingest_feeds_loaded", "Operators whose active feed this process follows trips on")
NETWORK_BUILD_SECONDS = Histogram(
    "fleet_ingest_network_build_seconds",
    "Loading an active feed version and building its network",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
EVENTS = Counter(
    "fleet_ingest_events_total", "Events detected and written with their bus's state, by kind", ["kind"]
)
FRAMES_LATE = Counter(
    "fleet_ingest_frames_late_total",
    "Accepted frames not newer than their bus's processed state: stored in history, no live event",
)
STATE_CONFLICTS = Counter(
    "fleet_ingest_state_conflicts_total",
    "Buses recomputed because another ingest process wrote their state between read and write",
)
STATES_RECOVERED = Counter(
    "fleet_ingest_states_recovered_total",
    "Buses found with no processing state in Redis whose state was rebuilt from their stored frames",
)
RECOVERY_FAILURES = Counter(
    "fleet_ingest_state_recovery_failures_total",
    "Batches whose buses without state started from nothing: stored frames unreadable, or replay failed",
)
EVENTS_STORED = Counter("fleet_ingest_events_stored_total", "Events newly stored in PostgreSQL and published")
OFFLINE_SWEEPS = Counter("fleet_ingest_offline_sweeps_total", "Offline sweeps run by this process")
FENCES_LOADED = Gauge("fleet_ingest_fences_loaded", "Geofences in the indexes held, over every operator")
FENCES_REFUSED = Counter(
    "fleet_ingest_fences_refused_total",
    "Stored geofences that no longer parse (left out of the index)",
    ["reason"],
)
FENCE_INDEX_BUILD_SECONDS = Histogram(
    "fleet_ingest_fence_index_build_seconds", "Building one operator's geofence index"
)

# Known label values start at 0, so dashboards and alerts see a series before the first one happens.
for _store in ("postgresql", "redis"):
    STORE_ERRORS.labels(_store)
for _kind in EVENT_KINDS:
    EVENTS.labels(_kind)
for _state in get_args(AssignmentState):
    BUSES_BY_TRIP_STATE.labels(_state)
# The HTTP front (``fleet ingest http``); its frames are counted by the fleet_ingest_frames_* above.
HTTP_REQUESTS = Counter(
    "fleet_http_ingest_requests_total", "HTTP ingest requests by route and answer status", ["route", "status"]
)
HTTP_SECONDS = Histogram(
    "fleet_http_ingest_request_seconds", "From a request read to its answer (commit included)", ["route"]
)
HTTP_WAITING = Gauge("fleet_http_ingest_waiting_requests", "Requests waiting for their batch to be committed")
TOKEN_CHECKS = Counter(
    "fleet_http_ingest_token_checks_total",
    "Device tokens presented, by outcome: cached, verified (argon2), refused, refused_cached, too_many",
    ["result"],
)
RATE_LIMITED = Counter(
    "fleet_http_ingest_rate_limited_total", "Requests refused with 429 (a device over its rate)"
)
