"""``fleet bench phones``: Traccar Client requests through one ``fleet ingest http`` into PostgreSQL.

Registers ``phones`` phones of a fresh operator, starts ``fleet ingest http``
as a process of its own (rate limits lifted, trips off: the front and the
commit are measured), sends each phone's first request (its token checked
against its argon2id hash, then cached), then loads it with ``wrk`` (one
thread, keep-alive connections): every request a Traccar Client POST of
another phone with a later fix time, so each one is a new frame to commit.
Afterwards the stored rows must be the answered requests (plus at most the
ones in flight when wrk stopped, which it does not count).

Targets: an operator's 1,000 phones reporting every 10 s are 100 requests/s;
one front should take three times that (300 requests/s) with a p99 under
1 s (the apps wait 15 s for an answer), no error, and every answered request
stored. The machine's load average is reported beside the figures: on a
shared machine it says how much of the two cores the front had.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec

from fleet_devtools.bench_agent import Machine, Target, machine
from fleet_devtools.bench_api import BenchError, parse_wrk
from fleet_devtools.stack import free_port, port_answers
from fleet_store.devices import add_device
from fleet_store.secretbox import KeyEncryptionKey

Report = Callable[[str], None]

MIN_RPS = 300.0
MAX_P99_MS = 1_000.0
START_TIMEOUT_S = 60.0
_SCRIPT = """
local tokens = {%(tokens)s}
local base_s = %(base_s)d
local n = 0
wrk.method = "POST"
request = function()
  local phone = (n %% #tokens) + 1
  local step = math.floor(n / #tokens)
  n = n + 1
  return wrk.format("POST", "/?id=" .. tokens[phone] .. "&timestamp=" .. (base_s + step)
    .. "&lat=36.7525&lon=3.04197&speed=20.0&bearing=90.0&altitude=112.0&accuracy=6.0&batt=80.0")
end
"""


class PhonesBench(msgspec.Struct, frozen=True):
    measured_at: str
    machine: Machine
    phones: int
    connections: int
    duration_s: float
    load_1m: float
    """the machine's load average when wrk finished"""
    first_request_ms: float
    """median answer time of each phone's first request: argon2id check, then commit"""
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    stored: int
    targets: list[Target]
    passed: bool


async def _register(database_url: str, kek: KeyEncryptionKey, operator: str, phones: int) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        tokens = []
        for n in range(phones):
            issued = await add_device(
                conn, kek, operator, f"{operator}-{n:04d}", f"{operator}-B{n:04d}", "phone"
            )
            assert issued.token is not None
            tokens.append(issued.token)
        return tokens
    finally:
        await conn.close()


async def _stored(database_url: str, operator: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM positions WHERE operator = $1", operator)
        return count
    finally:
        await conn.close()


def _first_request_ms(base: str, token: str, at_s: int) -> float:
    started = time.perf_counter()
    url = f"{base}/?id={token}&timestamp={at_s}&lat=36.7525&lon=3.04197"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30) as answer:  # noqa: S310 (our own URL)
        if answer.status != 200:
            raise BenchError(f"the first request answered {answer.status}")
    return (time.perf_counter() - started) * 1000


def run_phones_bench(
    database_url: str,
    kek: KeyEncryptionKey,
    *,
    phones: int = 50,
    connections: int = 32,
    duration_s: float = 20.0,
    report: Report = print,
) -> PhonesBench:
    """Register the phones, start the front, send first requests, then wrk; the front is stopped after."""
    if shutil.which("wrk") is None:
        raise BenchError("fleet bench phones needs wrk (Debian: apt-get install wrk)")
    operator = f"bench-ph-{uuid.uuid4().hex[:8]}"
    report(f"registering {phones} phones of {operator} (one argon2id hash each)")
    tokens = asyncio.run(_register(database_url, kek, operator, phones))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "FLEET_HTTP_INGEST_ADDR": f"127.0.0.1:{port}",
        "FLEET_HTTP_INGEST_METRICS_ADDR": "",
        "FLEET_HTTP_INGEST_RATE_PER_S": "1000000",
        "FLEET_HTTP_INGEST_BURST": "1000000",
        "FLEET_INGEST_TRIPS": "off",
        "FLEET_LOG_LEVEL": "WARNING",
    }
    report(f"starting fleet ingest http on {base}")
    server = subprocess.Popen([sys.executable, "-m", "fleet_cli", "ingest", "http"], env=env)
    base_s = int(time.time()) - 7_200
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise BenchError("fleet ingest http did not start")
            time.sleep(0.1)
        first = statistics.median(_first_request_ms(base, token, base_s - 1) for token in tokens)
        report(f"first request per phone (argon2id check and commit): median {first:.0f} ms")
        with tempfile.TemporaryDirectory() as folder:
            script = Path(folder) / "phones.lua"
            quoted = ", ".join(f'"{t}"' for t in tokens)
            script.write_text(_SCRIPT % {"tokens": quoted, "base_s": base_s})
            command = [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{duration_s:g}s",
                "--latency",
                "-s",
                str(script),
                base,
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
        load_1m = os.getloadavg()[0]
        rate, p50, p99, errors = parse_wrk(done.stdout)
        requests = _requests(done.stdout)
        report(f"wrk: {rate:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, {errors} errors")
    finally:
        server.terminate()
        server.wait(timeout=60)
    stored = asyncio.run(_stored(database_url, operator)) - len(tokens)
    targets = [
        Target("rate", rate, "req/s", f"at least {MIN_RPS:,.0f}", rate >= MIN_RPS),
        Target("p99", p99, "ms", f"under {MAX_P99_MS:g}", p99 < MAX_P99_MS),
        Target("errors", errors, "answers", "none", errors == 0),
        Target(
            "stored",
            stored,
            "frames",
            f"answered ({requests - errors:,}) + in flight",
            requests - errors <= stored <= requests - errors + connections,
        ),
    ]
    return PhonesBench(
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        phones=phones,
        connections=connections,
        duration_s=duration_s,
        load_1m=load_1m,
        first_request_ms=first,
        requests_per_s=rate,
        p50_ms=p50,
        p99_ms=p99,
        errors=errors,
        requests=requests,
        stored=stored,
        targets=targets,
        passed=all(t.passed for t in targets),
    )


def _requests(output: str) -> int:
    match = re.search(r"^\s*(\d+) requests in", output, re.M)
    if not match:
        raise BenchError(f"wrk printed no request count:\n{output}")
    return int(match.group(1))
