"""``/metrics``: requests counted by route template and status, with latency, beside the fan-out's own."""

from __future__ import annotations

from litestar.testing import TestClient
from prometheus_client import REGISTRY

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


def test_each_request_counts_once_with_its_status_and_a_5xx_counts_as_an_error() -> None:
    app = create_app(ServeSettings(), "redis://127.0.0.1:9", "postgresql://fleet@127.0.0.1:9/fleet")
    ready = {"method": "GET", "path": "/readyz", "status_code": "503", "app_name": "fleet_serve"}
    alive = {**ready, "path": "/healthz", "status_code": "200"}

    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "ready": sample("fleet_serve_requests_total", ready),
        "errors": sample("fleet_serve_requests_error_total", ready),
        "alive": sample("fleet_serve_requests_total", alive),
        "timed": sample("fleet_serve_request_duration_seconds_count", alive),
        "alive errors": sample("fleet_serve_requests_error_total", alive),
    }
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503  # nothing listens on port 9
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
    assert sample("fleet_serve_requests_total", ready) == before["ready"] + 1
    assert sample("fleet_serve_requests_error_total", ready) == before["errors"] + 1
    assert sample("fleet_serve_requests_total", alive) == before["alive"] + 3
    assert sample("fleet_serve_request_duration_seconds_count", alive) == before["timed"] + 3
    assert sample("fleet_serve_requests_error_total", alive) == before["alive errors"]
    running = {**alive, "status_code": "200"}
    assert sample("fleet_serve_requests_in_progress", running) == 0
