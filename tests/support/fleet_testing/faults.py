"""Faults done to the stack's real servers: a clean restart, or SIGKILL to the server and its children."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from fleet_devtools import stack
from fleet_store.settings import load_settings


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the command name (field 2) may hold spaces and parentheses: the parent follows the last ')'
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all it started at once, as a crash of the machine's process would."""
    tree = [pid, *children(pid)]
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def _state_dir() -> Path:
    return load_settings().state_dir


def stop_server(name: str) -> None:
    """Stop the stack's ``name`` server cleanly (SIGTERM, or PostgreSQL's fast shutdown)."""
    assert stack.down(_state_dir(), only=[name]) == [name], f"{name} was not running"


def kill_server(name: str) -> None:
    """SIGKILL the stack's ``name`` server and its children."""
    pid = stack.server_pid(_state_dir(), name)
    assert pid is not None, f"{name} is not running"
    kill_tree(pid)
    for _ in range(200):
        if stack.server_pid(_state_dir(), name) is None:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    raise AssertionError(f"{name} (pid {pid}) survived SIGKILL")


def start_servers() -> list[str]:
    """Start whatever of the stack is not answering (``fleet stack up``); the names started."""
    _, started = stack.up(_state_dir())
    return started
