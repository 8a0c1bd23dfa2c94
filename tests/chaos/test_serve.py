"""``fleet serve`` killed under websocket clients: they reconnect to the restarted node, a snapshot first.

Serve holds no state (the live view is Redis's), so nothing is lost by the
crash; what it costs is the time until every client is back with a snapshot
and receiving positions again. The clients reconnect as a map page does:
after a close, half a second, then again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx
import msgspec
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fleet_cli.cli import main
from fleet_devtools import stack
from fleet_serve.fanout import SERVER_MESSAGE_DECODER, PositionMessage, Snapshot
from fleet_testing.chaos import BYTECODE, Pipeline, keep, run_fault

CLIENTS = 20
RECONNECT_S = 0.5
READY_TIMEOUT_S = 120.0


@dataclass
class Client:
    snapshots: list[float] = field(default_factory=list)
    positions: list[float] = field(default_factory=list)
    disconnects: int = 0


class Clients:
    """``CLIENTS`` websocket clients of one operator's live view, in a thread with its own event loop."""

    def __init__(self, url: str, operator: str) -> None:
        self.url, self.operator = url, operator
        self.clients = [Client() for _ in range(CLIENTS)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Clients:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        await asyncio.gather(*(self._client(c) for c in self.clients))

    async def _client(self, client: Client) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ConnectionClosed, InvalidStatus, TimeoutError):
                async with connect(self.url, open_timeout=5) as ws:
                    await ws.send(msgspec.json.encode({"type": "subscribe", "operator": self.operator}))
                    while not self._stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            raw = await asyncio.wait_for(ws.recv(), 0.5)
                            decoded = SERVER_MESSAGE_DECODER.decode(raw)
                            for message in decoded if isinstance(decoded, list) else [decoded]:
                                if isinstance(message, Snapshot):
                                    client.snapshots.append(time.time())
                                elif isinstance(message, PositionMessage):
                                    client.positions.append(time.time())
            client.disconnects += 1
            await asyncio.sleep(RECONNECT_S)

    def all_back_since(self, since: float) -> float | None:
        """When the last client got a snapshot and then a position after ``since``; None if one did not."""
        back = []
        for client in self.clients:
            snapshot = next((t for t in client.snapshots if t >= since), None)
            position = next((t for t in client.positions if snapshot is not None and t >= snapshot), None)
            if position is None:
                return None
            back.append(position)
        return max(back)


class ServeProcess:
    """``fleet serve`` as its unit runs it, on a free port, on the test's database and Redis."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.port = stack.free_port()
        key = base64.b64encode(os.urandom(32)).decode()
        self.env = {
            **pipeline.ingest.env(),
            **BYTECODE,
            "FLEET_TOKEN_KEYS": f"chaos={key}",
            "FLEET_SERVE_ADDR": f"127.0.0.1:{self.port}",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def token(self, operator: str) -> str:
        issued = CliRunner().invoke(
            main,
            ["tokens", "issue", "--role", "manager", "--operator", operator, "--ttl", "1h"],
            env=self.env,
        )
        assert issued.exit_code == 0, issued.output
        return issued.stdout.strip()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fleet_cli", "serve"], env=self.env, stderr=subprocess.DEVNULL
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError("fleet serve never became ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None


def test_serve_killed_under_websocket_clients_they_all_come_back(pipeline: Pipeline) -> None:
    serve = ServeProcess(pipeline)
    serve.start()
    try:
        serve.wait_ready()
        url = f"ws://127.0.0.1:{serve.port}/v1/live?token={serve.token(pipeline.operator)}"
        with Clients(url, pipeline.operator) as clients:
            restarted: dict[str, float] = {}

            def inject() -> None:
                deadline = time.monotonic() + 60
                while clients.all_back_since(0.0) is None:
                    assert time.monotonic() < deadline, "the clients never all got a snapshot"
                    time.sleep(0.2)
                serve.kill()

            def repair() -> None:
                serve.start()
                restarted["at"] = time.time()

            outcome = run_fault(pipeline, "serve SIGKILL, 20 websocket clients", inject, repair, outage_s=2.0)
            back = clients.all_back_since(restarted["at"])
        assert back is not None, [c.disconnects for c in clients.clients]
        outcome.recovery_s = round(back - restarted["at"], 1)
        outcome.notes = (
            f"recovery: from the restart until all {CLIENTS} clients had a new snapshot and a position"
        )
        keep(outcome)
    finally:
        serve.stop()
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    assert all(c.disconnects >= 1 for c in clients.clients)
