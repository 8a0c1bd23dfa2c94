"""The demo's one-line live status, read from the running services the way an operator would read them.

Frames per second and events per minute are rates of ingest's Prometheus
counters (``/metrics``), websocket clients is serve's gauge, and buses live is
how many of the operator's buses Redis saw updated within ``LIVE_S`` (the
``seen`` sorted set ingest keeps, scored by server time). Counters are parsed
with prometheus_client's own text parser.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import deque

import msgspec
import redis
from prometheus_client.parser import text_string_to_metric_families

from fleet_store.live import seen_key

LIVE_S = 60.0
"""A bus counts as live when its position was updated this recently (a parked bus reports every 30 s)."""
FRAMES_WINDOW_S = 10.0
EVENTS_WINDOW_S = 60.0
SCRAPE_TIMEOUT_S = 2.0


class Status(msgspec.Struct, frozen=True, kw_only=True):
    """One reading of the demo."""

    elapsed_s: float
    frames_per_s: float
    frames_total: int
    buses_live: int
    buses: int
    events_per_min: float
    events_total: int
    ws_clients: int

    def line(self) -> str:
        return (
            f"demo {self.elapsed_s:5.0f} s | {self.frames_per_s:6.1f} frames/s | "
            f"buses live {self.buses_live}/{self.buses} | events {self.events_total} "
            f"({self.events_per_min:.0f}/min) | websocket clients {self.ws_clients}"
        )


def scrape(url: str) -> dict[str, float]:
    """Every sample of a Prometheus text endpoint by name (labels summed); empty if it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:  # noqa: S310 - our own URL
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


class StatusReader:
    """Reads the services every call and keeps the counters' recent history for the rates."""

    def __init__(
        self, *, ingest_metrics: str, serve_metrics: str, redis_url: str, operator: str, buses: int
    ) -> None:
        self._ingest, self._serve, self._operator, self._buses = (
            ingest_metrics,
            serve_metrics,
            operator,
            buses,
        )
        self._redis = redis.Redis.from_url(redis_url)
        self._started = time.monotonic()
        self._history: deque[tuple[float, float, float]] = deque()
        """(monotonic time, frames accepted, events stored), oldest first"""

    def close(self) -> None:
        self._redis.close()

    def read(self) -> Status:
        now = time.monotonic()
        ingest, serve = scrape(self._ingest), scrape(self._serve)
        frames = ingest.get("fleet_ingest_frames_accepted_total", 0.0)
        events = ingest.get("fleet_ingest_events_stored_total", 0.0)
        self._history.append((now, frames, events))
        while now - self._history[0][0] > EVENTS_WINDOW_S:
            self._history.popleft()
        try:
            since_ms = int((time.time() - LIVE_S) * 1000)
            live = int(self._redis.zcount(seen_key(self._operator), since_ms, "+inf"))
        except redis.RedisError:
            live = 0
        return Status(
            elapsed_s=now - self._started,
            frames_per_s=self._rate(now, FRAMES_WINDOW_S, 1),
            frames_total=int(frames),
            buses_live=live,
            buses=self._buses,
            events_per_min=self._rate(now, EVENTS_WINDOW_S, 2) * 60,
            events_total=int(events),
            ws_clients=int(serve.get("fleet_ws_clients", 0.0)),
        )

    def _rate(self, now: float, window_s: float, column: int) -> float:
        """Per second over the readings of the last ``window_s`` (0 until there are two)."""
        recent = [entry for entry in self._history if now - entry[0] <= window_s]
        if len(recent) < 2 or recent[-1][0] <= recent[0][0]:
            return 0.0
        return (recent[-1][column] - recent[0][column]) / (recent[-1][0] - recent[0][0])
