"""The agent installs on an onboard unit without any server-side dependency."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[1]
SERVER_SIDE = {
    "numpy",
    "shapely",
    "pyproj",
    "h3",
    "asyncpg",
    "psycopg",
    "psycopg2",
    "psycopg-binary",
    "redis",
    "hiredis",
    "prometheus-client",
    "fleet-ingest",
    "fleet-processing",
    "litestar",
}


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed (scripts/bootstrap installs it)")
def test_agent_installs_into_an_empty_venv_without_server_dependencies(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "-q", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(["uv", "pip", "install", "-q", "--python", str(python), str(AGENT)], check=True)
    frozen = subprocess.run(
        ["uv", "pip", "freeze", "--python", str(python)], check=True, capture_output=True, text=True
    ).stdout
    installed = {
        re.split(r"[=@ ]", line, maxsplit=1)[0].strip().lower().replace("_", "-")
        for line in frozen.splitlines()
        if line.strip()
    }
    print("agent venv holds:", sorted(installed))
    assert "fleet-agent" in installed
    assert installed.isdisjoint(SERVER_SIDE), installed & SERVER_SIDE
    shown = subprocess.run(
        [str(venv / "bin" / "fleet-agent"), "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "Example" in shown
