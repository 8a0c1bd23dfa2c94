"""The paced HTTP load of ``fleet bench api``, against a real HTTP server in a thread (the stdlib's)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import uvloop

from fleet_devtools.paced_http import PacedResult, paced_load


@contextmanager
def _server(status: int = 200, delay_s: float = 0.0) -> Iterator[str]:
    """A keep-alive HTTP/1.1 server answering every GET with ``status`` after ``delay_s``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 1 << 16  # head and body in one write: two would meet Nagle and delayed ACKs (40 ms)

        def do_GET(self) -> None:
            time.sleep(delay_s)
            body = b'{"status":"ok"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ping"
    finally:
        server.shutdown()
        server.server_close()


def _load(url: str, *, rate: float, duration_s: float, connections: int) -> PacedResult:
    async def run() -> PacedResult:
        return await paced_load(url, rate=rate, duration_s=duration_s, connections=connections)

    return uvloop.run(run())


def test_a_server_keeping_up_answers_every_due_request_and_each_is_timed() -> None:
    with _server() as url:
        result = _load(url, rate=200, duration_s=1.0, connections=4)
    assert (result.due, result.answered, result.errors) == (200, 200, 0)
    assert result.sustained
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms


def test_a_server_behind_the_rate_shows_in_latency_counted_from_when_requests_fell_due() -> None:
    # one connection, 20 ms an answer: 50 answers/s against 200 offered, so the queue grows;
    # the last request falls due at 0.5 s and cannot be answered before 100 x 20 ms = 2 s
    with _server(delay_s=0.02) as url:
        result = _load(url, rate=200, duration_s=0.5, connections=1)
    assert (result.due, result.answered, result.errors) == (100, 100, 0)
    assert result.answered_per_s <= 50
    assert result.max_ms >= 1_500
    assert result.p99_ms >= 1_000, "a closed loop would have timed each answer from its send: about 20 ms"


def test_error_answers_are_counted_and_not_timed() -> None:
    with _server(status=503) as url:
        result = _load(url, rate=100, duration_s=0.5, connections=2)
    assert (result.due, result.answered, result.errors) == (50, 0, 50)
    assert not result.sustained


def test_only_an_http_url_with_a_host_is_loaded() -> None:
    with pytest.raises(ValueError, match="http:// URL"):
        _load("https://example.org/", rate=10, duration_s=1, connections=1)
