"""``fleet dashboards build`` writes what is generated, removes the rest; ``--check`` finds stale files."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fleet_cli.cli import main
from fleet_devtools.dashboards import build_all


def test_build_writes_every_dashboard_and_check_passes_then_fails_on_an_edit(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "retired.json").write_text("{}")
    built = runner.invoke(main, ["dashboards", "build", "--out", str(tmp_path)])
    assert built.exit_code == 0, built.output
    assert {p.name: p.read_text() for p in tmp_path.glob("*.json")} == build_all()

    assert runner.invoke(main, ["dashboards", "build", "--out", str(tmp_path), "--check"]).exit_code == 0
    edited = tmp_path / "fleet-ingest.json"
    edited.write_text(edited.read_text().replace("Fix-to-commit lag", "Lag"))
    stale = runner.invoke(main, ["dashboards", "build", "--out", str(tmp_path), "--check"])
    assert stale.exit_code == 1
    assert f"stale: {edited}" in stale.output
    assert "Lag" in edited.read_text(), "--check wrote a file"
