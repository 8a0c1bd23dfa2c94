"""What a test makes on a broker and must not leave there: persistent sessions and retained messages.

A session left on the shared broker queues every later matching message for
a consumer that never returns (after ``make demo`` then ``make test`` the
broker's persistence was 740 MB), and a retained message left there is sent
to every later subscriber. So a test takes its persistent client ids and
names its retained topics through :class:`BrokerCleanup`, which the
``broker_cleanup`` fixture empties when the test ends, failed or not.
:func:`look` and :func:`left_behind` then check, once per run, that nothing
escaped it.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable

import msgspec

from fleet_store import sessions
from fleet_store.mqtt import connect_client
from fleet_testing.mqtt import publish_all

CONNECT_TIMEOUT_S = 30.0


class BrokerGone(Exception):
    """No broker answers at the URL: one the test stopped for good, which keeps nothing for others."""


def delete_session(url: str, client_id: str) -> None:
    """Connect as ``client_id`` with a clean start and no session expiry: the broker drops its session."""
    try:
        client = connect_client(url, client_id)  # MQTT 5, clean start, no Session Expiry Interval
    except OSError as exc:
        raise BrokerGone(f"{url}: {exc}") from exc
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise AssertionError(f"could not delete the session of {client_id}: no CONNACK from {url}")
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()


def clear_retained(url: str, topic_filter: str) -> list[str]:
    """Delete every retained message under ``topic_filter`` (an empty retained publish each); their topics."""
    try:
        topics = sessions.retained_topics(url, topic_filter)
    except OSError as exc:
        raise BrokerGone(f"{url}: {exc}") from exc
    if topics is None:
        raise AssertionError(f"the broker at {url} did not list the retained messages under {topic_filter}")
    publish_all(url, [(topic, b"") for topic in topics], retain=True)
    return topics


class BrokerCleanup:
    """The sessions and retained topics one test makes, removed by :meth:`close` from each broker."""

    def __init__(self) -> None:
        self._removals: list[tuple[str, Callable[[], object]]] = []

    def client_id(self, url: str, prefix: str = "test") -> str:
        """A client id of the test's own whose session on ``url`` is deleted when the test ends."""
        client_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.session(url, client_id)
        return client_id

    def session(self, url: str, client_id: str) -> None:
        """Delete the session of ``client_id`` on ``url`` when the test ends."""
        self._removals.append((url, functools.partial(delete_session, url, client_id)))

    def retained(self, url: str, topic_filter: str) -> None:
        """Delete every retained message under ``topic_filter`` on ``url`` when the test ends."""
        self._removals.append((url, functools.partial(clear_retained, url, topic_filter)))

    def close(self) -> None:
        """Remove everything named, from brokers that still answer; raise if any of it stays."""
        removals, self._removals = self._removals, []
        gone: set[str] = set()
        for url, remove in removals:
            if url not in gone:
                try:
                    remove()
                except BrokerGone:
                    gone.add(url)


class BrokerLook(msgspec.Struct, frozen=True):
    """What a broker holds that outlives its clients."""

    retained: frozenset[str]
    sessions: int | None
    """disconnected clients whose session the broker keeps (None: $SYS did not say)"""


def look(url: str, *, fresh: bool) -> BrokerLook:
    """The retained topics (``$SYS`` aside) and the sessions kept; ``fresh`` waits for a new ``$SYS`` pass."""
    retained = sessions.retained_topics(url, "#")
    if retained is None:
        raise AssertionError(f"the broker at {url} did not list its retained messages")
    store = sessions.broker_store(url, wait_s=15.0 if fresh else 3.0, fresh=fresh)
    return BrokerLook(frozenset(retained), store.disconnected_clients)


def left_behind(before: BrokerLook, after: BrokerLook) -> list[str]:
    """One line per kind of thing the run left on the broker; empty when it left it as it found it."""
    lines = []
    added = sorted(after.retained - before.retained)
    if added:
        shown = ", ".join(added[:10]) + (f" and {len(added) - 10} more" if len(added) > 10 else "")
        lines.append(f"{len(added)} retained messages: {shown}")
    kept_before = before.sessions or 0  # a broker just started may not have published the count yet
    if after.sessions is None:
        lines.append("the broker did not say how many sessions it keeps ($SYS/broker/clients/disconnected)")
    elif after.sessions > kept_before:
        lines.append(
            f"{after.sessions - kept_before} persistent sessions"
            f" ({kept_before} disconnected clients with a session before the run, {after.sessions} after)"
        )
    return lines
