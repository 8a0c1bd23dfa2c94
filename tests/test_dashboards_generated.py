"""dashboards/grafana is what fleet_devtools.dashboards generates, and every query parses as PromQL."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from fleet_devtools.dashboards import DASHBOARDS, build_all, queries

GRAFANA = Path(__file__).resolve().parents[1] / "dashboards" / "grafana"


def test_committed_dashboards_are_the_generated_ones() -> None:
    generated = build_all()
    committed = {path.name: path.read_text() for path in GRAFANA.glob("*.json")}
    rebuild = "run `fleet dashboards build` and commit dashboards/grafana"
    assert sorted(committed) == sorted(generated), rebuild
    stale = [name for name, text in generated.items() if committed[name] != text]
    assert not stale, f"stale: {stale}; {rebuild}"


def test_every_dashboard_has_numbered_panels_with_options_on_one_prometheus_datasource_variable() -> None:
    for spec in DASHBOARDS:
        model = json.loads((GRAFANA / f"{spec.uid}.json").read_text())
        assert model["uid"] == spec.uid
        assert [v["type"] for v in model["templating"]["list"]] == ["datasource"]
        assert [p["id"] for p in model["panels"]] == list(range(1, len(model["panels"]) + 1))
        panels = [p for p in model["panels"] if p["type"] != "row"]
        assert panels, spec.uid
        for panel in panels:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
            assert panel["options"], panel["title"]  # Grafana reads a null options badly


def test_every_panel_query_parses_as_promql(tmp_path: Path) -> None:
    """promtool has no expression checker, so the queries go through it as recording rules."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/bootstrap (Debian's prometheus package)"
    rules = [
        {"record": f"fleet:dashboard_query_{n}", "expr": expr.replace("$__rate_interval", "1m")}
        for n, (_, expr) in enumerate(
            q for path in sorted(GRAFANA.glob("*.json")) for q in queries(json.loads(path.read_text()))
        )
    ]
    assert len(rules) > 50
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
