"""``fleet demo run`` end to end on real servers: buses live, events recorded, and nothing left running."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest

from fleet_testing.broker import PrivateBroker

pytestmark = pytest.mark.stack

BUSES = 3
DURATION_S = 10


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_short_demo_shows_every_bus_live_and_events_then_stops_all_it_started(
    broker: PrivateBroker, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "FLEET_STATE_DIR": str(tmp_path),
        "FLEET_MQTT_URL": broker.url,
        "FLEET_DATABASE_URL": database_url,
        "FLEET_REDIS_URL": redis_url,
        "FLEET_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "FLEET_MOSQUITTO_DIR": str(broker.directory),
    }
    command = ["fleet", "demo", "run", "--buses", str(BUSES), "--duration", str(DURATION_S)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert f"buses live {BUSES}/{BUSES}" in last, done.stdout[-2000:]
    events = re.search(r"events (\d+)", last)
    assert events is not None, last
    assert int(events.group(1)) > 0, last
    assert re.search(r"http://127\.0\.0\.1:\d+/map\?token=[\w.-]+", done.stderr)
    started = {name: int(pid) for name, pid in re.findall(r"started (\w+) \(pid (\d+)\)", done.stderr)}
    assert set(started) == {"serve", "ingest", "simulate"}
    assert not [name for name, pid in started.items() if _alive(pid)]
    assert re.search(r"session ingest-\S+ deleted from the broker", done.stderr), done.stderr[-2000:]
