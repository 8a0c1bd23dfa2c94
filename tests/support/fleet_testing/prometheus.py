"""A real Prometheus (Debian's package) and the exporters, as processes of one test, on free ports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STARTUP_S = 30.0


@dataclass
class Processes:
    """Processes started by a test, their stderr in ``log_dir``; ``close`` stops every one of them."""

    log_dir: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        binary = shutil.which(argv[0]) or argv[0]
        assert Path(binary).exists(), f"{argv[0]} is missing: run scripts/bootstrap"
        with (self.log_dir / f"{name}.log").open("wb") as log:  # a file: a full pipe would block the process
            self.running[name] = subprocess.Popen(
                [binary, *argv[1:]], env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=log
            )

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]

    def close(self) -> None:
        for process in self.running.values():
            process.kill()
            process.wait()
        self.running.clear()


def wait_for_http(url: str, processes: Processes, name: str) -> None:
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - the test's own http URL
                return
        except OSError:
            if processes.running[name].poll() is not None:
                raise AssertionError(f"{name} exited: {processes.log(name)}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def prometheus_config(example: Path, directory: Path, targets: dict[str, str], keep_mountpoint: str) -> Path:
    """The operators' example configuration (``example``), with the test's targets, 1 s intervals and
    the node exporter's filesystems cut to ``keep_mountpoint``; every job must get a target."""
    config: dict[str, Any] = yaml.safe_load(example.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert sorted(jobs) == sorted(targets), f"{example} scrapes {sorted(jobs)}"
    for name, job in jobs.items():
        job["static_configs"] = [{"targets": [targets[name]]}]
        for relabel in job.get("metric_relabel_configs", []):
            if relabel.get("source_labels") == ["mountpoint"]:
                relabel["regex"] = f"(?:{re.escape(keep_mountpoint)}|)"
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
    config["rule_files"] = [str(example.parent / path) for path in config["rule_files"]]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass(frozen=True)
class PrometheusApi:
    base_url: str

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"{self.base_url}{path}{query}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the test's own http URL
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["result"]
        return result

    def alert_states(self) -> dict[str, str]:
        """Alert name -> its state (pending or firing), for the alerts active now."""
        return {a["labels"]["alertname"]: a["state"] for a in self.get("/api/v1/alerts")["alerts"]}

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.get("/api/v1/rules")["groups"] for rule in group["rules"]]
