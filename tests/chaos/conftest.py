"""The fault-injection suite (``make chaos``): fixtures, and the table written when it ends.

Every test here is marked ``chaos`` and left out of ``make test`` by the root
pytest options (``-m "not chaos"``). Each one records its row in
``$FLEET_STATE_DIR/chaos/report.json``; the end of a ``-m chaos`` run renders
the README's table from it into ``table.md`` beside it and prints it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fleet_store.settings import ServiceUrls
from fleet_testing import faults
from fleet_testing.broker import PrivateBroker, scratch_dir
from fleet_testing.chaos import BYTECODE, MakePipeline, Pipeline, render_table, report_dir, report_path
from fleet_testing.ingest import IngestProcesses


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.stack)


def _running_chaos(config: pytest.Config) -> bool:
    """Whether this run selected the suite (``-m chaos``); ``make test`` leaves its report alone."""
    return str(config.option.markexpr).strip() == "chaos"


def pytest_sessionstart(session: pytest.Session) -> None:
    """A run of the whole suite starts a fresh report; a selection (-k) replaces only its rows."""
    options = session.config.option
    if _running_chaos(session.config) and not options.keyword and not options.collectonly:
        report_path(report_dir()).unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    path = report_path(report_dir())
    if not _running_chaos(config) or not path.exists():
        return
    table = render_table(json.loads(path.read_text()))
    (report_dir() / "table.md").write_text(table + "\n")
    terminalreporter.write_sep("=", "fault injection")
    terminalreporter.write_line(table)


@pytest.fixture(autouse=True)
def servers_back() -> Iterator[None]:
    """Whatever a fault stopped of the stack is started again after the test, failed or not."""
    yield
    faults.start_servers()


@pytest.fixture
def chaos_ingest(
    broker: PrivateBroker, stack_urls: ServiceUrls, database_url: str, redis_url: str
) -> Iterator[IngestProcesses]:
    """Ingest processes on the test's private broker (stopped, killed and restarted at will)."""
    urls = msgspec.structs.replace(stack_urls, mqtt_url=broker.url)
    processes = IngestProcesses(urls, database_url, redis_url, log_dir=scratch_dir())
    processes.settings.update({"FLEET_LOG_LEVEL": "INFO", **BYTECODE})
    try:
        yield processes
    finally:
        if not broker.running:
            broker.start()
        processes.close()


@pytest.fixture
def make_pipeline(chaos_ingest: IngestProcesses, operator_id: str) -> Iterator[MakePipeline]:
    """A pipeline of the test's own buses streaming through the private broker into two ingest processes."""
    made: list[Pipeline] = []

    def make(**options: Any) -> Pipeline:
        made.append(Pipeline(chaos_ingest, operator_id, **options))
        return made[-1]

    try:
        yield make
    finally:
        for running in made:
            for agent in running.agents:
                if agent.process is not None:
                    agent.process.kill()
                    agent.process.wait()


@pytest.fixture
def pipeline(make_pipeline: MakePipeline) -> Pipeline:
    """Four simulated buses at 15 times real speed, ``normal`` durability."""
    return make_pipeline()
