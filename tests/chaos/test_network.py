"""Network partitions in network namespaces the suite makes: agents from the broker, ingest from PostgreSQL.

``reset``: every packet toward the other side is answered by a TCP RST (the
connection fails at once). ``silent``: packets vanish without an answer, as
on a cut mobile link or a dead switch; only keepalives and timeouts see it.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from fleet_store import stackfile
from fleet_testing.broker import PrivateBroker
from fleet_testing.chaos import MakePipeline, Outcome, keep, run_fault
from fleet_testing.ingest import IngestProcesses
from fleet_testing.netns import Kind, Namespace

SILENT_S = 40.0
"""longer than the agent's MQTT keepalive (30 s): its client, and the broker, must notice the silence"""


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    with Namespace() as made:
        yield made


def _assert_whole(outcome: Outcome) -> None:
    assert outcome.lost == 0, outcome.lost_seqs
    assert outcome.duplicated == 0
    assert outcome.events_duplicated == 0
    assert outcome.recovery_s is not None


def _broker_seen_from(namespace: Namespace, broker: PrivateBroker) -> tuple[str, int]:
    """The broker's URL from inside the namespace (a listener on this machine's end), and its port."""
    port = broker.add_listener(namespace.host_addr)
    broker.stop()
    broker.start()
    return f"mqtt://{stackfile.MQTT_USER}:{broker.password}@{namespace.host_addr}:{port}", port


@pytest.mark.parametrize(("kind", "outage_s"), [("reset", 20.0), ("silent", SILENT_S)])
def test_agents_cut_off_from_the_broker_lose_nothing(
    namespace: Namespace, broker: PrivateBroker, make_pipeline: MakePipeline, kind: Kind, outage_s: float
) -> None:
    url, _ = _broker_seen_from(namespace, broker)
    pipeline = make_pipeline(agent_broker_url=url, agent_prefix=namespace.prefix)
    outcome = keep(
        run_fault(
            pipeline,
            f"partition agents from broker ({kind}, {outage_s:.0f} s)",
            lambda: namespace.cut(kind),
            namespace.heal,
            outage_s=outage_s,
        )
    )
    _assert_whole(outcome)


def _moved(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}{host}:{port}"))


def test_ingest_cut_off_from_postgresql_silently_loses_nothing(
    namespace: Namespace, broker: PrivateBroker, chaos_ingest: IngestProcesses, make_pipeline: MakePipeline
) -> None:
    """Both ingest processes in the namespace; PostgreSQL and Redis through relays, the broker directly."""
    mqtt_url, _ = _broker_seen_from(namespace, broker)
    database = urlsplit(chaos_ingest.database_url)
    redis = urlsplit(chaos_ingest.redis_url)
    assert database.port is not None
    assert redis.port is not None
    database_relay, redis_relay = namespace.relay(database.port), namespace.relay(redis.port)
    chaos_ingest.prefix = namespace.prefix
    chaos_ingest.settings.update(
        {
            "FLEET_MQTT_URL": mqtt_url,
            "FLEET_DATABASE_URL": _moved(chaos_ingest.database_url, namespace.host_addr, database_relay),
            "FLEET_REDIS_URL": _moved(chaos_ingest.redis_url, namespace.host_addr, redis_relay),
        }
    )
    pipeline = make_pipeline()
    outcome = keep(
        run_fault(
            pipeline,
            "partition ingest from PostgreSQL (silent, 30 s)",
            lambda: namespace.cut("silent", database_relay),
            namespace.heal,
            outage_s=30.0,
        )
    )
    _assert_whole(outcome)
