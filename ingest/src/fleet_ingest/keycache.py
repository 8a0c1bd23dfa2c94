"""Usable signing keys and registered devices, in memory, fresh within seconds.

Ingest verifies hundreds of thousands of frames a second, so a key lookup
must not touch the database: :class:`KeyCache` answers from memory, as
fleet_schemas' synchronous ``KeyLookup`` (``cache.key`` or the cache itself).
It loads every usable key (active, or retired within its grace period) and
every device (with an OwnTracks app's login and payload secret) when it
opens, then stays fresh two ways:

* at once: PostgreSQL announces every key and device change at commit
  (``NOTIFY fleet_keys`` / ``fleet_devices``, see sql/002), and the cache
  reads those rows again;
* every ``poll_s`` (2 s): it reads the rows changed since its last look (with
  a minute of overlap for transactions that committed late), in case a
  notification was missed.

A revoked key disappears at the next read; a retired key stops verifying at
the instant its grace ends, whatever the refresh timing. If the database is
unreachable the cache keeps answering from what it has, logs it, reconnects
with backoff and then reloads everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from fleet_ingest.assess import DeviceInfo
from fleet_ingest.owntracks import Tracker
from fleet_ingest.refresher import keep_fresh
from fleet_processing.owntracks import secretbox_key
from fleet_schemas import DeviceKey
from fleet_store.errors import KeyEncryptionError
from fleet_store.outages import POSTGRES_UNAVAILABLE
from fleet_store.owntracks import open_encryption_key
from fleet_store.secretbox import KeyEncryptionKey, Sealed

log = logging.getLogger("fleet_ingest.keycache")

POLL_S = 2.0
OVERLAP = timedelta(minutes=1)
KEYS_CHANNEL = "fleet_keys"
DEVICES_CHANNEL = "fleet_devices"

_USABLE = "(status = 'active' OR (status = 'retired' AND grace_until > now()))"
_KEYS = "SELECT key_id, device, status, grace_until, sealed_secret, kek_id FROM device_keys"
_DEVICES = (
    "SELECT device, operator, bus, status, kind, COALESCE(owntracks_user, device) AS owntracks_user,"
    " owntracks_sealed_key, owntracks_kek_id FROM devices"
)


class _Usable(msgspec.Struct, frozen=True):
    key: DeviceKey
    until: float | None
    """end of the grace period (epoch seconds) for a retired key; None for the active key"""


class KeyCache:
    """Keys and devices from the registry, for ingest's checks; open it with ``async with``."""

    def __init__(self, database_url: str, kek: KeyEncryptionKey, poll_s: float = POLL_S) -> None:
        self._url = database_url
        self._kek = kek
        self._poll_s = poll_s
        self._keys: dict[str, _Usable] = {}
        self._devices: dict[str, DeviceInfo] = {}
        self._trackers: dict[str, Tracker] = {}
        self._conn: asyncpg.Connection | None = None
        self._seen_at = datetime.fromtimestamp(0, UTC)
        self._changed_keys: set[str] = set()
        self._changed_devices: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KeyCache:
        """Load everything; fails (rather than verify nothing) if the database or the KEK is wrong."""
        checking = await asyncpg.connect(self._url)
        try:
            await self._check_kek(checking)
        finally:
            await checking.close()
        await self._connect()
        self._task = asyncio.create_task(keep_fresh("key cache", self._follow, log, self._disconnect))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    def key(self, key_id: str) -> DeviceKey | None:
        """The key if it verifies now: active, or retired and still within its grace period."""
        entry = self._keys.get(key_id)
        if entry is None or (entry.until is not None and time.time() >= entry.until):
            return None
        return entry.key

    __call__ = key

    def device(self, device: str) -> DeviceInfo | None:
        """A registered device's operator and bus, and whether it is active (not revoked)."""
        return self._devices.get(device)

    def tracker(self, device: str) -> Tracker | None:
        """An OwnTracks app's login and payload key; None for other devices."""
        return self._trackers.get(device)

    # ------------------------------------------------------------ reading

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self._url)
        try:
            # Listen before loading: a change committed during the load is announced and read again.
            await conn.add_listener(KEYS_CHANNEL, self._notified)
            await conn.add_listener(DEVICES_CHANNEL, self._notified)
            await self._load_all(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*POSTGRES_UNAVAILABLE):
                await conn.close(timeout=5)

    async def _check_kek(self, conn: asyncpg.Connection) -> None:
        others = await conn.fetch(
            f"SELECT kek_id FROM device_keys WHERE {_USABLE} AND kek_id <> $1"  # noqa: S608 - constant SQL
            " UNION SELECT owntracks_kek_id FROM devices WHERE status = 'active' AND owntracks_kek_id <> $1",
            self._kek.kek_id,
        )
        if others:
            raise KeyEncryptionError(
                f"usable keys are sealed under key-encryption key {', '.join(r['kek_id'] for r in others)},"
                f" but FLEET_KEY_ENCRYPTION_KEY is {self._kek.kek_id}: set the key the registry uses"
            )

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        changed = self._changed_keys if channel == KEYS_CHANNEL else self._changed_devices
        changed.add(str(payload))
        self._wake.set()

    async def _load_all(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            seen_at: datetime = await conn.fetchval("SELECT now()")
            keys = await conn.fetch(f"{_KEYS} WHERE {_USABLE}")
            devices = await conn.fetch(_DEVICES)
        self._keys = dict(self._usable(keys))
        self._devices = {row["device"]: _device_info(row) for row in devices}
        self._trackers = dict(self._tracker_entries(devices))
        self._seen_at = seen_at

    async def _read_notified(self, conn: asyncpg.Connection) -> None:
        """Read again exactly the rows announced; a row that is gone is dropped."""
        key_ids, self._changed_keys = self._changed_keys, set()
        device_ids, self._changed_devices = self._changed_devices, set()
        keys = await conn.fetch(f"{_KEYS} WHERE key_id = ANY($1::text[])", list(key_ids))
        devices = await conn.fetch(f"{_DEVICES} WHERE device = ANY($1::text[])", list(device_ids))
        for key_id in key_ids - {row["key_id"] for row in keys}:
            self._keys.pop(key_id, None)
        for device in device_ids - {row["device"] for row in devices}:
            self._devices.pop(device, None)
            self._trackers.pop(device, None)
        self._merge(keys, devices)

    async def _poll(self, conn: asyncpg.Connection) -> None:
        """Read the rows changed since the last look, and forget keys whose grace is over."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            seen_at: datetime = await conn.fetchval("SELECT now()")
            since = self._seen_at - OVERLAP
            keys = await conn.fetch(f"{_KEYS} WHERE updated_at > $1", since)
            devices = await conn.fetch(f"{_DEVICES} WHERE updated_at > $1", since)
        now = time.time()
        self._keys = {k: v for k, v in self._keys.items() if v.until is None or v.until > now}
        self._merge(keys, devices)
        self._seen_at = seen_at

    def _merge(self, keys: list[asyncpg.Record], devices: list[asyncpg.Record]) -> None:
        usable = dict(self._usable(keys))
        for row in keys:
            key_id = row["key_id"]
            if key_id in usable:
                self._keys[key_id] = usable[key_id]
            elif self._keys.pop(key_id, None) is not None:
                log.info("key no longer usable", extra={"key_id": key_id, "status": row["status"]})
        for row in devices:
            self._devices[row["device"]] = _device_info(row)
        self._trackers.update(self._tracker_entries(devices))

    def _tracker_entries(self, rows: Iterable[asyncpg.Record]) -> Iterable[tuple[str, Tracker]]:
        """(device, tracker) for each OwnTracks app whose secret, if it has one, opens."""
        for row in rows:
            if row["kind"] != "owntracks":
                continue
            device, key = row["device"], None
            if row["owntracks_sealed_key"] is not None:
                sealed = Sealed(row["owntracks_kek_id"], row["owntracks_sealed_key"])
                try:
                    key = secretbox_key(open_encryption_key(self._kek, device, sealed))
                except KeyEncryptionError as exc:
                    log.error(
                        "OwnTracks secret cannot be used", extra={"device": device, "error": exc.message}
                    )
                    self._trackers.pop(device, None)
                    continue
            yield device, Tracker(row["owntracks_user"], key)

    def _usable(self, rows: Iterable[asyncpg.Record]) -> Iterable[tuple[str, _Usable]]:
        """(key id, entry) for each row that verifies now and whose secret opens."""
        now = time.time()
        for row in rows:
            if row["status"] == "revoked":
                continue
            until: float | None = None if row["status"] == "active" else row["grace_until"].timestamp()
            if until is not None and until <= now:
                continue
            key_id = row["key_id"]
            try:
                secret = self._kek.open(Sealed(row["kek_id"], row["sealed_secret"]), key_id)
            except KeyEncryptionError as exc:
                log.error("key cannot be used", extra={"key_id": key_id, "error": exc.message})
                continue
            yield key_id, _Usable(DeviceKey(key_id=key_id, device=row["device"], secret=secret), until)

    # ------------------------------------------------------------ staying fresh

    async def _follow(self, healthy: Callable[[], None]) -> None:
        next_poll = time.monotonic() + self._poll_s
        while True:
            next_poll = await self._refresh(next_poll)
            healthy()

    async def _refresh(self, next_poll: float) -> float:
        """Wait for a notification or the poll time, read what changed; return the next poll time."""
        conn = self._conn
        if conn is None:
            conn = await self._connect()
            log.info("key cache reconnected and reloaded", extra={"keys": len(self._keys)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, next_poll - time.monotonic()))
        self._wake.clear()
        if self._changed_keys or self._changed_devices:
            await self._read_notified(conn)
        if time.monotonic() < next_poll:
            return next_poll
        await self._poll(conn)
        return time.monotonic() + self._poll_s


def _device_info(row: asyncpg.Record) -> DeviceInfo:
    return DeviceInfo(operator=row["operator"], bus=row["bus"], active=row["status"] == "active")
