"""The Grafana dashboards of ``dashboards/grafana/``, generated with the Grafana Foundation SDK.

Each dashboard is a list of panels, each panel a list of PromQL queries over
the metrics fleet's processes and exporters serve; ``build_all`` turns them
into Grafana's JSON model. The JSON is committed (``fleet dashboards build``)
so Grafana can provision it as is, and a test regenerates it and fails on a
difference. Queries use only ``$__rate_interval``, no label variables, so the
real-Prometheus test can run each one as written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from grafana_foundation_sdk.builders import common, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as gdashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as options
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
_HTTP = '{method!="websocket"}'
"""HTTP requests only: a websocket's "request" lasts as long as its connection"""


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "__auto"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: Literal["timeseries", "stat"] = "timeseries"
    description: str = ""


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[tuple[str, tuple[Panel, ...]], ...] = field(default=())


def _q(expr: str, legend: str = "__auto") -> Query:
    return Query(expr, legend)


def _quantiles(metric: str, by: str = "", *qs: float) -> tuple[Query, ...]:
    """p50/p99 (or ``qs``) of a histogram, over every instance (and ``by`` when given)."""
    labels = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return tuple(
        _q(
            f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RATE}])))",
            f"{prefix}p{q * 100:g}",
        )
        for q in (qs or (0.5, 0.99))
    )


def _per_s(metric: str, by: str = "", legend: str = "__auto", selector: str = "") -> Query:
    grouping = f" by ({by})" if by else ""
    return _q(f"sum{grouping} (rate({metric}{selector}[{RATE}]))", legend)


LAG = Panel("Fix-to-commit lag", _quantiles("fleet_ingest_lag_seconds"), unit="s")
EVENTS_PER_MINUTE = Panel(
    "Events/min by kind", (_q(f"60 * sum by (kind) (rate(fleet_ingest_events_total[{RATE}]))", "{{kind}}"),)
)

OVERVIEW = Dashboard(
    uid="fleet-overview",
    title="Fleet overview",
    description="Buses live, frames by outcome, events and websocket clients: is the fleet visible now?",
    rows=(
        (
            "Now",
            (
                Panel("Buses live", (_q("max(fleet_ingest_buses_live)", "live"),), kind="stat"),
                Panel("Buses offline", (_q("max(fleet_ingest_buses_offline)", "offline"),), kind="stat"),
                Panel("Ingest processes up", (_q('sum(up{job="fleet-ingest"})', "up"),), kind="stat"),
                Panel("Websocket clients", (_q("sum(fleet_ws_clients)", "clients"),), kind="stat"),
            ),
        ),
        (
            "Flow",
            (
                Panel(
                    "Frames/s by outcome",
                    (
                        _per_s("fleet_ingest_frames_accepted_total", legend="accepted"),
                        _per_s("fleet_ingest_frames_rejected_total", legend="rejected"),
                        _per_s("fleet_ingest_frames_duplicate_total", legend="duplicate"),
                    ),
                    unit="ops",
                ),
                EVENTS_PER_MINUTE,
                LAG,
                Panel(
                    "API requests/s",
                    (_per_s("fleet_serve_requests_total", "status_code", "{{status_code}}", _HTTP),),
                    unit="reqps",
                ),
            ),
        ),
    ),
)

INGEST = Dashboard(
    uid="fleet-ingest",
    title="Fleet ingest",
    description="fleet ingest: what it takes from the broker, what it stores and rejects, and how fast.",
    rows=(
        (
            "Frames",
            (
                Panel(
                    "Frames/s accepted, duplicate",
                    (
                        _per_s("fleet_ingest_frames_accepted_total", legend="accepted"),
                        _per_s("fleet_ingest_frames_duplicate_total", legend="duplicate"),
                        _per_s("fleet_ingest_rejections_repeated_total", legend="rejection redelivered"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Rejected/s by reason",
                    (_per_s("fleet_ingest_frames_rejected_total", "reason", "{{reason}}"),),
                    unit="ops",
                ),
                Panel(
                    "Messages/s by instance",
                    (_per_s("fleet_ingest_messages_total", "instance", "{{instance}}"),),
                    unit="ops",
                ),
                Panel("Batch size (frames)", _quantiles("fleet_ingest_batch_frames")),
            ),
        ),
        (
            "Latency",
            (
                LAG,
                Panel("PostgreSQL commit", _quantiles("fleet_ingest_db_write_seconds"), unit="s"),
                Panel("Redis live-state write", _quantiles("fleet_ingest_redis_write_seconds"), unit="s"),
                Panel("Batch taken to acked", _quantiles("fleet_ingest_flush_seconds"), unit="s"),
            ),
        ),
        (
            "Health",
            (
                Panel(
                    "Messages in flight",
                    (_q("sum by (instance) (fleet_ingest_in_flight_messages)", "{{instance}}"),),
                ),
                Panel(
                    "Broker reconnects",
                    (
                        _q(
                            f"sum by (instance) (increase(fleet_ingest_broker_reconnects_total[{RATE}]))",
                            "{{instance}}",
                        ),
                    ),
                ),
                Panel(
                    "Store errors/s (retried)",
                    (_per_s("fleet_ingest_store_errors_total", "store", "{{store}}"),),
                    unit="ops",
                ),
                Panel("Up", (_q('up{job="fleet-ingest"}', "{{instance}}"),)),
            ),
        ),
    ),
)

PROCESSING = Dashboard(
    uid="fleet-processing",
    title="Fleet processing",
    description="Trip progress, events and the models ingest follows trips with.",
    rows=(
        (
            "Trips",
            (
                Panel(
                    "Buses per batch by trip state",
                    (_per_s("fleet_ingest_trip_states_total", "state", "{{state}}"),),
                    unit="ops",
                ),
                Panel("Trip step per batch", _quantiles("fleet_ingest_processing_seconds"), unit="s"),
                Panel(
                    "Trip step failures/s",
                    (_per_s("fleet_ingest_processing_errors_total", legend="failed"),),
                    unit="ops",
                ),
                Panel(
                    "Stop visits stored/s",
                    (_per_s("fleet_ingest_stop_visits_total", legend="visits"),),
                    unit="ops",
                ),
            ),
        ),
        (
            "Events",
            (
                EVENTS_PER_MINUTE,
                Panel(
                    "Events stored/s, late frames/s, state conflicts/s",
                    (
                        _per_s("fleet_ingest_events_stored_total", legend="events stored"),
                        _per_s("fleet_ingest_frames_late_total", legend="late frames"),
                        _per_s("fleet_ingest_state_conflicts_total", legend="state conflicts"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Offline sweeps/min",
                    (_q(f"60 * sum(rate(fleet_ingest_offline_sweeps_total[{RATE}]))", "sweeps"),),
                ),
            ),
        ),
        (
            "Models",
            (
                Panel(
                    "Feeds and geofences loaded",
                    (
                        _q("max(fleet_ingest_feeds_loaded)", "feeds"),
                        _q("max(fleet_ingest_fences_loaded)", "fences"),
                    ),
                ),
                Panel(
                    "Network build",
                    _quantiles("fleet_ingest_network_build_seconds", "", 0.5, 1.0),
                    unit="s",
                ),
                Panel(
                    "Geofence index build",
                    _quantiles("fleet_ingest_fence_index_build_seconds", "", 0.5, 1.0),
                    unit="s",
                ),
            ),
        ),
    ),
)

SERVE = Dashboard(
    uid="fleet-serve",
    title="Fleet serve",
    description="fleet serve: the /v1 API by route and status, its latency, and the live websocket fan-out.",
    rows=(
        (
            "HTTP API",
            (
                Panel(
                    "Requests/s by route and status",
                    (
                        _per_s(
                            "fleet_serve_requests_total",
                            "path, status_code",
                            "{{path}} {{status_code}}",
                            _HTTP,
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Latency p95 by route",
                    (
                        _q(
                            "histogram_quantile(0.95, sum by (le, path) "
                            f"(rate(fleet_serve_request_duration_seconds_bucket{_HTTP}[{RATE}])))",
                            "{{path}}",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "Latency p99 by route",
                    (
                        _q(
                            "histogram_quantile(0.99, sum by (le, path) "
                            f"(rate(fleet_serve_request_duration_seconds_bucket{_HTTP}[{RATE}])))",
                            "{{path}}",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "5xx share",
                    (
                        _q(
                            f"(sum(rate(fleet_serve_requests_error_total[{RATE}])) or vector(0))"
                            f" / sum(rate(fleet_serve_requests_total{_HTTP}[{RATE}]))",
                            "5xx",
                        ),
                    ),
                    unit="percentunit",
                ),
            ),
        ),
        (
            "Live websocket",
            (
                Panel("Clients", (_q("sum by (instance) (fleet_ws_clients)", "{{instance}}"),)),
                Panel(
                    "Sent/s and dropped/s",
                    (
                        _per_s("fleet_ws_messages_sent_total", legend="messages sent"),
                        _per_s("fleet_ws_frames_sent_total", legend="frames sent"),
                        _per_s("fleet_ws_dropped_total", legend="dropped (queue full)"),
                        _per_s("fleet_ws_updates_total", legend="updates read"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Slow disconnects and refusals/min",
                    (
                        _q(f"60 * sum(rate(fleet_ws_slow_disconnects_total[{RATE}]))", "slow (3008)"),
                        _q(
                            f"60 * sum(rate(fleet_ws_refused_total[{RATE}])) or vector(0)",
                            "refused",
                        ),
                    ),
                ),
                Panel("Up", (_q('up{job="fleet-serve"}', "{{instance}}"),)),
            ),
        ),
    ),
)

SERVICES = Dashboard(
    uid="fleet-services",
    title="Fleet services",
    description="PostgreSQL, Redis and Mosquitto, from their exporters (see dashboards/README.md).",
    rows=(
        (
            "PostgreSQL",
            (
                Panel("Up", (_q("pg_up", "{{instance}}"),), kind="stat"),
                Panel(
                    "Connections used",
                    (
                        _q(
                            "sum by (instance) (pg_stat_database_numbackends)"
                            " / max by (instance) (pg_settings_max_connections)",
                            "{{instance}}",
                        ),
                    ),
                    unit="percentunit",
                ),
                Panel(
                    "Commits/s",
                    (_per_s("pg_stat_database_xact_commit", "datname", "{{datname}}", '{datname!=""}'),),
                    unit="ops",
                ),
                Panel(
                    "Database size",
                    (_q('pg_database_size_bytes{datname!~"template.*"}', "{{datname}}"),),
                    unit="bytes",
                ),
                Panel(
                    "Filesystem used",
                    (
                        _q(
                            '1 - node_filesystem_avail_bytes{job="postgres-host"}'
                            ' / node_filesystem_size_bytes{job="postgres-host"}',
                            "{{mountpoint}}",
                        ),
                    ),
                    unit="percentunit",
                ),
                Panel("Replication lag", (_q("pg_replication_lag_seconds", "{{instance}}"),), unit="s"),
            ),
        ),
        (
            "Redis",
            (
                Panel("Up", (_q("redis_up", "{{instance}}"),), kind="stat"),
                Panel("Memory used", (_q("redis_memory_used_bytes", "{{instance}}"),), unit="bytes"),
                Panel("Clients", (_q("redis_connected_clients", "{{instance}}"),)),
                Panel(
                    "Commands/s",
                    (_per_s("redis_commands_processed_total", "instance", "{{instance}}"),),
                    unit="ops",
                ),
                Panel(
                    "Evicted keys/s",
                    (_per_s("redis_evicted_keys_total", "instance", "{{instance}}"),),
                    unit="ops",
                ),
            ),
        ),
        (
            "Mosquitto",
            (
                Panel("Up", (_q("fleet_broker_up", "{{instance}}"),), kind="stat"),
                Panel(
                    "Clients",
                    (
                        _q("fleet_broker_clients_connected", "connected"),
                        _q("fleet_broker_clients_disconnected", "disconnected with a session"),
                    ),
                ),
                Panel(
                    "Publishes/s",
                    (
                        _per_s("fleet_broker_publish_received_total", legend="received"),
                        _per_s("fleet_broker_publish_sent_total", legend="sent"),
                    ),
                    unit="ops",
                ),
                Panel("Messages stored", (_q("fleet_broker_stored_messages", "stored"),)),
                Panel(
                    "Agents by state",
                    (_q("sum by (operator, state) (fleet_agents)", "{{operator}} {{state}}"),),
                ),
                Panel(
                    "Agent outbox backlog (largest unit)",
                    (_q("max by (operator) (fleet_agent_outbox_backlog_max_frames)", "{{operator}}"),),
                ),
            ),
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (OVERVIEW, INGEST, PROCESSING, SERVE, SERVICES)


def _panel(panel: Panel) -> stat.Panel | timeseries.Panel:
    """One panel, its options set (never a null ``options``, which Grafana reads badly)."""
    built: stat.Panel | timeseries.Panel
    if panel.kind == "stat":
        last = common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        built = stat.Panel().reduce_options(last).graph_mode(options.BigValueGraphMode.AREA)
    else:
        legend = (
            common.VizLegendOptions()
            .display_mode(options.LegendDisplayMode.LIST)
            .placement(options.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        tooltip = (
            common.VizTooltipOptions()
            .mode(options.TooltipDisplayMode.MULTI)
            .sort(options.SortOrder.DESCENDING)
        )
        built = timeseries.Panel().fill_opacity(10).legend(legend).tooltip(tooltip)
    built.title(panel.title).datasource(DATASOURCE).unit(panel.unit).height(8).span(6)
    if panel.description:
        built.description(panel.description)
    for n, query in enumerate(panel.queries):
        built.with_target(
            prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(chr(ord("A") + n))
        )
    return built


def build(spec: Dashboard) -> str:
    """Grafana's JSON model of ``spec``, stable (sorted keys, fixed ids) so regeneration diffs cleanly."""
    built = (
        gdashboard.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["fleet"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("utc")
        .with_variable(gdashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for title, panels in spec.rows:
        built.with_row(gdashboard.Row(title))
        for panel in panels:
            built.with_panel(_panel(panel))
    model = json.loads(JSONEncoder(sort_keys=True).encode(built.build()))
    for n, built_panel in enumerate(model["panels"], 1):  # rows included: the SDK gives them id 0
        built_panel["id"] = n
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def build_all() -> dict[str, str]:
    """File name -> JSON of every dashboard."""
    return {f"{spec.uid}.json": build(spec) for spec in DASHBOARDS}


def queries(model: dict[str, object]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of a dashboard's JSON model."""
    found = []
    for panel in model.get("panels", []):  # type: ignore[attr-defined]
        for target in panel.get("targets", []):
            found.append((str(panel["title"]), str(target["expr"])))
    return found
