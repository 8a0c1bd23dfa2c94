"""``/metrics``: requests counted by route template and status, with latency, beside the fan-out's own."""

from __future__ import annotations

from litestar.testing import TestClient

from fleet_serve.app import create_app
from fleet_serve.settings import ServeSettings


def test_requests_are_counted_by_route_template_not_by_raw_path() -> None:
    app = create_app(ServeSettings(), "redis://127.0.0.1:9", "postgresql://fleet@127.0.0.1:9/fleet")
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        client.get("/gtfs-rt/op-metrics-1/vehicle-positions")  # refused without a token: still counted
        scraped = client.get("/metrics")
    assert scraped.status_code == 200
    text = scraped.text
    assert "fleet_serve_requests_total{" in text
    assert 'path="/healthz"' in text
    assert 'path="/gtfs-rt/{operator}/vehicle-positions"' in text
    assert "op-metrics-1" not in text  # the raw path, with its id, is never a label
    assert "fleet_serve_request_duration_seconds_bucket{" in text
    assert "fleet_ws_clients" in text
    assert 'path="/metrics"' not in text
