"""A network namespace joined to this machine by a veth pair, and partitions cut into it with nftables.

A process run under :attr:`Namespace.prefix` (``ip netns exec NAME``) sees
only the namespace's own loopback and its end of the pair (10.213.N.2/30);
this machine's end is 10.213.N.1. Servers that listen on loopback only are
reached through :meth:`Namespace.relay` (socat on this machine's end). A
partition is an nftables table inside the namespace: ``reject with tcp
reset`` (the connection fails at once) or ``drop`` (packets vanish, no RST:
the silent kind, noticed only by timeouts). Everything is removed on exit,
whatever happened.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import socket
import subprocess
import time
import uuid
from typing import Literal

from fleet_devtools import stack

TABLE = "fleetchaos"
Kind = Literal["reset", "silent"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _addresses_in_use() -> set[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], check=True, capture_output=True, text=True).stdout
    return {ipaddress.IPv4Interface(line.split()[3]).network for line in out.splitlines()}


class Namespace:
    """One namespace with its veth pair; see the module docstring."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"fleetchaos-{tag}"
        self._host_link, self._ns_link = f"fc{tag}h", f"fc{tag}n"
        used = _addresses_in_use()
        free = [n for n in range(256) if ipaddress.IPv4Network(f"10.213.{n}.0/30") not in used]
        octet = random.choice(free)
        self.host_addr, self.ns_addr = f"10.213.{octet}.1", f"10.213.{octet}.2"
        self.prefix = ("ip", "netns", "exec", self.name)
        self._relays: list[subprocess.Popen[bytes]] = []
        self._cut = False

    def __enter__(self) -> Namespace:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self._host_link, "type", "veth", "peer", "name", self._ns_link)
            _ip("link", "set", self._ns_link, "netns", self.name)
            _ip("addr", "add", f"{self.host_addr}/30", "dev", self._host_link)
            _ip("link", "set", self._host_link, "up")
            _ip("-n", self.name, "addr", "add", f"{self.ns_addr}/30", "dev", self._ns_link)
            _ip("-n", self.name, "link", "set", self._ns_link, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for relay in self._relays:
            relay.kill()
            relay.wait()
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", self.name)  # takes its end of the pair, and so the pair, with it
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self._host_link)

    def relay(self, port: int) -> int:
        """Relay this machine's end of the pair to ``127.0.0.1:port``; the relay's port there."""
        listen = stack.free_port()
        self._relays.append(
            subprocess.Popen(
                [
                    "socat",
                    f"TCP-LISTEN:{listen},bind={self.host_addr},fork,reuseaddr",
                    f"TCP:127.0.0.1:{port}",
                ],
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 10
        while not _answers(self.host_addr, listen):
            assert time.monotonic() < deadline, "socat did not listen"
            time.sleep(0.05)
        return listen

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *command], check=True, capture_output=True, text=True)

    def cut(self, kind: Kind, port: int | None = None) -> None:
        """Cut the namespace off this machine (only from ``port`` there, if given) until :meth:`heal`."""
        match = f"ip daddr {self.host_addr}" + (f" tcp dport {port}" if port else "")
        back = f"ip saddr {self.host_addr}" + (f" tcp sport {port}" if port else "")
        verdict = "reject with tcp reset" if kind == "reset" else "drop"
        if kind == "reset" and port is None:
            match += " meta l4proto tcp"
        script = "\n".join(
            [
                f"table inet {TABLE} {{",
                "  chain out { type filter hook output priority 0; " + f"{match} {verdict}; }}",
                "  chain in { type filter hook input priority 0; " + f"{back} drop; }}",
                "}",
            ]
        )
        subprocess.run([*self.prefix, "nft", "-f", "-"], input=script, check=True, text=True)
        self._cut = True

    def heal(self) -> None:
        if self._cut:
            self.run("nft", "delete", "table", "inet", TABLE)
            self._cut = False


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False
