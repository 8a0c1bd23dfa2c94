"""fleet broker-exporter: $SYS totals and retained statuses become metrics; no message breaks it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from fleet_cli.broker_exporter import BrokerCollector, BrokerSnapshot, follow
from fleet_schemas import status_topic
from fleet_schemas.status import DeviceStatus, encode_status
from fleet_store.settings import ServiceUrls
from fleet_testing.cleanup import BrokerCleanup
from fleet_testing.mqtt import publish_all


def _registry(snapshot: BrokerSnapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(BrokerCollector(snapshot))
    return registry


def _status(device: str, state: str = "online", **fields: object) -> bytes:
    return encode_status(DeviceStatus(state=state, device=device, agent_version="t", **fields))  # type: ignore[arg-type]


def test_sys_totals_become_gauges_and_counters_and_up_needs_a_recent_pass() -> None:
    snapshot = BrokerSnapshot(connected=True)
    registry = _registry(snapshot)
    assert registry.get_sample_value("fleet_broker_up") == 0  # no $SYS pass yet
    snapshot.on_message("$SYS/broker/store/messages/count", b"1234")
    snapshot.on_message("$SYS/broker/uptime", b"77 seconds")
    snapshot.on_message("$SYS/broker/publish/messages/received", b"990")
    snapshot.on_message("$SYS/broker/version", b"mosquitto version 2.0.21")
    assert registry.get_sample_value("fleet_broker_up") == 1
    assert registry.get_sample_value("fleet_broker_stored_messages") == 1234
    assert registry.get_sample_value("fleet_broker_uptime_seconds") == 77
    assert registry.get_sample_value("fleet_broker_publish_received_total") == 990
    snapshot.connected = False
    assert registry.get_sample_value("fleet_broker_up") == 0


def test_statuses_are_counted_per_operator_and_only_online_units_count_backlog() -> None:
    snapshot = BrokerSnapshot(connected=True)
    registry = _registry(snapshot)
    snapshot.on_message("fleet/v1/etusa/u1/status", _status("u1", backlog=10))
    snapshot.on_message("fleet/v1/etusa/u2/status", _status("u2", backlog=5000, outbox_full=True))
    snapshot.on_message("fleet/v1/etusa/u3/status", _status("u3", state="offline", backlog=99_999))
    snapshot.on_message("fleet/v1/tosyali/u4/status", _status("u4"))
    snapshot.on_message("fleet/v1/tosyali/u5/status", b"{not json")
    snapshot.on_message("fleet/v1/tosyali/u4/status", b"")  # cleared: the unit is gone

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("fleet_agents", operator="etusa", state="online") == 2
    assert value("fleet_agents", operator="etusa", state="offline") == 1
    assert value("fleet_agent_outbox_backlog_frames", operator="etusa") == 5010
    assert value("fleet_agent_outbox_backlog_max_frames", operator="etusa") == 5000
    assert value("fleet_agents_outbox_full", operator="etusa") == 1
    assert value("fleet_agents", operator="tosyali", state="online") is None
    assert value("fleet_broker_exporter_bad_statuses_total") == 1


@given(topic=st.text(max_size=80), payload=st.binary(max_size=300))
def test_no_message_breaks_the_snapshot_or_a_scrape(topic: str, payload: bytes) -> None:
    snapshot = BrokerSnapshot(connected=True)
    snapshot.on_message(topic, payload)
    snapshot.on_message(f"$SYS/broker/{topic}", payload)
    snapshot.on_message(f"fleet/v1/op/{topic}/status", payload)
    assert _registry(snapshot).get_sample_value("fleet_broker_up") in (0, 1)


@pytest.fixture
def followed(stack_urls: ServiceUrls) -> Iterator[CollectorRegistry]:
    snapshot, stop = BrokerSnapshot(), threading.Event()
    thread = threading.Thread(target=follow, args=(stack_urls.mqtt_url, snapshot, stop), daemon=True)
    thread.start()
    try:
        yield _registry(snapshot)
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.stack
def test_following_the_real_broker_reports_it_up_and_sees_a_retained_status(
    stack_urls: ServiceUrls, followed: CollectorRegistry, broker_cleanup: BrokerCleanup, operator_id: str
) -> None:
    broker_cleanup.retained(stack_urls.mqtt_url, f"fleet/v1/{operator_id}/#")
    message = (status_topic(operator_id, "unit-1"), _status("unit-1", backlog=321))
    publish_all(stack_urls.mqtt_url, [message], retain=True)
    deadline = time.monotonic() + 15
    while (
        followed.get_sample_value("fleet_agent_outbox_backlog_max_frames", {"operator": operator_id}) != 321
    ):
        assert time.monotonic() < deadline, "the retained status never showed"
        time.sleep(0.1)
    assert followed.get_sample_value("fleet_broker_up") == 1
    # $SYS counts are published every sys_interval (10 s): the retained one may predate this client
    deadline = time.monotonic() + 25
    while (followed.get_sample_value("fleet_broker_clients_connected") or 0) < 1:
        assert time.monotonic() < deadline, "the broker never counted the exporter as connected"
        time.sleep(0.2)
