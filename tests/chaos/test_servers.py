"""Each server of the chain restarted, or killed, under a sustained stream of signed frames.

Zero frames lost, zero duplicate rows or events, except where a broker crash
loses what it acknowledged since its last autosave (``autosave_interval``
in deploy/mosquitto/mosquitto.conf): that gap is measured and reported.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import asyncpg
import redis
from click.testing import CliRunner

from fleet_cli.cli import main
from fleet_store import stackfile
from fleet_store.resources import MOSQUITTO_DIR
from fleet_store.settings import load_settings
from fleet_testing import faults
from fleet_testing.broker import PrivateBroker
from fleet_testing.chaos import INGEST_INSTANCES, Outcome, Pipeline, keep, run_fault
from fleet_testing.database import run_on
from fleet_testing.ingest import stored

HELD_S = 25.0
AUTOSAVE_S = next(
    int(line.split()[1])
    for line in (MOSQUITTO_DIR / "mosquitto.conf").read_text().splitlines()
    if line.startswith("autosave_interval ")
)


def assert_whole(outcome: Outcome) -> None:
    assert outcome.lost == 0, outcome.lost_seqs
    assert outcome.duplicated == 0
    assert outcome.events_duplicated == 0
    assert outcome.rejected == 0
    assert outcome.recovery_s is not None


def test_broker_restart_loses_nothing(pipeline: Pipeline, broker: PrivateBroker) -> None:
    outcome = keep(run_fault(pipeline, "broker restart (SIGTERM)", broker.stop, broker.start))
    assert_whole(outcome)


def test_broker_killed_loses_at_most_what_it_acknowledged_since_its_last_autosave(
    pipeline: Pipeline, broker: PrivateBroker
) -> None:
    outcome = keep(
        run_fault(
            pipeline,
            "broker SIGKILL",
            broker.kill,
            broker.start,
            notes="lost: PUBACKed to agents, not yet committed by ingest, not in the last autosave (30 s)",
        )
    )
    assert outcome.duplicated == 0
    assert outcome.events_duplicated == 0
    assert outcome.lost <= outcome.published * 0.05


def test_postgresql_restart_loses_nothing(pipeline: Pipeline) -> None:
    outcome = keep(
        run_fault(
            pipeline,
            "PostgreSQL restart (fast shutdown)",
            lambda: faults.stop_server("postgres"),
            faults.start_servers,
        )
    )
    assert_whole(outcome)


def test_postgresql_killed_loses_nothing(pipeline: Pipeline) -> None:
    outcome = keep(
        run_fault(
            pipeline, "PostgreSQL SIGKILL", lambda: faults.kill_server("postgres"), faults.start_servers
        )
    )
    assert_whole(outcome)


def test_redis_restart_loses_nothing(pipeline: Pipeline) -> None:
    outcome = keep(
        run_fault(
            pipeline, "Redis restart (SIGTERM)", lambda: faults.stop_server("redis"), faults.start_servers
        )
    )
    assert_whole(outcome)


def test_redis_killed_loses_nothing(pipeline: Pipeline) -> None:
    outcome = keep(
        run_fault(pipeline, "Redis SIGKILL", lambda: faults.kill_server("redis"), faults.start_servers)
    )
    assert_whole(outcome)


def test_broker_killed_while_it_holds_a_backlog_loses_only_what_came_since_its_last_autosave(
    pipeline: Pipeline, broker: PrivateBroker
) -> None:
    """Ingest away for 25 s, so the broker holds every frame it acknowledged; then it crashes."""
    held: dict[str, float] = {}

    def inject() -> None:
        for instance in INGEST_INSTANCES:
            pipeline.ingest.terminate(instance)
        held["from"] = time.time()
        time.sleep(HELD_S)
        held["to"] = time.time()
        broker.kill()

    def repair() -> None:
        broker.start()
        for instance in INGEST_INSTANCES:
            pipeline.ingest.start(instance, burst_s=None)

    outcome = run_fault(
        pipeline,
        "broker SIGKILL holding 25 s of backlog",
        inject,
        repair,
        outage_s=1.0,
        notes=f"autosave_interval {AUTOSAVE_S} s",
    )
    rate = outcome.published / max(1.0, outcome.outage_s + 40)
    keep(outcome)
    assert outcome.duplicated == 0
    assert outcome.events_duplicated == 0
    assert outcome.lost <= (AUTOSAVE_S + 2) * rate * 1.5, "more than an autosave interval of frames"


def test_redis_that_lost_its_data_comes_back_and_its_live_view_is_rebuilt_from_postgresql(
    pipeline: Pipeline,
) -> None:
    """Redis killed and its append-only file deleted: it starts empty, a new server as far as we know."""
    state = stackfile.read_state(load_settings().state_dir)
    assert state is not None
    redis_dir = Path(state.data_dir) / "redis"

    def inject() -> None:
        faults.kill_server("redis")
        shutil.rmtree(redis_dir / "appendonlydir", ignore_errors=True)
        (redis_dir / "dump.rdb").unlink(missing_ok=True)

    outcome = run_fault(
        pipeline,
        "Redis SIGKILL, its data lost",
        inject,
        faults.start_servers,
        notes="each bus's processing state rebuilt by ingest from its stored frames; live positions"
        " rebuilt by fleet live --rebuild",
    )
    keep(outcome)
    # The buses are parked now (the agents stopped): only the rebuild can put them back on the map.
    with redis.Redis.from_url(pipeline.ingest.redis_url) as client:
        client.flushdb()
    rebuilt = CliRunner().invoke(
        main, ["live", "--operator", pipeline.operator, "--rebuild"], env=pipeline.ingest.env()
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    buses = {a.device: a.config.bus for a in pipeline.agents}
    live = stored(pipeline.ingest.database_url, pipeline.ingest.redis_url, pipeline.operator, buses).live
    assert live == newest_stored(pipeline), "every bus's live position is its newest stored frame"
    assert outcome.lost == 0, outcome.lost_seqs
    assert outcome.duplicated == 0
    assert outcome.events_duplicated == 0, "each bus's state is rebuilt from its stored frames"


def newest_stored(pipeline: Pipeline) -> dict[str, tuple[str, int]]:
    async def query(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT DISTINCT ON (bus) bus, device, seq FROM positions WHERE operator = $1"
            " ORDER BY bus, time DESC, seq DESC",
            pipeline.operator,
        )

    return {r["bus"]: (r["device"], r["seq"]) for r in run_on(pipeline.ingest.database_url, query)}
