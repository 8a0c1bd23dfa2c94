"""``fleet-agent replay`` publishes a real receiver capture through the real broker: every fix, verified."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from fleet_store.settings import ServiceUrls
from fleet_testing.agents import MakeReceiver, agent_config, config_toml

pytestmark = pytest.mark.stack

CAPTURE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nmea" / "rx210.log"
AGENT = [sys.executable, "-m", "fleet_agent", "replay", str(CAPTURE)]


@pytest.mark.skipif(not CAPTURE.exists(), reason=f"capture {CAPTURE} is absent")
def test_replay_publishes_each_fix_of_the_dry_run_as_a_verified_frame_with_its_old_time(
    stack_urls: ServiceUrls, operator_id: str, tmp_path: Path, receivers: MakeReceiver
) -> None:
    config, key = agent_config(tmp_path, stack_urls.mqtt_url, operator=operator_id)
    config_path = tmp_path / "agent.toml"
    config_path.write_bytes(config_toml(config))
    config_path.chmod(0o600)
    dry_run = subprocess.run([*AGENT, "--dry-run"], check=True, capture_output=True, text=True)
    fix_times = [msgspec.json.decode(line)["time_ms"] for line in dry_run.stdout.splitlines()]
    count = len(fix_times)
    receiver = receivers(stack_urls.mqtt_url, operator_id, {key.key_id: key})

    async def scenario() -> tuple[int | None, bytes]:
        stop = asyncio.Event()
        receiving = asyncio.create_task(receiver.run(stop))
        await asyncio.sleep(1)  # subscribed before the first publish
        replay = await asyncio.create_subprocess_exec(
            *AGENT, "--config", str(config_path), stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(replay.communicate(), timeout=120)
        await receiver.wait_for(config.device, set(range(count)), timeout=30)
        await asyncio.sleep(1)  # a frame beyond the fixes would have arrived by now
        stop.set()
        await receiving
        return replay.returncode, stderr

    returncode, stderr = asyncio.run(scenario())
    assert returncode == 0, stderr.decode()[-2000:]
    assert f"replayed {count} frames of {count} fixes" in stderr.decode()
    time_by_seq = {frame.seq: frame.time_ms for frame in receiver.frames[config.device]}
    assert count == 40
    assert set(time_by_seq) == set(range(count))
    assert [time_by_seq[seq] for seq in range(count)] == fix_times, "replays keep the receiver's fix times"
    assert receiver.errors == []
