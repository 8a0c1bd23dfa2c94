"""A throwaway local stack of real servers: Mosquitto 2, Redis 7, PostgreSQL + TimescaleDB.

``fleet stack up`` starts each server as a daemon on a free loopback port,
with its data and logs under ``$FLEET_STATE_DIR`` (``.fleet/``), waits until it
answers and records the URLs in ``stack.json``. Ports stay the same across
``down``/``up`` so URLs handed out earlier keep working. Running it again while
the servers answer changes nothing.

When run as root the servers run as the system user ``fleet`` (PostgreSQL
refuses root). If that user cannot reach ``.fleet/`` (a checkout under a
private home), the data lives under ``/var/tmp/fleet-stack-<hash>/`` instead.

When ``FLEET_MQTT_URL``, ``FLEET_DATABASE_URL`` and ``FLEET_REDIS_URL`` are
all set, nothing is started: those servers are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import msgspec

from fleet_schemas import MAX_PACKET_BYTES
from fleet_store import dynsec
from fleet_store.errors import FleetError
from fleet_store.resources import MOSQUITTO_DIR
from fleet_store.settings import ServiceUrls, Settings
from fleet_store.stackfile import (
    DATABASE,
    MQTT_USER,
    SERVICE_USER,
    STATE_FILE,
    StackState,
    read_state,
    resolve_urls,
)

READY_TIMEOUT_S = 60.0
MIN_MOSQUITTO = (2, 0, 18)
"""2.0.11 (Debian 12) loses acknowledged frames on ``$share`` subscriptions after a restart
(fixed in 2.0.12) and sends retained messages on them (fixed in 2.0.13)."""


class StackError(FleetError):
    """A local service could not be installed, started, stopped or reached."""

    code = "stack_error"


DYNSEC_PLUGINS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
)


class ServiceStatus(msgspec.Struct, frozen=True):
    """One server's state as ``fleet stack status`` shows it."""

    name: str
    url: str
    answering: bool
    detail: str


# ---------------------------------------------------------------- processes


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _ensure_service_user() -> None:
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER])


def _as_service_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVICE_USER, "--", *command] if _running_as_root() else command


def _run(command: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError as exc:
        raise StackError(f"{command[0]} is not installed: run scripts/bootstrap") from exc
    if check and result.returncode != 0:
        raise StackError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


def _service_can_reach(path: Path) -> bool:
    if not _running_as_root():
        return True
    return (
        _run(_as_service_user(["test", "-x", str(path), "-a", "-w", str(path)]), check=False).returncode == 0
    )


def chown_to_service_user(path: Path) -> None:
    if _running_as_root():
        entry = pwd.getpwnam(SERVICE_USER)
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _wait_until(check: Callable[[], bool], what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise StackError(f"{what} did not answer within {READY_TIMEOUT_S:.0f} s; its log ends:\n{tail}")


def _pid_alive(pid_file: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    return None


def _find_pg_bindir() -> Path:
    given = os.environ.get("FLEET_PG_BINDIR")
    if given:
        return Path(given)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise StackError("PostgreSQL is not installed: run scripts/bootstrap (or set FLEET_PG_BINDIR)")


# ---------------------------------------------------------------- servers


class _Paths:
    """Where each server keeps its files under the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self.mosquitto = data_dir / "mosquitto"
        self.redis = data_dir / "redis"
        self.postgres = data_dir / "postgres"
        self.mosquitto_pid = self.mosquitto / "mosquitto.pid"
        self.redis_pid = self.redis / "redis.pid"
        self.postgres_pid = self.postgres / "postmaster.pid"


def mosquitto_version(first_line: str) -> tuple[int, int, int]:
    """The version in the first line of ``mosquitto -h`` (``mosquitto version 2.0.21``)."""
    words = first_line.split()
    try:
        major, minor, patch = (int(part) for part in words[words.index("version") + 1].split(".")[:3])
    except (ValueError, IndexError) as exc:
        raise StackError(f"cannot tell Mosquitto's version from {first_line!r}") from exc
    return major, minor, patch


def check_mosquitto_version() -> None:
    """Refuse the installed broker if older than MIN_MOSQUITTO: it would lose acknowledged frames."""
    # `mosquitto -h` exits with 3 after printing its usage.
    require_mosquitto(_run(["mosquitto", "-h"], check=False).stdout.split("\n", 1)[0])


def require_mosquitto(first_line: str) -> None:
    """StackError unless ``mosquitto -h``'s first line names MIN_MOSQUITTO or newer."""
    found = mosquitto_version(first_line)
    if found < MIN_MOSQUITTO:
        have, need = ".".join(map(str, found)), ".".join(map(str, MIN_MOSQUITTO))
        raise StackError(
            f"Mosquitto {have} is too old: fleet needs {need} or newer (older ones lose acknowledged"
            " frames on shared subscriptions after a restart); run scripts/bootstrap, which installs it"
            " from bookworm-backports on Debian 12"
        )


def dynsec_plugin() -> str:
    """Where this machine's Mosquitto package put its dynamic-security plugin."""
    for candidate in DYNSEC_PLUGINS:
        if Path(candidate).exists():
            return candidate
    raise StackError("Mosquitto's dynamic-security plugin is not installed: run scripts/bootstrap")


def mosquitto_config(directory: Path, port: int) -> str:
    """``deploy/mosquitto/mosquitto.conf`` with a local port, files and logs under ``directory``.

    The deployed config is the single source of the broker's durability
    settings (persistence, no queue limit that would drop QoS 1 messages).
    """
    local = {
        "listener": f"{port} 127.0.0.1",
        "password_file": str(directory / "passwords"),
        "plugin": dynsec_plugin(),
        "plugin_opt_config_file": str(directory / dynsec.CONFIG_FILE),
        "persistence_location": f"{directory}/",
        "log_dest": f"file {directory / 'mosquitto.log'}",
        "pid_file": str(directory / "mosquitto.pid"),
        "log_timestamp_format": "%Y-%m-%dT%H:%M:%S",
        "max_packet_size": str(MAX_PACKET_BYTES),
    }
    lines = ["# written by fleet from deploy/mosquitto/mosquitto.conf; edits are overwritten"]
    for line in (MOSQUITTO_DIR / "mosquitto.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        lines.append(f"{key} {local.pop(key)}" if key in local else line)
    lines.extend(f"{key} {value}" for key, value in local.items())
    return "\n".join(lines) + "\n"


def prepare_mosquitto(directory: Path, port: int, server_password: str) -> list[str]:
    """Write a broker's config, password file and access rules under ``directory``; return its command.

    The command runs in the foreground; add ``-d`` to daemonize.
    """
    check_mosquitto_version()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mosquitto.conf").write_text(mosquitto_config(directory, port))
    passwords = directory / "passwords"
    if not passwords.exists():
        _run(["mosquitto_passwd", "-b", "-c", str(passwords), MQTT_USER, server_password])
    rules = directory / dynsec.CONFIG_FILE
    if not rules.exists():
        rules.write_text(dynsec.render(dynsec.desired([MQTT_USER], [])))
    passwords.chmod(0o600)
    rules.chmod(0o600)
    if _running_as_root():
        _ensure_service_user()
    chown_to_service_user(directory)
    return _as_service_user(["mosquitto", "-c", str(directory / "mosquitto.conf")])


def _config_current(state: StackState, paths: _Paths) -> bool:
    conf = paths.mosquitto / "mosquitto.conf"
    return conf.exists() and conf.read_text() == mosquitto_config(paths.mosquitto, state.mqtt_port)


def _start_mosquitto(state: StackState, paths: _Paths) -> None:
    _run([*prepare_mosquitto(paths.mosquitto, state.mqtt_port, state.mqtt_password), "-d"])
    _wait_until(lambda: port_answers(state.mqtt_port), "Mosquitto", paths.mosquitto / "mosquitto.log")


def _start_redis(state: StackState, paths: _Paths) -> None:
    d = paths.redis
    d.mkdir(parents=True, exist_ok=True)
    chown_to_service_user(d)
    _run(
        _as_service_user(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(state.redis_port),
                "--daemonize",
                "yes",
                "--pidfile",
                str(paths.redis_pid),
                "--dir",
                str(d),
                "--logfile",
                str(d / "redis.log"),
                "--appendonly",
                "yes",
                "--save",
                "",
            ]
        )
    )
    _wait_until(lambda: _redis_ping(state.redis_port), "Redis", d / "redis.log")


def _redis_ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False


def _start_postgres(state: StackState, paths: _Paths) -> None:
    bindir = _find_pg_bindir()
    d = paths.postgres
    log = paths.root / "postgres.log"
    if not (d / "PG_VERSION").exists():
        d.mkdir(parents=True, exist_ok=True)
        chown_to_service_user(d)
        _run(
            _as_service_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(d),
                    "-U",
                    SERVICE_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-instructions",
                ]
            )
        )
        with (d / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# fleet stack\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{d}'\n"
                "shared_preload_libraries = 'timescaledb'\n"
                "timescaledb.telemetry_level = off\n"
                "max_connections = 200\n"
                "shared_buffers = 256MB\n"
                "max_wal_size = 2GB\n"
            )
    log.touch(exist_ok=True)
    chown_to_service_user(log)
    _run(
        _as_service_user(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(d),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {state.postgres_port}",
                "start",
            ]
        )
    )
    _wait_until(lambda: port_answers(state.postgres_port), "PostgreSQL", log)
    exists = _run(
        [
            str(bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(state.postgres_port),
            "-U",
            SERVICE_USER,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",  # noqa: S608 - a constant
        ]
    )
    if exists.stdout.strip() != "1":
        _run(
            [
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(state.postgres_port),
                "-U",
                SERVICE_USER,
                DATABASE,
            ]
        )


def _stop_pid(pid_file: Path, what: str) -> bool:
    pid = _pid_alive(pid_file)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    raise StackError(f"{what} (pid {pid}) did not stop within 30 s")


# ---------------------------------------------------------------- commands


def _data_dir_for(state_dir: Path) -> Path:
    """``state_dir`` itself, unless the service user cannot reach it (see module docstring)."""
    candidate = state_dir / "data"
    candidate.mkdir(parents=True, exist_ok=True)
    if not _running_as_root():
        return candidate
    _ensure_service_user()
    chown_to_service_user(candidate)
    if _service_can_reach(candidate):
        return candidate
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    fallback = Path("/var/tmp") / f"fleet-stack-{digest}"  # noqa: S108 - fixed, root-owned, service-user only
    fallback.mkdir(mode=0o700, exist_ok=True)
    chown_to_service_user(fallback)
    return fallback


def _load_or_create_state(state_dir: Path) -> StackState:
    state = read_state(state_dir)
    if state is not None:
        return state
    data_dir = _data_dir_for(state_dir)
    state = StackState(
        data_dir=str(data_dir),
        mqtt_port=free_port(),
        redis_port=free_port(),
        postgres_port=free_port(),
        mqtt_password=secrets.token_urlsafe(24),
    )
    _write_state(state_dir, state)
    return state


def _write_state(state_dir: Path, state: StackState) -> None:
    path = state_dir / STATE_FILE
    path.write_bytes(msgspec.json.format(msgspec.json.encode(state)))
    path.chmod(0o600)
    (state_dir / ".gitignore").write_text("*\n")


def up(state_dir: Path, progress: Callable[[str], None] = lambda _: None) -> tuple[ServiceUrls, list[str]]:
    """Start whatever is not answering; return the URLs and the names of servers started."""
    state = _load_or_create_state(state_dir)
    paths = _Paths(Path(state.data_dir))
    if _running_as_root():
        _ensure_service_user()
    started: list[str] = []
    if _pid_alive(paths.mosquitto_pid) is not None and not _config_current(state, paths):
        # A broker started by an older fleet (another config, say without the dynamic-security
        # plugin) would keep running as it was: restart it on the config this version writes.
        progress("mosquitto: its config changed since it started; restarting it")
        _stop_pid(paths.mosquitto_pid, "Mosquitto")
    checks: list[tuple[str, Callable[[], bool], Callable[[StackState, _Paths], None]]] = [
        (
            "mosquitto",
            lambda: _pid_alive(paths.mosquitto_pid) is not None and port_answers(state.mqtt_port),
            _start_mosquitto,
        ),
        ("redis", lambda: _redis_ping(state.redis_port), _start_redis),
        (
            "postgres",
            lambda: _pid_alive(paths.postgres_pid) is not None and port_answers(state.postgres_port),
            _start_postgres,
        ),
    ]
    for name, answering, start in checks:
        if answering():
            progress(f"{name}: already running")
            continue
        begun = time.monotonic()
        progress(f"{name}: starting ...")
        start(state, paths)
        progress(f"{name}: up in {time.monotonic() - begun:.1f} s")
        started.append(name)
    return state.urls(), started


def down(
    state_dir: Path,
    progress: Callable[[str], None] = lambda _: None,
    only: Collection[str] = ("mosquitto", "redis", "postgres"),
) -> list[str]:
    """Stop the stack's servers named in ``only`` (their data stays); return those stopped."""
    state = read_state(state_dir)
    if state is None:
        return []
    paths = _Paths(Path(state.data_dir))
    stopped: list[str] = []
    if "mosquitto" in only and _stop_pid(paths.mosquitto_pid, "Mosquitto"):
        stopped.append("mosquitto")
    if "redis" in only and _stop_pid(paths.redis_pid, "Redis"):
        stopped.append("redis")
    if "postgres" in only and _pid_alive(paths.postgres_pid) is not None:
        _run(
            _as_service_user(
                [str(_find_pg_bindir() / "pg_ctl"), "-D", str(paths.postgres), "-m", "fast", "-w", "stop"]
            )
        )
        stopped.append("postgres")
    for name in stopped:
        progress(f"{name}: stopped")
    return stopped


def server_pid(state_dir: Path, name: str) -> int | None:
    """The process id of the stack's ``name`` server (mosquitto, redis, postgres), if it runs."""
    state = read_state(state_dir)
    if state is None:
        return None
    paths = _Paths(Path(state.data_dir))
    files = {"mosquitto": paths.mosquitto_pid, "redis": paths.redis_pid, "postgres": paths.postgres_pid}
    return _pid_alive(files[name])


def status(state_dir: Path) -> list[ServiceStatus]:
    """Whether each recorded server answers on its port."""
    state = read_state(state_dir)
    if state is None:
        return []
    urls = state.urls()
    return [
        ServiceStatus(
            "mosquitto",
            redact(urls.mqtt_url),
            port_answers(state.mqtt_port),
            f"data {state.data_dir}/mosquitto",
        ),
        ServiceStatus("redis", urls.redis_url, _redis_ping(state.redis_port), f"data {state.data_dir}/redis"),
        ServiceStatus(
            "postgres",
            urls.database_url,
            port_answers(state.postgres_port),
            f"data {state.data_dir}/postgres",
        ),
    ]


def redact(url: str) -> str:
    """Hide a password in a URL before it is shown."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[ServiceUrls]:
    """The servers for a block: the environment's, or the local stack, stopped after if started for it."""
    if settings.external:
        yield resolve_urls(settings)
        return
    urls, started = up(settings.state_dir)
    try:
        yield urls
    finally:
        if started:
            down(settings.state_dir, only=started)
