"""``fleet geofences`` against the real database: the demo file, refusals that name the feature, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result

from fleet_cli.cli import main
from fleet_devtools.demo_feed import feed_dir
from fleet_store.geofences import ImportCounts, StoredFence
from fleet_store.settings import ServiceUrls
from fleet_testing.database import run_on
from fleet_testing.ingest import fleet_env

pytestmark = pytest.mark.stack

DEMO = feed_dir() / "geofences.geojson"


def _fleet(stack_urls: ServiceUrls, database_url: str, tmp_path: Path, *args: str) -> Result:
    env = fleet_env(stack_urls, database_url, tmp_path / "broker")
    return CliRunner(env=env).invoke(main, ["geofences", *args])


def _count(database_url: str) -> int:
    async def fetch(conn: Any) -> int:
        value: int = await conn.fetchval("SELECT count(*) FROM geofences")
        return value

    return run_on(database_url, fetch)


def test_the_demo_fences_import_for_the_demo_operator_and_list(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    features = len(json.loads(DEMO.read_text(encoding="utf-8"))["features"])
    result = _fleet(stack_urls, database_url, tmp_path, "import", str(DEMO), "--json")
    assert result.exit_code == 0, result.output
    counts = msgspec.json.decode(result.stdout, type=ImportCounts)
    assert (counts.operator, counts.added, counts.changed, counts.unchanged) == ("demo-dz", features, 0, 0)
    again = _fleet(stack_urls, database_url, tmp_path, "import", str(DEMO))
    assert again.exit_code == 0, again.output
    assert f"demo-dz: {features} fences imported (0 added, 0 changed, {features} unchanged" in again.stdout
    listed = _fleet(stack_urls, database_url, tmp_path, "list", "--operator", "demo-dz")
    assert listed.exit_code == 0, listed.output
    assert "speed-djelfa-n1" in listed.stdout
    assert "50 km/h" in listed.stdout
    as_json = _fleet(stack_urls, database_url, tmp_path, "list", "--json")
    rows = msgspec.json.decode(as_json.stdout, type=list[StoredFence])
    assert len(rows) == features
    assert {r.kind for r in rows} == {"station", "depot", "speed_zone", "restricted"}


def _write(tmp_path: Path, features: list[dict[str, Any]]) -> Path:
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


GOOD = {
    "type": "Feature",
    "properties": {"id": "good", "kind": "station", "radius_m": 100},
    "geometry": {"type": "Point", "coordinates": [3.0866, 36.7347]},
}
BOWTIE = {
    "type": "Feature",
    "properties": {"id": "bowtie", "kind": "restricted"},
    "geometry": {
        "type": "Polygon",
        "coordinates": [[[3, 36], [3.01, 36.01], [3.01, 36], [3, 36.01], [3, 36]]],
    },
}


def test_a_self_intersecting_polygon_refuses_the_whole_file_naming_the_feature(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, [GOOD, BOWTIE])
    result = _fleet(stack_urls, database_url, tmp_path, "import", str(path), "--operator", "op-a")
    assert result.exit_code == 1
    assert (
        "error [invalid_polygon]: feature 1 ('bowtie'): invalid polygon: Self-intersection" in result.stderr
    )
    assert _count(database_url) == 0


def test_an_unknown_kind_and_a_missing_operator_are_refused(
    stack_urls: ServiceUrls, database_url: str, tmp_path: Path
) -> None:
    airport = {**GOOD, "properties": {"id": "x", "kind": "airport", "radius_m": 100}}
    path = _write(tmp_path, [airport])
    unknown = _fleet(stack_urls, database_url, tmp_path, "import", str(path), "--operator", "op-a")
    assert unknown.exit_code == 1
    assert (
        "error [unknown_fence_kind]: feature 0 ('x'): kind 'airport' is not one of station," in unknown.stderr
    )
    nobody = _fleet(stack_urls, database_url, tmp_path, "import", str(_write(tmp_path, [GOOD])))
    assert nobody.exit_code == 1
    assert "--operator" in nobody.stderr
    not_json = tmp_path / "broken.geojson"
    not_json.write_text("{", encoding="utf-8")
    broken = _fleet(stack_urls, database_url, tmp_path, "import", str(not_json), "--operator", "op-a")
    assert broken.exit_code == 1
    assert "error [bad_geojson]: not JSON" in broken.stderr
    assert _count(database_url) == 0


def test_replace_and_delete(stack_urls: ServiceUrls, database_url: str, tmp_path: Path) -> None:
    assert _fleet(stack_urls, database_url, tmp_path, "import", str(DEMO)).exit_code == 0
    path = _write(tmp_path, [GOOD])
    replaced = _fleet(
        stack_urls,
        database_url,
        tmp_path,
        "import",
        str(path),
        "--operator",
        "demo-dz",
        "--replace",
        "--json",
    )
    assert replaced.exit_code == 0, replaced.output
    counts = msgspec.json.decode(replaced.stdout, type=ImportCounts)
    assert (counts.added, counts.removed) == (
        1,
        len(json.loads(DEMO.read_text(encoding="utf-8"))["features"]),
    )
    assert _count(database_url) == 1
    missing = _fleet(stack_urls, database_url, tmp_path, "delete", "--operator", "demo-dz", "good", "nope")
    assert missing.exit_code == 1
    assert "error [fence_not_found]" in missing.stderr
    assert _count(database_url) == 1
    usage = _fleet(stack_urls, database_url, tmp_path, "delete", "--operator", "demo-dz")
    assert usage.exit_code == 2
    gone = _fleet(stack_urls, database_url, tmp_path, "delete", "--operator", "demo-dz", "good")
    assert gone.exit_code == 0
    assert "demo-dz: 1 fences deleted" in gone.stdout
    assert _count(database_url) == 0
