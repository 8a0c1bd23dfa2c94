"""The fuzz corpus: the campaign's interesting inputs, replayed through the real broker into a real ingest.

A corpus is a folder of ``NNN.bin`` messages and ``index.json`` naming, for
each, its topic and the outcome the pipeline gave it: one word per message
rejected whole (its reason) or per frame (``stored``, ``duplicate`` or the
frame's reason). :func:`replay` registers the fuzz identities (their secrets
are published: see :mod:`fleet_devtools.fuzz_payloads`) in a clean database,
publishes every message in order, runs ``fleet ingest --burst`` until the
stream is drained, and reads each message's outcome back from PostgreSQL.

Fix times are frozen in signed bytes, so ingest's ``too_old`` horizon is
widened by the corpus's age on replay; entries whose outcome would still
drift with the date (a frame near the horizon, or ahead of the writing day
but before 2090) are never written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import asyncpg
import msgspec

from fleet_devtools.bench_ingest import LoadPublisher
from fleet_devtools.fuzz_payloads import Identity, identities
from fleet_ingest.runner import forget_session, open_session
from fleet_ingest.storage import RAW_KEPT_BYTES
from fleet_schemas import DeviceKey, FleetSchemaError, encode_frame, open_envelope, parse_topic
from fleet_store import sessions
from fleet_store.devices import add_device
from fleet_store.secretbox import KeyEncryptionKey

INDEX = "index.json"
DAY_MS = 86_400_000
HORIZON_DAYS = 30
STABLE_FUTURE_MS = 3_786_912_000_000
"""2090-01-01: a frame further ahead stays ``future`` for as long as this corpus is kept."""


class Entry(msgspec.Struct, frozen=True):
    file: str
    topic: str
    kind: str
    """the campaign's generator that made it: valid, again, reused-seq, values, bytes, signed-bytes,
    structural, hypothesis"""
    outcome: list[str]


class Index(msgspec.Struct, frozen=True):
    written_at_ms: int
    seed: int
    entries: list[Entry]


def load(folder: Path) -> tuple[Index, list[bytes]]:
    index = msgspec.json.decode((folder / INDEX).read_bytes(), type=Index)
    return index, [(folder / entry.file).read_bytes() for entry in index.entries]


def _keys(people: Iterable[Identity]) -> Mapping[str, DeviceKey]:
    return {p.key.key_id: p.key for p in people}


def stable(topic: str, raw: bytes, written_at_ms: int) -> bool:
    """Whether a message's outcome is the same on any later day (its fix times are far from the edges)."""
    keys = _keys(identities())
    try:
        batch = open_envelope(raw, keys.get, parse_topic(topic).device)
    except FleetSchemaError:
        return True
    for frame in batch.frames:
        t = frame.time_ms
        near_horizon = written_at_ms - (HORIZON_DAYS + 10) * DAY_MS <= t <= written_at_ms - 20 * DAY_MS
        ahead = written_at_ms + 60_000 < t < STABLE_FUTURE_MS
        if near_horizon or ahead:
            return False
    return True


async def register(database_url: str, kek: KeyEncryptionKey) -> None:
    """The fuzz identities, with their published secrets, in ``database_url``."""
    conn = await asyncpg.connect(database_url)
    try:
        for person in identities():
            await add_device(conn, kek, person.operator, person.device, person.bus, secret=person.secret)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def ingest_session(mqtt_url: str, database_url: str, group: str) -> AsyncIterator[str]:
    """One ingest instance's persistent session for a block, deleted after it whatever happens."""
    client_id = f"{group}-1"
    await open_session(mqtt_url, client_id, group)
    try:
        yield client_id
    finally:
        await forget_session(mqtt_url, client_id, group)
        conn = await asyncpg.connect(database_url)
        try:
            await sessions.forget(conn, client_id)
        finally:
            await conn.close()


def ingest_env(
    mqtt_url: str, database_url: str, redis_url: str, kek_text: str, group: str, **more: str
) -> dict[str, str]:
    return {
        **os.environ,
        "FLEET_MQTT_URL": mqtt_url,
        "FLEET_DATABASE_URL": database_url,
        "FLEET_REDIS_URL": redis_url,
        "FLEET_KEY_ENCRYPTION_KEY": kek_text,
        "FLEET_INGEST_GROUP": group,
        "FLEET_INGEST_CLIENT_ID": group,
        "FLEET_LOG_LEVEL": "WARNING",
        "FLEET_METRICS_ADDR": "",
        **more,
    }


async def replay(
    mqtt_url: str,
    database_url: str,
    redis_url: str,
    kek_text: str,
    messages: list[tuple[str, bytes]],
    written_at_ms: int,
) -> list[list[str]]:
    """Each message's outcome after a real ingest took them all (the database must be clean)."""
    await register(database_url, KeyEncryptionKey.from_base64(kek_text, "the replay's KEK"))
    group = f"fuzzreplay{uuid.uuid4().hex[:8]}"
    horizon_days = (time.time() * 1000 - written_at_ms) / DAY_MS + HORIZON_DAYS
    env = ingest_env(
        mqtt_url, database_url, redis_url, kek_text, group, FLEET_INGEST_HORIZON_DAYS=f"{horizon_days:.6f}"
    )
    async with ingest_session(mqtt_url, database_url, group):
        async with LoadPublisher(mqtt_url) as publisher:
            await publisher.publish(messages, None)
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "fleet_cli", "ingest", "--instance", "1", "--burst", "3"),
            env=env,
            stderr=subprocess.PIPE,
        )
        _, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"fleet ingest exited {process.returncode}: {err.decode()[-3000:]}")
    return await outcomes(database_url, messages)


async def outcomes(database_url: str, messages: list[tuple[str, bytes]]) -> list[list[str]]:
    """What PostgreSQL holds of each message: its rejection, or each frame's fate; ``missing`` if lost."""
    conn = await asyncpg.connect(database_url)
    try:
        rejected = await conn.fetch("SELECT topic, reason, seq, raw FROM rejected_frames")
        stored = {(r["device"], r["seq"]) for r in await conn.fetch("SELECT device, seq FROM positions")}
    finally:
        await conn.close()
    whole = {(r["topic"], bytes(r["raw"])): r["reason"] for r in rejected if r["seq"] is None}
    frames = {(r["topic"], r["seq"], bytes(r["raw"])): r["reason"] for r in rejected if r["seq"] is not None}
    keys = _keys(identities())
    seen: set[tuple[str, int]] = set()
    result: list[list[str]] = []
    for topic, raw in messages:
        reason = whole.get((topic, raw[:RAW_KEPT_BYTES]))
        if reason is not None:
            result.append([reason])
            continue
        try:
            batch = open_envelope(raw, keys.get, parse_topic(topic).device)
        except FleetSchemaError:
            result.append(["missing"])
            continue
        fates = []
        for frame in batch.frames:
            identity = (frame.device, frame.seq)
            fate = frames.get((topic, frame.seq, encode_frame(frame)))
            if fate is None:
                fate = ("duplicate" if identity in seen else "stored") if identity in stored else "missing"
            seen.add(identity)
            fates.append(fate)
        result.append(fates)
    return result


def write(folder: Path, index: Index, messages: list[bytes]) -> None:
    """Replace the corpus in ``folder`` with these entries."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.bin"):
        old.unlink()
    for entry, raw in zip(index.entries, messages, strict=True):
        (folder / entry.file).write_bytes(raw)
    (folder / INDEX).write_bytes(msgspec.json.format(msgspec.json.encode(index)) + b"\n")
