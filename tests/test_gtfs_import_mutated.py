"""``fleet gtfs import`` on mutated feeds into the real PostgreSQL: a report with notice codes, never a crash.

The reader alone is fuzzed in ``processing/tests/test_gtfs_mutated_feeds.py``;
this walks the whole command, COPY included, where a value the reader let
through and PostgreSQL refuses (a NUL in text, a number past its column) would
crash the import. It exits 0 with the feed imported, or 1 with
``gtfs_feed_unusable`` when nothing of it can be used.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from fleet_cli.cli import main
from fleet_devtools.demo_feed import feed_dir
from fleet_testing.gtfs_mutations import Files, load, mutations

pytestmark = pytest.mark.stack

DEMO = load(feed_dir())


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(files=mutations(DEMO))
def test_a_mutated_feed_imports_or_is_refused_with_its_report_never_a_crash(
    database_url: str, tmp_path: Path, files: Files
) -> None:
    folder = tmp_path / uuid.uuid4().hex
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)

    result = CliRunner().invoke(
        main,
        ["gtfs", "import", str(folder), "--operator", f"op-{uuid.uuid4().hex[:8]}", "--json"],
        env={"FLEET_DATABASE_URL": database_url},
    )

    assert result.exit_code in (0, 1), result.output[-2000:]
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 1:
        assert "gtfs_feed_unusable" in result.output, result.output[-2000:]
