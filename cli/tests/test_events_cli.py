"""``fleet events list`` and ``fleet routes deviation`` against the real database."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import msgspec
import pytest
from click.testing import CliRunner, Result

from fleet_cli.cli import main
from fleet_ingest.assess import Accepted
from fleet_ingest.service import open_pool
from fleet_ingest.storage import store_batch
from fleet_schemas import Frame
from fleet_schemas.events import EVENTS_DECODER, Event
from fleet_store.events import write_events
from fleet_store.route_policies import RoutePolicy
from fleet_store.settings import ServiceUrls
from fleet_testing.database import run_on
from fleet_testing.ingest import fleet_env

pytestmark = pytest.mark.stack

T0_MS = 1_795_000_000_000  # 2026-11-18 11:06:40 UTC


def _fleet(stack_urls: ServiceUrls, database_url: str, tmp_path: Path, *args: str) -> Result:
    return CliRunner(env=fleet_env(stack_urls, database_url, tmp_path / "broker")).invoke(main, list(args))


def _stored(database_url: str) -> list[Event]:
    events = [
        Event(
            operator="op-a" if n < 6 else "op-b",
            bus=f"bus-{n % 2}",
            kind="deviation_started" if n % 3 == 0 else "stop_arrived",
            time_ms=T0_MS + n * 60_000,
            cause_ms=T0_MS + n * 60_000,
            cause_seq=n,
            subject=f"T1/20261118/09:00:00#{n}",
            route_id="R1",
            details={"distance_m": 2_345.678, "threshold_m": 2_000.0},
        )
        for n in range(8)
    ]

    async def write(conn: asyncpg.Connection) -> list[Event]:
        return await write_events(conn, events)

    return run_on(database_url, write)


def test_events_list_prints_an_operators_events_newest_first_as_json_and_as_lines(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    events = _stored(database_url)
    as_json = _fleet(stack_urls, database_url, tmp_path, "events", "list", "--operator", "op-a", "--json")
    as_lines = _fleet(
        stack_urls,
        database_url,
        tmp_path,
        "events",
        "list",
        "--operator",
        "op-a",
        "--kind",
        "deviation_started",
    )
    assert as_json.exit_code == 0, as_json.output
    assert EVENTS_DECODER.decode(as_json.stdout) == events[5::-1]
    assert as_lines.exit_code == 0, as_lines.output
    assert as_lines.stdout.splitlines() == [
        "2026-11-18 11:09:40Z  bus-1          deviation_started  T1/20261118/09:00:00#3 route R1"
        "  distance_m=2345.7 threshold_m=2000.0",
        "2026-11-18 11:06:40Z  bus-0          deviation_started  T1/20261118/09:00:00#0 route R1"
        "  distance_m=2345.7 threshold_m=2000.0",
    ]
    assert "events: 2 listed" in as_lines.stderr


def test_events_list_takes_a_time_range_a_bus_and_a_limit(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    _stored(database_url)
    result = _fleet(
        stack_urls,
        database_url,
        tmp_path,
        "events",
        "list",
        "--bus",
        "bus-0",
        "--since",
        "2026-11-18T11:07:00",
        "--until",
        "2026-11-18T12:12:40+01:00",
        "--limit",
        "2",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert [e.cause_seq for e in EVENTS_DECODER.decode(result.stdout)] == [4, 2]
    assert "there may be more" in result.stderr


def test_routes_deviation_set_list_and_clear(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    def fleet(*args: str) -> Result:
        return _fleet(stack_urls, database_url, tmp_path, "routes", "deviation", *args)

    set_ = fleet("set", "--operator", "op-a", "--route", "R1", "--leave-m", "3000", "--return-m", "2200")
    refused = fleet("set", "--operator", "op-a", "--route", "R2", "--leave-m", "1000", "--return-m", "1000")
    listed = fleet("list", "--json")
    cleared = fleet("clear", "--operator", "op-a", "--route", "R1")
    after = fleet("list", "--operator", "op-a")
    assert set_.exit_code == 0, set_.output
    assert refused.exit_code == 1
    assert "error [invalid_route_policy]" in refused.stderr
    policies = msgspec.json.decode(listed.stdout, type=list[RoutePolicy])
    assert [(p.route_id, p.deviation_leave_m, p.deviation_return_m) for p in policies] == [
        ("R1", 3000.0, 2200.0)
    ]
    assert "back to the default" in cleared.stdout
    assert after.stdout == ""


def _frames_with_a_silence(operator: str) -> list[Accepted]:
    """A bus heard every 10 s from 11:06:40, silent 15 minutes from 11:11:30 (longer than the offline
    timeout), then heard again until 11:31:30."""
    seconds = [*range(0, 300, 10), *range(1_200, 1_500, 10)]
    return [
        Accepted(
            operator,
            "unit-9-k1",
            Frame(device="unit-9", bus="BUS-9", seq=n + 1, time_ms=T0_MS + s * 1_000, lat=36.7, lon=3.05),
        )
        for n, s in enumerate(seconds)
    ]


def test_events_reprocess_reports_then_adds_what_is_missing_for_an_operator_without_a_feed(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    async def store(pool: asyncpg.Pool) -> None:
        await store_batch(pool, uuid.uuid4(), _frames_with_a_silence("op-c"), [])

    async def run(work: Callable[[asyncpg.Pool], Awaitable[None]]) -> None:
        pool = await open_pool(database_url)
        try:
            await work(pool)
        finally:
            await pool.close()

    asyncio.run(run(store))
    span = ["--operator", "op-c", "--from", "2026-11-18T11:00", "--to", "2026-11-18T11:40"]
    dry = _fleet(stack_urls, database_url, tmp_path, "events", "reprocess", *span, "--dry-run")
    applied = _fleet(stack_urls, database_url, tmp_path, "events", "reprocess", *span)
    again = _fleet(stack_urls, database_url, tmp_path, "events", "reprocess", *span, "--json")
    listed = _fleet(stack_urls, database_url, tmp_path, "events", "list", "--operator", "op-c")
    backwards = _fleet(stack_urls, database_url, tmp_path, "events", "reprocess", "--operator", "op-c",
                       "--from", "1h", "--to", "2h")  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert "60 fixes replayed" in dry.stdout
    assert re.search(r"^  missing +2  not added \(--dry-run\)$", dry.stdout, re.MULTILINE), dry.stdout
    assert "operator op-c has no active feed" in dry.stderr
    assert re.search(r"^  missing +2  added$", applied.stdout, re.MULTILINE), applied.stdout
    report = msgspec.json.decode(again.stdout)
    assert (report["recomputed"], report["already_stored"], report["added"]) == (2, 2, 0)
    assert [line.split()[3] for line in listed.stdout.splitlines()] == ["bus_online", "bus_offline"]
    assert backwards.exit_code == 2
    assert "--to must be after --from" in backwards.stderr
