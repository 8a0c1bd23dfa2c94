"""dashboards/rules: valid for Prometheus, each alert unit-tested, summarised and given a runbook paragraph.

``promtool`` (Debian's ``prometheus`` package, installed by ``scripts/bootstrap``)
checks the rule files and runs their unit tests in ``dashboards/rules/tests``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"
RULES = sorted((DASHBOARDS / "rules").glob("*.yml"))
RULE_TESTS = sorted((DASHBOARDS / "rules" / "tests").glob("*.yml"))


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run scripts/bootstrap (Debian's prometheus package)"
    return found


def _alerts() -> list[dict[str, object]]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_rule_files_pass_promtool_check() -> None:
    assert RULES
    result = subprocess.run([_promtool(), "check", "rules", *map(str, RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_prometheus_config_passes_promtool_check_and_loads_every_rule_file() -> None:
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    assert sorted(DASHBOARDS / path for path in config["rule_files"]) == RULES
    result = subprocess.run(
        [_promtool(), "check", "config", str(DASHBOARDS / "prometheus.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("unit_tests", RULE_TESTS, ids=lambda path: path.name)
def test_rule_unit_tests_pass_promtool(unit_tests: Path) -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", unit_tests.name], cwd=unit_tests.parent, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_summary_a_severity_and_a_runbook_paragraph() -> None:
    runbook = (DASHBOARDS / "RUNBOOK.md").read_text()
    headings = {h.lower() for h in re.findall(r"^## (\S+)$", runbook, flags=re.MULTILINE)}
    for alert in _alerts():
        name = str(alert["alert"])
        annotations = alert["annotations"]
        assert isinstance(annotations, dict)
        assert annotations.get("summary"), name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name  # type: ignore[index]
        assert annotations["runbook_url"] == f"dashboards/RUNBOOK.md#{name.lower()}", name
        assert name.lower() in headings, f"{name} has no paragraph in dashboards/RUNBOOK.md"


def test_every_alert_is_exercised_by_a_unit_test_that_expects_it_to_fire() -> None:
    fired: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    fired.add(check["alertname"])
    missing = sorted({str(a["alert"]) for a in _alerts()} - fired)
    assert not missing, f"alerts no promtool test expects to fire: {missing}"


def test_runbook_holds_no_paragraph_for_an_alert_that_does_not_exist() -> None:
    names = {str(a["alert"]).lower() for a in _alerts()}
    headings = re.findall(r"^## (\S+)$", (DASHBOARDS / "RUNBOOK.md").read_text(), flags=re.MULTILINE)
    assert {h.lower() for h in headings} == names
