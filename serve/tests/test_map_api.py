"""What the live map reads from ``fleet serve``: its layers as GeoJSON, its page and assets, its basemap.

The layers come from the demo feed and geofences imported with the ``fleet``
commands into the test PostgreSQL; the byte ranges of a local PMTiles archive
are checked against Python's own slicing of the file (hypothesis).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from fleet_cli.cli import main
from fleet_devtools.demo_feed import feed_dir
from fleet_serve.app import create_app
from fleet_serve.map.page import MAX_RANGE_BYTES, byte_range
from fleet_serve.settings import MAP_PMTILES_PATH, ServeSettings, load_serve_settings, parse_map_tiles
from fleet_store.errors import ConfigError

Client = TestClient[Litestar]


def _manager(client: Client, operator: str, token_for: Callable[..., str]) -> None:
    client.headers["Authorization"] = "Bearer " + token_for("manager", operator)


@pytest.mark.stack
def test_the_layers_are_the_feeds_routes_and_stops_and_the_buffered_geofences(
    client: Client, feed_operator: str, database_url: str, token_for: Callable[..., str]
) -> None:
    imported = CliRunner().invoke(
        main,
        ["geofences", "import", str(feed_dir() / "geofences.geojson"), "--operator", feed_operator],
        env={"FLEET_DATABASE_URL": database_url},
    )
    assert imported.exit_code == 0, imported.output
    _manager(client, feed_operator, token_for)

    routes = client.get(f"/v1/operators/{feed_operator}/map/routes").json()
    assert routes["type"] == "FeatureCollection"
    by_route = {f["properties"]["route_id"]: f for f in routes["features"]}
    assert "ALG-ORN" in by_route
    alg_orn = by_route["ALG-ORN"]
    assert alg_orn["geometry"]["type"] == "LineString"
    assert "ALG-ORN-out-0600" in {t for f in routes["features"] for t in f["properties"]["trip_ids"]}
    assert alg_orn["properties"]["color"].startswith("#")

    stops = client.get(f"/v1/operators/{feed_operator}/map/stops").json()
    names = {f["properties"]["stop_id"]: f["properties"]["name"] for f in stops["features"]}
    assert names["ALG-CAR"] == "Alger, gare routière du Caroubier"

    fences = client.get(f"/v1/operators/{feed_operator}/map/geofences").json()
    by_id = {f["properties"]["fence_id"]: f for f in fences["features"]}
    station = by_id["station-alg-car"]  # drawn as a Point with radius_m 250: buffered to a polygon
    assert station["properties"]["kind"] == "station"
    assert station["geometry"]["type"] == "Polygon"
    assert len(station["geometry"]["coordinates"][0]) > 16
    assert by_id["depot-alger-est"]["properties"]["speed_limit_mps"] == pytest.approx(20 / 3.6)


@pytest.mark.stack
@pytest.mark.parametrize("layer", ["routes", "stops", "geofences"])
def test_the_layers_are_for_managers_of_the_operator(
    client: Client, feed_operator: str, token_for: Callable[..., str], layer: str
) -> None:
    client.headers["Authorization"] = "Bearer " + token_for("booking", feed_operator)
    refused = client.get(f"/v1/operators/{feed_operator}/map/{layer}")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "wrong_role"
    _manager(client, "another-operator", token_for)
    other = client.get(f"/v1/operators/{feed_operator}/map/{layer}")
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "other_operator"


@pytest.mark.stack
def test_the_page_is_revalidated_and_its_hashed_assets_are_cached_for_good(
    client: Client, map_bundle: Path
) -> None:
    page = client.get("/map")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = next(p.name for p in map_bundle.glob("main-*.js"))
    assert f"/map/static/{script}" in page.text
    asset = client.get(f"/map/static/{script}")
    assert asset.status_code == 200
    assert asset.headers["content-type"].startswith("text/javascript")
    assert "immutable" in asset.headers["cache-control"]
    config = client.get("/map/config.json").json()
    assert config == {"tiles": {"kind": "none", "url": None, "attribution": None}}


@pytest.mark.stack
def test_a_local_pmtiles_archive_is_served_in_byte_ranges(
    tmp_path: Path, redis_url: str, database_url: str, serve_settings: ServeSettings
) -> None:
    archive = tmp_path / "basemap.pmtiles"
    data = os.urandom(100_000)
    archive.write_bytes(data)
    settings = ServeSettings(
        token_keys=serve_settings.token_keys,
        issuer=serve_settings.issuer,
        map_tiles=parse_map_tiles(str(archive)),
    )
    with TestClient(create_app(settings, redis_url, database_url)) as client:
        assert client.get("/map/config.json").json()["tiles"] == {
            "kind": "pmtiles",
            "url": MAP_PMTILES_PATH,
            "attribution": None,
        }
        part = client.get(MAP_PMTILES_PATH, headers={"Range": "bytes=0-126"})
        assert part.status_code == 206
        assert part.content == data[:127]
        assert part.headers["content-range"] == f"bytes 0-126/{len(data)}"
        tail = client.get(MAP_PMTILES_PATH, headers={"Range": "bytes=-10"})
        assert (tail.status_code, tail.content) == (206, data[-10:])
        outside = client.get(MAP_PMTILES_PATH, headers={"Range": f"bytes={len(data)}-"})
        assert outside.status_code == 416
        assert outside.headers["content-range"] == f"bytes */{len(data)}"
        whole = client.get(MAP_PMTILES_PATH)
        assert (whole.status_code, whole.content) == (200, data)
        assert whole.headers["accept-ranges"] == "bytes"


@pytest.mark.stack
def test_without_a_local_archive_the_tiles_path_is_not_found(client: Client) -> None:
    missing = client.get(MAP_PMTILES_PATH, headers={"Range": "bytes=0-10"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "tiles_not_found"


@given(
    size=st.integers(0, 5_000),
    first=st.none() | st.integers(0, 6_000),
    last=st.none() | st.integers(0, 6_000),
)
def test_a_byte_range_is_the_slice_python_takes(size: int, first: int | None, last: int | None) -> None:
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    span = byte_range(header, size)
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    if first is None and last is None:
        assert span is None
        return
    if first is None:
        expected = data[-last:] if last else b""
    else:
        expected = data[first : None if last is None else last + 1]
    if span is None:
        assert expected == b"" or len(expected) > MAX_RANGE_BYTES
    else:
        start, end = span
        assert data[start : end + 1] == expected


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=a-b", "bytes=9-3", ""])
def test_a_range_it_does_not_answer_is_refused(header: str) -> None:
    assert byte_range(header, 1_000) is None


def test_map_tiles_says_which_basemap(tmp_path: Path) -> None:
    archive = tmp_path / "dz.pmtiles"
    archive.write_bytes(b"PMTiles")
    assert parse_map_tiles("").kind == "none"
    assert parse_map_tiles("https://tiles.example/{z}/{x}/{y}.png").kind == "template"
    assert parse_map_tiles("https://tiles.example/style.json").kind == "style"
    assert parse_map_tiles("https://tiles.example/dz.pmtiles").url == "https://tiles.example/dz.pmtiles"
    local = load_serve_settings({"FLEET_MAP_TILES": str(archive)}).map_tiles
    assert (local.kind, local.url, local.file) == ("pmtiles", MAP_PMTILES_PATH, str(archive))


@pytest.mark.parametrize("raw", ["/nowhere/basemap.pmtiles", "tiles/{z}/{x}/{y}.png", "ftp://x/style.json"])
def test_a_basemap_it_cannot_use_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError, match="FLEET_MAP_TILES"):
        parse_map_tiles(raw)
