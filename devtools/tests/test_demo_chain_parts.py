"""The demo's parts that need no server: a trip for every bus at any hour, faults shared out, rates read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleet_agent.simulator import Detour, LongStop, Reboot
from fleet_devtools.demo_feed import build_feed, dense_source, load_source, write_feed
from fleet_devtools.demo_run import cpu_line
from fleet_devtools.simulate import scripted_faults, spread, trips_running
from fleet_store.errors import ConfigError


def test_dense_demo_feed_has_a_trip_under_way_for_each_of_200_buses_at_its_quietest_hour(
    tmp_path: Path,
) -> None:
    write_feed(build_feed(dense_source(load_source(), 200)), tmp_path)
    # 04:00 in Algiers: the shipped feed has three trips under way then
    quiet = int(datetime(2026, 12, 2, 3, 0, tzinfo=UTC).timestamp() * 1000)
    running = trips_running(str(tmp_path), quiet)
    assert len(running) >= 200
    assert {trip.split("-out-")[0].split("-in-")[0] for trip in spread(running, 200)} == {
        "ALG-ORN",
        "ALG-CST",
        "ALG-BJA",
        "ORN-TLM",
        "ALG-GHA",
    }


def test_spread_takes_trips_evenly_and_refuses_more_buses_than_trips() -> None:
    trips = [f"T{n}" for n in range(10)]
    assert spread(trips, 5) == ["T0", "T2", "T4", "T6", "T8"]
    assert spread(trips, 10) == trips
    with pytest.raises(ConfigError):
        spread(trips, 11)


def test_of_every_20_buses_one_detours_one_stops_long_and_one_goes_dark() -> None:
    kinds = [type(fault) for n in range(1, 201) for fault in scripted_faults(n, 20)]
    assert kinds.count(Detour) == kinds.count(LongStop) == kinds.count(Reboot) == 10
    assert len(kinds) == 30
    assert scripted_faults(20, 0) == ()


def test_cpu_line_gives_each_service_its_share_of_one_core() -> None:
    line = cpu_line((10.0, {"ingest": 1.0, "serve": 0.5}), (30.0, {"ingest": 5.0, "serve": 0.5, "new": 3.0}))
    assert line.endswith("ingest 20 %, serve 0 %")
    assert "over 20 s" in line
