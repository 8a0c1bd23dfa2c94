"""An open-loop HTTP load at a fixed rate, each request's latency counted from when it was due.

``wrk`` keeps every connection busy: it measures how fast a server answers
when it is never idle, and at that saturation its percentiles are the
queue of its own connections (64 requests waiting on one event loop are
12 ms at 5,000 requests/s before any work). A latency target at a rate
("5,000 requests/s with p99 under 20 ms") is the other measurement: offer
that rate whatever the server does and time each request from the moment
it was due, so a stall counts against every request it delays (what Gil
Tene calls coordinated omission, and what wrk2 and vegeta correct). Neither
of those is packaged for Debian or PyPI (wrk2 is not in Debian 12, vegeta
is a Go program), hence this module: keep-alive connections on uvloop,
answers parsed by httptools (the parser uvicorn serves with), requests due
at fixed intervals and taken in order by the first idle connection. A
request that no connection could take yet waits in the queue, and that
wait is part of its latency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import cast

import httptools
import numpy as np

TICK_S = 0.001
"""how often due requests are handed out (libuv's timers count milliseconds)"""
DRAIN_S = 10.0
"""how long answers are awaited after the last request fell due; those still missing are counted"""


@dataclass(frozen=True, slots=True)
class PacedResult:
    """What a paced load measured: answers by kind and their latency from when each was due."""

    offered_per_s: float
    duration_s: float
    due: int
    answered: int
    errors: int
    """answers outside 2xx/3xx, connections lost, requests unanswered at the end"""
    answered_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def sustained(self) -> bool:
        """Every request due was answered well (a server behind the rate shows in the latency too)."""
        return self.errors == 0 and self.answered == self.due


@dataclass(slots=True)
class _Load:
    request: bytes
    pending: collections.deque[float] = field(default_factory=collections.deque)
    idle: list[_Connection] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    live: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = -1

    def hand_out(self) -> None:
        while self.pending and self.idle:
            self.idle.pop().send(self.pending.popleft())

    def settle(self) -> None:
        if self.expected >= 0 and len(self.latencies_s) + self.errors >= self.expected:
            self.finished.set()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, timed from when it fell due."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.due_at: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is not a subclass
        self.load.live += 1
        self.load.idle.append(self)

    def send(self, due_at: float) -> None:
        assert self.transport is not None
        self.due_at = due_at
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:
        load, due_at = self.load, self.due_at
        if due_at is None:
            return
        self.due_at = None
        if 200 <= self.parser.get_status_code() < 400:
            load.latencies_s.append(time.perf_counter() - due_at)
        else:
            load.errors += 1
        load.idle.append(self)
        load.hand_out()
        load.settle()

    def connection_lost(self, exc: Exception | None) -> None:
        load = self.load
        load.live -= 1
        if self in load.idle:
            load.idle.remove(self)
        if self.due_at is not None:
            load.errors += 1
            load.settle()
        if load.live == 0:
            load.finished.set()


def _request(url: str, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"a paced load needs an http:// URL with a host, not {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return parts.hostname, parts.port or 80, ("\r\n".join(lines) + "\r\n\r\n").encode()


async def paced_load(
    url: str, *, rate: float, duration_s: float, connections: int, headers: dict[str, str] | None = None
) -> PacedResult:
    """Offer ``rate`` GET requests a second to ``url`` for ``duration_s`` over ``connections`` connections.

    Example: ``uvloop.run(paced_load("http://127.0.0.1:8000/healthz", rate=1000, duration_s=5,
    connections=16))``.
    """
    if rate <= 0 or duration_s <= 0 or connections < 1:
        raise ValueError("a paced load needs a positive rate and duration and at least one connection")
    host, port, request = _request(url, headers or {})
    load = _Load(request)
    loop = asyncio.get_running_loop()
    opened = await asyncio.gather(
        *(loop.create_connection(lambda: _Connection(load), host, port) for _ in range(connections))
    )
    due = round(rate * duration_s)
    try:
        start = time.perf_counter()
        queued = 0
        while queued < due and load.live:
            now = time.perf_counter()
            while queued < due and start + queued / rate <= now:
                load.pending.append(start + queued / rate)
                queued += 1
            load.hand_out()
            await asyncio.sleep(TICK_S)
        load.expected = due
        load.errors += due - queued  # never sent: every connection was lost
        load.settle()
        with contextlib.suppress(TimeoutError):  # what is still missing is counted below
            await asyncio.wait_for(load.finished.wait(), DRAIN_S)
        ended = time.perf_counter()
    finally:
        for transport, _ in opened:
            transport.close()
    missing = due - len(load.latencies_s) - load.errors
    latencies_ms = np.array(load.latencies_s) * 1000
    p50, p99, top = (
        (*(float(p) for p in np.percentile(latencies_ms, [50, 99])), float(latencies_ms.max()))
        if load.latencies_s
        else (math.inf, math.inf, math.inf)
    )
    return PacedResult(
        offered_per_s=rate,
        duration_s=duration_s,
        due=due,
        answered=len(load.latencies_s),
        errors=load.errors + missing,
        answered_per_s=len(load.latencies_s) / (ended - start),
        p50_ms=p50,
        p99_ms=p99,
        max_ms=top,
    )
