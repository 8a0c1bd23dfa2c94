"""``fleet bench api``: the trip-ETA endpoint under load, against a bare endpoint on the same server.

One server process runs the real app exactly as ``fleet serve`` does
(``fleet_cli.serve_cli.run_app``: one uvicorn process) with one more route,
``/bench/bare``, a Litestar handler returning a constant: the framework's
ceiling on this machine. The trip's predictions (two running instances of
twelve stops) are written to the stack's Redis with ``EtaBoards.publish``,
and requests carry a real booking token (verified and checked against the
revocations on every request, as in production).

Each round measures each endpoint twice. Saturated: ``wrk`` (C, one
thread, keep-alive connections, in its own process) keeps every connection
busy, which gives the most requests/s the server answers, and the ratio to
bare. Paced: the rate of the target offered whatever the server does
(:mod:`fleet_devtools.paced_http`, from this process, each request timed
from when it fell due), which gives the latency at that rate; a saturated
closed loop's percentiles are the queue of its own connections instead.
Rounds alternate bare and ETA so both see the same machine; the figures
are each endpoint's median round. Targets (issue 12): at least 5,000
requests/s, p99 under 20 ms at 5,000 requests/s, and at least 70 % of bare.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
from litestar import get

from fleet_devtools.bench_agent import Machine, Target, machine, target_lines
from fleet_devtools.paced_http import PacedResult, paced_load
from fleet_devtools.stack import free_port
from fleet_schemas.trips import StopEta, TripEtas
from fleet_store.errors import FleetError

Report = Callable[[str], None]

OPERATOR = "bench-api"
TRIP = "BENCH-TRIP"
BARE_PATH = "/bench/bare"
ETA_PATH = f"/v1/operators/{OPERATOR}/trips/{TRIP}/etas"
STOPS = 12
MIN_RPS = 5_000.0
MAX_P99_MS = 20.0
MIN_SHARE = 0.70
START_TIMEOUT_S = 30.0

_BARE_BODY = {"status": "ok"}


class BenchError(FleetError):
    code = "bench_failed"


@get(BARE_PATH, sync_to_thread=False, include_in_schema=False)
def bare() -> dict[str, str]:
    """The ceiling: the framework answering a constant, nothing read."""
    return _BARE_BODY


class Round(msgspec.Struct, frozen=True):
    """One endpoint's round: saturated by wrk, then paced at the offered rate."""

    endpoint: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    paced: PacedResult


class Endpoint(msgspec.Struct, frozen=True):
    """An endpoint's median round."""

    path: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    paced_per_s: float
    paced_p50_ms: float
    paced_p99_ms: float
    paced_max_ms: float


class ApiBench(msgspec.Struct, frozen=True):
    measured_at: str
    machine: Machine
    connections: int
    duration_s: float
    offered_per_s: float
    eta: Endpoint
    bare: Endpoint
    share_of_bare: float
    rounds: list[Round]
    targets: list[Target]
    passed: bool


def _etas(now_ms: int, start_time: str, bus: str) -> TripEtas:
    stops = [
        StopEta(
            stop_sequence=i + 1,
            stop_id=f"S{i + 1:02d}",
            scheduled_arrival_ms=now_ms + i * 600_000,
            scheduled_departure_ms=now_ms + i * 600_000 + 60_000,
            arrival_ms=now_ms + i * 600_000 + 90_000,
            departure_ms=now_ms + i * 600_000 + 150_000,
            arrival_early_ms=now_ms + i * 600_000,
            arrival_late_ms=now_ms + i * 600_000 + 300_000,
        )
        for i in range(STOPS)
    ]
    return TripEtas(
        operator=OPERATOR,
        trip_id=TRIP,
        route_id="BENCH",
        start_date=datetime.now(UTC).strftime("%Y%m%d"),
        start_time=start_time,
        bus=bus,
        feed_id=1,
        time_ms=now_ms,
        updated_ms=now_ms,
        delay_s=90.0,
        stops=stops,
    )


async def seed(redis_url: str) -> None:
    """Two running instances of the bench trip, written as ingest writes them."""
    import redis.asyncio as aioredis

    from fleet_store.etas import EtaBoards, EtaUpdate

    client = aioredis.Redis.from_url(redis_url)
    try:
        now_ms = int(time.time() * 1000)
        updates = [EtaUpdate(_etas(now_ms, "06:00:00", "B1")), EtaUpdate(_etas(now_ms, "07:00:00", "B2"))]
        await EtaBoards(client).publish(updates, now_ms=now_ms)
    finally:
        await client.aclose()


def _token_key() -> tuple[str, str]:
    """A fresh signing key for this run, as FLEET_TOKEN_KEYS writes it, and a booking token it signed."""
    from fleet_serve.auth import issue_token
    from fleet_serve.settings import ServeSettings, TokenKey

    secret = secrets.token_bytes(32)
    settings = ServeSettings(token_keys=(TokenKey("bench", secret),))
    token, _ = issue_token(
        settings, role="booking", operators=(OPERATOR,), ttl_s=3_600, sub="fleet bench api"
    )
    return f"bench={base64.b64encode(secret).decode()}", token


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the server exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:  # noqa: S310 (our own URL)
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise BenchError(f"the server did not become ready within {START_TIMEOUT_S:.0f} s")


def _check_eta(base: str, token: str) -> None:
    request = urllib.request.Request(  # noqa: S310 (our own URL)
        f"{base}{ETA_PATH}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 (our own URL)
            body = msgspec.json.decode(answer.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"the ETA endpoint answered {exc.code}: {exc.read()[:300]!r}") from None
    if len(body.get("instances", [])) != 2:
        raise BenchError(f"the ETA endpoint answered {body!r}, not the two seeded instances")


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """Requests/s, p50 and p99 in ms, and the non-2xx/3xx and socket error count of ``wrk --latency``."""

    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not match:
            raise BenchError(f"wrk printed no {percent}% latency:\n{output}")
        return float(match.group(1)) * _UNITS_MS[match.group(2)]

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not rate:
        raise BenchError(f"wrk printed no Requests/sec:\n{output}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    for found in re.findall(r"Socket errors: (.*)", output):
        errors += sum(int(n) for n in re.findall(r"\d+", found))
    return float(rate.group(1)), latency("50"), latency("99"), errors


def _wrk(url: str, token: str, connections: int, duration_s: float) -> str:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _median(path: str, rounds: list[Round]) -> Endpoint:
    return Endpoint(
        path=path,
        requests_per_s=statistics.median(r.requests_per_s for r in rounds),
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        paced_per_s=statistics.median(r.paced.answered_per_s for r in rounds),
        paced_p50_ms=statistics.median(r.paced.p50_ms for r in rounds),
        paced_p99_ms=statistics.median(r.paced.p99_ms for r in rounds),
        paced_max_ms=statistics.median(r.paced.max_ms for r in rounds),
    )


def _paced(url: str, token: str, rate: float, connections: int, duration_s: float) -> PacedResult:
    import uvloop

    async def load() -> PacedResult:
        headers = {"Authorization": f"Bearer {token}"}
        return await paced_load(
            url, rate=rate, duration_s=duration_s, connections=connections, headers=headers
        )

    return uvloop.run(load())


def run_api_bench(
    redis_url: str,
    database_url: str,
    *,
    connections: int = 64,
    duration_s: float = 10.0,
    rounds: int = 3,
    rate: float = MIN_RPS,
    report: Report = print,
) -> ApiBench:
    """Start the server, seed the trip, alternate rounds on bare and ETA (wrk, then paced at ``rate``);
    the server is stopped after."""
    if shutil.which("wrk") is None:
        raise BenchError("fleet bench api needs wrk (Debian: apt-get install wrk)")
    import asyncio

    asyncio.run(seed(redis_url))
    keys, token = _token_key()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FLEET_SERVE_ADDR": f"127.0.0.1:{port}", "FLEET_TOKEN_KEYS": keys}
    env.pop("FLEET_TOKEN_ISSUER", None)
    report(f"starting the server on {base}")
    server = subprocess.Popen(
        [sys.executable, "-m", "fleet_devtools.bench_api", redis_url, database_url], env=env
    )
    measured: list[Round] = []
    try:
        _wait_ready(base, server)
        _check_eta(base, token)
        for path in (BARE_PATH, ETA_PATH):  # warm-up, not counted
            _wrk(base + path, token, connections, 2)
        for n in range(rounds):
            for name, path in (("bare", BARE_PATH), ("eta", ETA_PATH)):
                top, p50, p99, errors = parse_wrk(_wrk(base + path, token, connections, duration_s))
                paced = _paced(base + path, token, rate, connections, duration_s)
                measured.append(Round(name, top, p50, p99, errors, paced))
                report(
                    f"round {n + 1}/{rounds} {name}: saturated {top:,.0f} req/s, p50 {p50:.2f} ms,"
                    f" p99 {p99:.2f} ms; {rate:,.0f} req/s offered: {paced.answered_per_s:,.0f} answered,"
                    f" p50 {paced.p50_ms:.2f} ms, p99 {paced.p99_ms:.2f} ms, {paced.errors} errors"
                )
    finally:
        server.terminate()
        server.wait(timeout=30)
    eta = _median(ETA_PATH, [r for r in measured if r.endpoint == "eta"])
    ceiling = _median(BARE_PATH, [r for r in measured if r.endpoint == "bare"])
    share = eta.requests_per_s / ceiling.requests_per_s
    errors = sum(r.errors + r.paced.errors for r in measured)
    sustained = all(r.paced.sustained for r in measured if r.endpoint == "eta")
    targets = [
        Target(
            "eta rate", eta.requests_per_s, "req/s", f"at least {MIN_RPS:,.0f}", eta.requests_per_s >= MIN_RPS
        ),
        Target(
            "eta p99 paced",
            round(eta.paced_p99_ms, 2),
            "ms",
            f"under {MAX_P99_MS:g} at {MIN_RPS:,.0f} req/s offered, all answered",
            rate >= MIN_RPS and sustained and eta.paced_p99_ms < MAX_P99_MS,
        ),
        Target("share of bare", round(share * 100, 1), "%", f"at least {MIN_SHARE:.0%}", share >= MIN_SHARE),
        Target("errors", errors, "answers", "none", errors == 0),
    ]
    return ApiBench(
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        connections=connections,
        duration_s=duration_s,
        offered_per_s=rate,
        eta=eta,
        bare=ceiling,
        share_of_bare=share,
        rounds=measured,
        targets=targets,
        passed=all(t.passed for t in targets),
    )


def summary_text(result: ApiBench) -> str:
    m = result.machine
    lines = [
        f"fleet bench api, {result.measured_at}, {m.cores} cores ({m.cpu}), Python {m.python}",
        f"  {result.connections} connections, rounds of {result.duration_s:g} s (median round of each)",
        "        saturated (wrk)                       "
        f" {result.offered_per_s:,.0f} req/s offered (latency from when each fell due)",
    ]
    for name, e in (("eta ", result.eta), ("bare", result.bare)):
        lines.append(
            f"  {name} {e.requests_per_s:>9,.0f} req/s  p50 {e.p50_ms:6.2f} ms  p99 {e.p99_ms:6.2f} ms"
            f"   {e.paced_per_s:>7,.0f} answered/s  p50 {e.paced_p50_ms:6.2f} ms"
            f"  p99 {e.paced_p99_ms:6.2f} ms  max {e.paced_max_ms:7.2f} ms"
        )
    return "\n".join(lines + target_lines(result.targets))


def _serve(redis_url: str, database_url: str) -> None:
    """The server process: the real app and the bare route, run as ``fleet serve`` runs it."""
    from fleet_cli.serve_cli import run_app
    from fleet_serve.app import create_app
    from fleet_serve.settings import load_serve_settings

    settings = load_serve_settings()
    run_app(create_app(settings, redis_url, database_url, routes=[bare]), settings)


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
