"""A Mosquitto of one test's own, to stop and restart without disturbing the session's broker."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from fleet_devtools import stack
from fleet_store import stackfile
from fleet_store.settings import load_settings


def scratch_dir() -> Path:
    """A fresh folder the stack's service user can reach (the stack must be up)."""
    state = stackfile.read_state(load_settings().state_dir)
    if state is None:
        raise RuntimeError("the local stack is not up; private brokers live in its data folder")
    directory = Path(state.data_dir) / "scratch" / uuid.uuid4().hex[:12]
    directory.mkdir(parents=True)
    return directory


class PrivateBroker:
    """A real Mosquitto with fleet's config on its own port; ``stop`` and ``start`` at will."""

    def __init__(self) -> None:
        self.directory = scratch_dir()
        self.port = stack.free_port()
        self.password = secrets.token_urlsafe(16)
        self._command = stack.prepare_mosquitto(self.directory, self.port, self.password)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{stackfile.MQTT_USER}:{self.password}@127.0.0.1:{self.port}"

    def add_tls_listeners(self) -> tuple[int, int]:
        """Two more listeners: TLS with passwords, and TLS where the client certificate's CN is the login.

        Returns their ports; the certificates are under ``directory/tls`` (CA: ``ca.crt``).
        """
        from fleet_testing.tls import ThrowawayAuthority

        tls = self.directory / "tls"
        tls.mkdir()
        authority = ThrowawayAuthority(tls)
        cert, key = authority.issue("broker", "127.0.0.1", server=True)
        password_port, certificate_port = stack.free_port(), stack.free_port()
        common = [f"cafile {tls / 'ca.crt'}", f"certfile {cert}", f"keyfile {key}"]
        with (self.directory / "mosquitto.conf").open("a") as conf:
            conf.write("\n".join([f"listener {password_port} 127.0.0.1", *common, ""]))
            conf.write(
                "\n".join(
                    [
                        f"listener {certificate_port} 127.0.0.1",
                        *common,
                        "require_certificate true",
                        "use_identity_as_username true",
                        "",
                    ]
                )
            )
        stack.chown_to_service_user(self.directory)
        self.authority = authority
        return password_port, certificate_port

    def add_listener(self, address: str) -> int:
        """One more plain listener, on ``address`` (a namespace's veth end); its port. Restart to use it."""
        port = stack.free_port()
        with (self.directory / "mosquitto.conf").open("a") as conf:
            conf.write(f"listener {port} {address}\n")
        return port

    def start(self) -> None:
        self._process = subprocess.Popen(self._command)
        deadline = time.monotonic() + 10
        while not stack.port_answers(self.port):
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError(f"private Mosquitto did not start; see {self.directory}/mosquitto.log")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM Mosquitto itself and wait while it saves its persistence and exits.

        Terminating ``runuser`` instead makes it SIGTERM Mosquitto and SIGKILL it
        2 s later, whether or not the save is done (util-linux su-common.c).
        """
        if self._process is not None:
            pid_file = self.directory / "mosquitto.pid"
            if self._process.poll() is None and pid_file.exists():
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            elif self._process.poll() is None:
                self._process.terminate()
            self._process.wait(timeout=120)
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None

    def kill(self) -> None:
        """SIGKILL Mosquitto itself, as a crash would: nothing since its last autosave is kept."""
        from fleet_testing.faults import kill_tree

        assert self._process is not None
        kill_tree(self._process.pid)
        self._process.wait(timeout=60)
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
