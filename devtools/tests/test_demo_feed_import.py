"""The demo feed through the real importer into the real database: no notice of ERROR severity."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from fleet_cli.cli import main
from fleet_cli.gtfs_import import ImportResult
from fleet_devtools.demo_feed import OPERATOR, feed_dir
from fleet_store.settings import ServiceUrls
from fleet_testing.ingest import fleet_env

pytestmark = pytest.mark.stack


def test_the_demo_feed_imports_with_no_error_severity_notice(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    env = fleet_env(stack_urls, database_url, tmp_path / "broker")
    result = CliRunner(env=env).invoke(
        main, ["gtfs", "import", str(feed_dir()), "--operator", OPERATOR, "--json"]
    )
    assert result.exit_code == 0, result.output
    imported = msgspec.json.decode(result.stdout, type=ImportResult)
    assert imported.operator == OPERATOR
    assert imported.active
    errors = [n for n in imported.report.notices if n.severity == "ERROR"]
    assert errors == []
    assert imported.report.counts["trips.txt"].imported == imported.report.counts["trips.txt"].read
