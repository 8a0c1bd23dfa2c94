"""``fleet broker-exporter``: serve the broker's and the agents' metrics for Prometheus."""

from __future__ import annotations

import signal
import threading

import click
from prometheus_client import CollectorRegistry, start_http_server

from fleet_cli.broker_exporter import BrokerCollector, BrokerSnapshot, follow, parse_addr
from fleet_store import stackfile
from fleet_store.errors import ConfigError
from fleet_store.settings import Settings


@click.command(name="broker-exporter")
@click.option(
    "--addr",
    envvar="FLEET_BROKER_EXPORTER_ADDR",
    default="127.0.0.1:9465",
    show_default=True,
    help="host:port of /metrics (env FLEET_BROKER_EXPORTER_ADDR)",
)
@click.pass_obj
def broker_exporter(settings: Settings, addr: str) -> None:
    """Serve Mosquitto's $SYS totals and the agents' retained status as Prometheus metrics.

    fleet_broker_* (up, clients, stored messages and bytes, publishes), and per
    operator fleet_agents{state}, fleet_agent_outbox_backlog_frames,
    fleet_agent_outbox_backlog_max_frames and fleet_agents_outbox_full. Scrape
    it as job "fleet-broker" (dashboards/README.md). Runs until SIGTERM.

    \b
    Example:
      fleet broker-exporter --addr 127.0.0.1:9465
    """
    snapshot = BrokerSnapshot()
    registry = CollectorRegistry()
    registry.register(BrokerCollector(snapshot))
    try:
        host, port = parse_addr(addr)
        server, thread = start_http_server(port, addr=host, registry=registry)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--addr {addr!r} cannot be served: {exc}") from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    click.echo(f"broker metrics on http://{host}:{port}/metrics", err=True)
    try:
        follow(stackfile.resolve_urls(settings).mqtt_url, snapshot, stop)
    finally:
        server.shutdown()
        thread.join(5)
