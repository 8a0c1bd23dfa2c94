"""Tokens passed as ``?token=`` never reach the log."""

from __future__ import annotations

import logging

from fleet_serve.live import HideTokens


def test_tokens_in_websocket_urls_are_blanked_in_log_lines() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        "x",
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", "/v1/live?format=json&token=eyJh.eyJz.sig"),
        None,
    )
    assert HideTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "WebSocket /v1/live?format=json&token=…" [accepted]'
