"""Structured logs: one JSON object per line, with the logger, level, message and any ids passed in ``extra``.

Shared by the agent and the server processes. Never pass keys, tokens or
payload bytes in ``extra``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_ENCODER = msgspec.json.Encoder()


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON line; extra fields are kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return _ENCODER.encode(line).decode()


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for every logger; the MQTT client library only from ERROR up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("mqtt").setLevel(logging.ERROR)
