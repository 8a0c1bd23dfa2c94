"""A real ``fleet ingest http`` process for the phone tests, and an HTTP client as the apps are."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from fleet_devtools import stack
from fleet_store.devices import Issued, add_device
from fleet_testing.ingest import IngestProcesses

STARTUP_S = 60.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def request(
    url: str, *, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> Answer:
    """One request as an app sends it; any status comes back as an Answer."""
    assert url.startswith("http://127.0.0.1:"), url
    sent = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310 - checked
    try:
        with urllib.request.urlopen(sent, timeout=30) as response:  # noqa: S310 - checked above
            raw, status, got = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        raw, status, got = exc.read(), exc.code, dict(exc.headers)
    return Answer(status, {k.lower(): v for k, v in got.items()}, json.loads(raw) if raw else {})


def add_phone(ingest: IngestProcesses, operator: str, device: str, bus: str) -> Issued:
    """Register a phone in the test database under the processes' key-encryption key."""

    async def add() -> Issued:
        conn = await asyncpg.connect(ingest.database_url)
        try:
            return await add_device(conn, ingest.kek, operator, device, bus, kind="phone")
        finally:
            await conn.close()

    return asyncio.run(add())


@contextmanager
def http_ingest(ingest: IngestProcesses, **settings: str) -> Iterator[str]:
    """``fleet ingest http`` on a free port with the test's servers; yields its base URL, stops it after."""
    port = stack.free_port()
    env = {
        **ingest.env(),
        "FLEET_HTTP_INGEST_ADDR": f"127.0.0.1:{port}",
        "FLEET_HTTP_INGEST_METRICS_ADDR": "",
        "FLEET_INGEST_TRIPS": "off",
        **settings,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "fleet_cli", "ingest", "http"], env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, err = process.communicate()
                raise RuntimeError(f"fleet ingest http did not start: {err.decode()[-3000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.terminate()
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()[-3000:]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
