"""``fleet demo run``: the whole chain on the local stack, from an empty machine to buses on the map.

Each step is the project's own command, run as a child process exactly as a
newcomer would type it: ``fleet db migrate``, ``fleet gtfs import``,
``fleet geofences import``, ``fleet ingest``, ``fleet serve``,
``fleet tokens issue`` and ``fleet simulate``. The services run in sessions of
their own (a Ctrl-C in the terminal reaches this process only) and die with it
if it is killed (``PR_SET_PDEATHSIG``); on Ctrl-C, SIGTERM, the end of
``--duration`` or a service dying, they are stopped in order, simulators first
(their last frames are still taken in), then ingest, then serve, and the
demo's ingest session is removed from the broker, which would otherwise queue
every later frame for a consumer that never comes back.

The shipped demo feed has two to four departures a day per line and
direction, about ten trips under way at a time; the demo imports the same
lines with departures every few minutes round the clock
(``demo_feed.dense_source``) so each of the hundreds of buses has a trip of
its own. Their logs go to files under ``FLEET_STATE_DIR/demo/logs``.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

import msgspec

from fleet_devtools import stack
from fleet_devtools.demo_feed import OPERATOR, build_feed, dense_source, feed_dir, load_source, write_feed
from fleet_devtools.demo_status import Status, StatusReader
from fleet_store import stackfile
from fleet_store.errors import FleetError
from fleet_store.settings import ServiceUrls, Settings

INSTANCE = "demo"
"""The ingest instance (MQTT client id suffix) of the demo; its broker session is removed at the end."""
FAULTS_EVERY = 20
"""Of every 20 buses, one detours, one stops long and one goes dark (``simulate.scripted_faults``)."""
STOP_WAIT_S = 20.0
READY_WAIT_S = 60.0
START_WAIT_S = 300.0
"""how long the simulator may take to register and start its buses before the first is live"""
TOKEN_TTL = "12h"  # noqa: S105 - a lifetime, not a secret
PR_SET_PDEATHSIG = 1


class DemoError(FleetError):
    """A step of the demo failed or a service it runs died; ``code`` is stable."""

    code = "demo_failed"


class DemoOptions(msgspec.Struct, frozen=True, kw_only=True):
    buses: int = 200
    duration_s: float | None = None
    """from the first bus live (registering 200 devices the first time takes a while); None: until a signal"""
    serve_addr: str | None = None
    """host:port for fleet serve (default: a free loopback port)"""
    every_s: float = 2.0
    """how often the status line is refreshed"""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM reached the demo."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the demo process ends, however it ends (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def fleet_command() -> list[str]:
    """The ``fleet`` command of this environment, run by this interpreter."""
    return [sys.executable, "-m", "fleet_cli"]


class Children:
    """The services the demo started, stopped in reverse order of start, each given STOP_WAIT_S to end."""

    def __init__(self, env: dict[str, str], logs: Path, echo: Callable[[str], None]) -> None:
        self._env, self._logs, self._echo = env, logs, echo
        self._running: list[tuple[str, subprocess.Popen[bytes]]] = []
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, *commands: Sequence[str]) -> list[str]:
        """One-off ``fleet`` commands side by side, to their ends: their stdouts (stderrs: the terminal's).

        Side by side because most of what each costs is the interpreter starting and importing.
        """
        started = [
            (
                args,
                subprocess.Popen(
                    [*fleet_command(), *args],
                    env=self._env,
                    stdout=subprocess.PIPE,
                    preexec_fn=_die_with_parent,
                ),
            )
            for args in commands
        ]
        outputs, failed = [], []
        try:
            for args, process in started:
                out, _ = process.communicate()
                outputs.append(out.decode())
                if process.returncode != 0:
                    failed.append(f"`fleet {' '.join(args)}` exited {process.returncode}")
        finally:  # interrupted: none of them goes on alone
            for _, process in started:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if failed:
            raise DemoError("; ".join(failed))
        return outputs

    def start(self, name: str, args: Sequence[str], extra_env: dict[str, str] | None = None) -> Path:
        log = self._logs / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*fleet_command(), *args],
                env={**self._env, **(extra_env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._running.append((name, process))
        self._echo(f"demo: started {name} (pid {process.pid}), log {log}")
        return log

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + system) each running service has used, from ``/proc`` (Linux)."""
        return {name: cpu_seconds(p.pid) for name, p in self._running if p.poll() is None}

    def dead(self) -> list[str]:
        """Services that ended by themselves, with their exit status."""
        return [f"{name} exited {p.returncode}" for name, p in self._running if p.poll() is not None]

    def stop_all(self) -> None:
        while self._running:
            name, process = self._running.pop()
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    self._echo(f"demo: {name} did not stop within {STOP_WAIT_S:g} s; killed")
                    process.kill()
                    process.wait()
            code = process.returncode
            how = f"on {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
            self._echo(f"demo: stopped {name} ({how})")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process: fields 14 and 15 of ``/proc/PID/stat``, after its name.

    Read by hand: two numbers do not justify a dependency (psutil) on every developer's machine.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_line(before: tuple[float, dict[str, float]], after: tuple[float, dict[str, float]]) -> str:
    """Share of one core each service used between two readings of (monotonic time, CPU seconds)."""
    wall = after[0] - before[0]
    shares = [
        f"{name} {100 * (after[1][name] - before[1][name]) / wall:.0f} %"
        for name in after[1]
        if name in before[1] and wall > 0
    ]
    return f"demo: CPU over {wall:.0f} s with every bus live (% of one core): {', '.join(shares)}"


def token_keys(directory: Path) -> str:
    """The demo's FLEET_TOKEN_KEYS, a key generated once and kept (0600) so a map URL outlives a restart."""
    path = directory / "token-keys"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"demo={base64.b64encode(os.urandom(32)).decode()}\n")
    return path.read_text().strip()


def _wait_ready(url: str, children: Children) -> None:
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as response,  # noqa: S310 - our own URL
        ):
            if response.status == 200:
                return
        if children.dead():
            raise DemoError(f"{', '.join(children.dead())} before {url} answered")
        time.sleep(0.5)
    raise DemoError(f"{url} did not answer within {READY_WAIT_S:g} s")


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo_chain(
    settings: Settings,
    options: DemoOptions,
    echo: Callable[[str], None],
    show: Callable[[Status], None],
    done: Callable[[str, Status], bool] = lambda _url, _status: False,
) -> Status | None:
    """Run the demo until ``duration_s``, a signal, or ``done(map_url, status)`` says so after a status read.

    Returns the last status read (None if the buses never started).
    """
    home = settings.state_dir / "demo"
    urls = _stack(settings, echo)
    env = {**os.environ, "FLEET_STATE_DIR": str(settings.state_dir), "FLEET_TOKEN_KEYS": token_keys(home)}
    children = Children(env, home / "logs", echo)
    last: Status | None = None
    map_url = ""
    with _signals_interrupt():
        try:
            children.run(["db", "migrate"])
            serve_addr = options.serve_addr or f"127.0.0.1:{stack.free_port()}"
            children.start("serve", ["serve", "--addr", serve_addr])  # started first, stopped last
            feed = home / "feed"
            write_feed(build_feed(dense_source(load_source(), options.buses)), feed)
            fences = str(feed_dir() / "geofences.geojson")
            issue = f"tokens issue --role manager --operator {OPERATOR} --sub demo --ttl {TOKEN_TTL}".split()
            *_, issued = children.run(
                ["gtfs", "import", str(feed), "--operator", OPERATOR, "--keep", "2"],
                ["geofences", "import", fences, "--operator", OPERATOR, "--replace"],
                issue,
            )
            token = issued.strip()
            metrics_addr = f"127.0.0.1:{stack.free_port()}"
            # after the import: ingest would otherwise find the feed only at its next refresh
            children.start("ingest", ["ingest", "--instance", INSTANCE], {"FLEET_METRICS_ADDR": metrics_addr})
            _wait_ready(f"http://{serve_addr}/readyz", children)
            _wait_ready(f"http://{metrics_addr}/metrics", children)
            map_url = f"http://{serve_addr}/map?token={token}"
            echo(f"demo: the map, for {TOKEN_TTL}: {map_url}")
            simulate = ["simulate", "--operator", OPERATOR, "--register", "--trips", "all-active"]
            simulate += ["--send-trip-id", "--chain-trips"]
            simulate += [
                "--feed",
                str(feed),
                "--buses",
                str(options.buses),
                "--faults-every",
                str(FAULTS_EVERY),
            ]
            children.start("simulate", simulate)
            reader = StatusReader(
                ingest_metrics=f"http://{metrics_addr}/metrics",
                serve_metrics=f"http://{serve_addr}/metrics",
                redis_url=urls.redis_url,
                operator=OPERATOR,
                buses=options.buses,
            )
            steady: tuple[float, dict[str, float]] | None = None
            first_live: float | None = None  # --duration counts from the first bus live, not the start-up
            try:
                while True:
                    time.sleep(options.every_s)
                    dead = children.dead()
                    if dead:
                        raise DemoError(f"{', '.join(dead)}; see the logs in {home / 'logs'}")
                    last = reader.read()
                    show(last)
                    if first_live is None and last.buses_live:
                        first_live = last.elapsed_s
                    if first_live is None and last.elapsed_s > START_WAIT_S:
                        raise DemoError(f"no bus live after {START_WAIT_S:g} s; see {home / 'logs'}")
                    running_s = None if first_live is None else last.elapsed_s - first_live
                    if (
                        running_s is not None
                        and options.duration_s is not None
                        and running_s >= options.duration_s
                    ):
                        break
                    if steady is None and last.buses_live >= options.buses:
                        steady = (time.monotonic(), children.cpu_s())
                    if done(map_url, last):
                        break
            finally:
                reader.close()
                if steady is not None:
                    echo(cpu_line(steady, (time.monotonic(), children.cpu_s())))
        except Interrupted as signal_name:
            echo(f"demo: {signal_name}: stopping")
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up below runs to its end
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            children.stop_all()
            with contextlib.suppress(DemoError):
                children.run(["ingest", "--instance", INSTANCE, "--forget"])
    return last


def _stack(settings: Settings, echo: Callable[[str], None]) -> ServiceUrls:
    if settings.external:
        echo("demo: FLEET_MQTT_URL, FLEET_DATABASE_URL and FLEET_REDIS_URL are set: using those servers")
        return stackfile.resolve_urls(settings)
    urls, started = stack.up(settings.state_dir, echo)
    echo(f"demo: stack {'started ' + ', '.join(started) if started else 'already running'}")
    return urls
