"""``fleet bench fuzz``: a million hostile payloads through the real broker into a real ``fleet ingest``.

The stream (:mod:`fleet_devtools.fuzz_payloads`) is generated in a process of
its own and published at QoS 1 on the fuzz devices' topics, never more than
``MAX_BACKLOG`` ahead of what ingest took. The run happens in a scratch
database (``<database>_fuzz``, dropped afterwards) and Redis database, so its
counts are its own. While it runs, ingest's ``/metrics`` and its VmRSS are
sampled every second. At the end, every payload must be accounted for:

* messages taken by ingest = messages published (nothing lost);
* frame units received (frames of verified messages, one per bad message) =
  stored + duplicates + rejected by reason;
* PostgreSQL holds exactly the stored rows, and one ``rejected_frames`` row
  per rejection not repeated;
* no ``unstorable`` (that would be a value the wire format let through and
  PostgreSQL refuses), ingest alive throughout, never stalled, exit 0 on
  SIGTERM, no traceback in its log, memory flat.

Each payload is also assessed in the generator (``assess`` is pure); the
first of each new outcome class is a corpus candidate (``--corpus``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import multiprocessing
import re
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from fleet_devtools import fuzz_corpus
from fleet_devtools.bench_agent import Target, target_lines
from fleet_devtools.bench_ingest import LoadPublisher, Report
from fleet_devtools.fuzz_payloads import Stream, identities, seed_message, seed_pool
from fleet_devtools.scratch import scratch
from fleet_devtools.stack import free_port
from fleet_ingest.assess import DeviceInfo, Incoming, assess
from fleet_processing.filters import FilterPolicy
from fleet_store.secretbox import KeyEncryptionKey
from fleet_store.settings import ServiceUrls

CHUNK = 5_000
MAX_BACKLOG = 50_000
"""published and not yet taken by ingest, at most: the broker's queue for it stays bounded"""
SETTLED_S = 5.0
IN_FLIGHT = "fleet_ingest_in_flight_messages"
STALL_S = 60.0
"""ingest taking nothing for this long while messages wait is a stall"""
CORPUS_CAP = 150
CORPUS_PER_REASON = 8
"""corpus entries whose first reason is the same, at most (msgspec's texts alone would fill it)"""
CORPUS_ENTRY_BYTES = 16 * 1024
SCRATCH_REDIS_DB = 13
PEAK_RSS_GOAL_MIB = 400.0
SLOPE_GOAL_MIB = 2.0
"""RSS growth over the second half of the run, MiB per 100,000 payloads"""


class Sample(msgspec.Struct, array_like=True):
    seconds: float
    published: int
    taken: int
    rss_mib: float


class FuzzResult(msgspec.Struct):
    payloads: int
    seed: int
    seconds: float
    payloads_per_s: float
    kinds: dict[str, int]
    messages_taken: int
    units_received: int
    stored: int
    duplicates: int
    rejected: dict[str, int]
    rejections_repeated: int
    rows_positions: int
    rows_rejected: int
    peak_rss_mib: float
    rss_slope_mib_per_100k: float
    ingest_exit: int | None
    stalled: bool
    tracebacks: int
    reconnects: int
    """ingest's broker connection lost and made again (each one redelivers what was not acked)"""
    store_errors: int
    """failed writes, retried"""
    log_lines: int
    """lines ingest logged (warnings and up)"""
    log_first: list[str]
    corpus: int = 0
    targets: list[Target] = msgspec.field(default_factory=list)
    samples: list[Sample] = msgspec.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.targets)


def judge(r: FuzzResult) -> list[Target]:
    units = r.stored + r.duplicates + sum(r.rejected.values())
    return [
        Target(
            "lost messages",
            max(0, r.payloads - r.messages_taken),
            "messages",
            "0 (taken >= published)",
            r.messages_taken >= r.payloads,
        ),
        Target("unaccounted", r.units_received - units, "frame units", "0", r.units_received == units),
        Target(
            "rows stored", r.rows_positions - r.stored, "rows vs metric", "0", r.rows_positions == r.stored
        ),
        Target(
            "rows rejected",
            r.rows_rejected - (sum(r.rejected.values()) - r.rejections_repeated),
            "rows vs metric",
            "0",
            r.rows_rejected == sum(r.rejected.values()) - r.rejections_repeated,
        ),
        Target(
            "unstorable", r.rejected.get("unstorable", 0), "messages", "0", "unstorable" not in r.rejected
        ),
        Target(
            "crashes",
            int(r.ingest_exit != 0) + r.tracebacks,
            "",
            "0",
            r.ingest_exit == 0 and not r.tracebacks,
        ),
        Target("stalls", int(r.stalled), "", "0", not r.stalled),
        Target(
            "peak RSS", r.peak_rss_mib, "MiB", f"< {PEAK_RSS_GOAL_MIB:g}", r.peak_rss_mib < PEAK_RSS_GOAL_MIB
        ),
        Target(
            "RSS slope",
            round(r.rss_slope_mib_per_100k, 2),
            "MiB/100k",
            f"< {SLOPE_GOAL_MIB:g} (2nd half)",
            r.rss_slope_mib_per_100k < SLOPE_GOAL_MIB,
        ),
    ]


def summary_text(r: FuzzResult) -> str:
    rejected = ", ".join(f"{reason} {n:,}" for reason, n in sorted(r.rejected.items(), key=lambda kv: -kv[1]))
    lines = [
        f"fuzz: {r.payloads:,} payloads (seed {r.seed}) in {r.seconds:,.0f} s, {r.payloads_per_s:,.0f}/s",
        "  kinds: " + ", ".join(f"{k} {n:,}" for k, n in sorted(r.kinds.items())),
        f"  ingest took {r.messages_taken:,} messages ({r.messages_taken - r.payloads:,} redelivered after"
        f" {r.reconnects} broker reconnects; {r.store_errors} store errors),"
        f" {r.units_received:,} frame units:"
        f" stored {r.stored:,}, duplicates {r.duplicates:,}, rejected {sum(r.rejected.values()):,}"
        f" (repeats {r.rejections_repeated:,})",
        f"  rejected by reason: {rejected}",
        f"  PostgreSQL: {r.rows_positions:,} positions, {r.rows_rejected:,} rejected_frames rows",
        f"  ingest RSS peak {r.peak_rss_mib:,.1f} MiB, slope {r.rss_slope_mib_per_100k:+.2f} MiB per 100k"
        f" payloads (2nd half); exit {r.ingest_exit}; {r.log_lines} log lines (warnings and up)",
        *(f"    {line}" for line in r.log_first),
    ]
    if r.corpus:
        lines.append(f"  corpus: {r.corpus} entries written")
    return "\n".join([*lines, *target_lines(r.targets)])


# The generator process ---------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\[\w])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def outcome_class(kind: str, reasons: list[str], details: list[str]) -> tuple[str, ...]:
    """What tells two inputs apart for the corpus: their generator, reasons, and msgspec's text without
    its values (the field path and the expectation stay)."""
    shapes = {_NUMBER.sub("#", _QUOTED.sub("'…'", re.sub(r"\$\[1\]\[\d+\]", "$[1][*]", d))) for d in details}
    return (kind, *sorted(set(reasons)), *sorted(shapes))


def _generate(
    seed: int,
    pool_size: int,
    seeds: list[bytes],
    total: int,
    start_ms: int,
    seq_base: int,
    out: Any,
    candidates: Any,
) -> None:
    """Runs in its own process: chunks of (topic, payload, kind) into ``out``, then None."""
    people = identities()
    now_ms = int(time.time() * 1000)
    pool = [seed_message(people, data) for data in seeds] + seed_pool(people, pool_size, now_ms, seed)
    stream = Stream(people, pool, seed, seq_base, start_ms)
    keys = {p.key.key_id: p.key for p in people}
    devices = {p.device: DeviceInfo(p.operator, p.bus, True) for p in people}
    seen: set[tuple[str, ...]] = set()
    per_reasons: dict[str, int] = {}
    found: list[tuple[str, bytes, str]] = []
    sent = 0
    while sent < total:
        chunk = list(stream.chunk(min(CHUNK, total - sent)))
        batch = [Incoming(topic, raw) for topic, raw, _ in chunk]
        outcome = assess(batch, keys.get, devices.get, {}, FilterPolicy(), int(time.time() * 1000))
        reasons: dict[int, list[str]] = {}
        details: dict[int, list[str]] = {}
        for rejected in outcome.rejected:
            reasons.setdefault(rejected.message, []).append(rejected.reason)
            if rejected.seq is None:
                details.setdefault(rejected.message, []).append(rejected.detail)
        for accepted in outcome.accepted:
            reasons.setdefault(accepted.message, []).append("accepted")
        for index, (topic, raw, kind) in enumerate(chunk):
            key = outcome_class(kind, reasons.get(index, []), details.get(index, []))
            if key in seen or len(found) >= CORPUS_CAP or len(raw) > CORPUS_ENTRY_BYTES:
                continue
            seen.add(key)
            reason_set = " ".join(sorted(set(reasons.get(index, []))))
            if per_reasons.get(reason_set, 0) < CORPUS_PER_REASON:
                per_reasons[reason_set] = per_reasons.get(reason_set, 0) + 1
                if raw in stream.originals:  # a repeat means nothing without what it repeats
                    found.append((topic, stream.originals[raw], "valid"))
                found.append((topic, raw, kind))
        stream.originals.clear()
        out.put(chunk)
        sent += len(chunk)
    out.put(None)
    candidates.put(found)


# The run -----------------------------------------------------------------------------------------


def _scrape(port: int) -> dict[str, float]:
    """Ingest's counters and in-flight gauge: name (``:label`` values appended) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total") or sample.name == IN_FLIGHT:
                values["".join([sample.name, *(f":{v}" for v in sample.labels.values())])] = sample.value
    return values


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def slope_per_100k(samples: list[Sample]) -> float:
    """RSS growth per 100,000 payloads taken, fitted over the second half of the run."""
    half = [s for s in samples if s.taken >= samples[-1].taken / 2] if samples else []
    if len(half) < 3 or half[-1].taken == half[0].taken:
        return 0.0
    fit = np.polyfit([s.taken for s in half], [s.rss_mib for s in half], 1)
    return float(fit[0] * 100_000)


class _Watch:
    """Samples ingest every second; reports progress; notices a death or a stall."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, report: Report) -> None:
        self.process, self.port, self.report = process, port, report
        self.published = 0
        self.metrics: dict[str, float] = {}
        self.samples: list[Sample] = []
        self.stalled = False
        self.started = time.monotonic()
        self._last_progress = (0, time.monotonic())
        self._tick = asyncio.Event()
        """set after each sample"""

    @property
    def taken(self) -> int:
        return int(self.metrics.get("fleet_ingest_messages_total", 0))

    @property
    def dead(self) -> bool:
        return self.process.returncode is not None

    async def run(self) -> None:
        last_report = 0.0
        while not self.dead:
            with contextlib.suppress(OSError):
                self.metrics = await asyncio.to_thread(_scrape, self.port)
            now = time.monotonic()
            with contextlib.suppress(OSError):
                rss = _rss_mib(self.process.pid)
                self.samples.append(Sample(now - self.started, self.published, self.taken, rss))
            if self.taken > self._last_progress[0] or self.taken >= self.published:
                self._last_progress = (self.taken, now)
            elif now - self._last_progress[1] > STALL_S:
                self.stalled = True
            if now - last_report >= 5 and self.samples:
                last_report = now
                s = self.samples[-1]
                rate = s.taken / max(s.seconds, 1e-9)
                stored = int(self.metrics.get("fleet_ingest_frames_accepted_total", 0))
                self.report(
                    f"fuzz: {s.seconds:6.0f} s  published {s.published:>9,}  taken {s.taken:>9,}"
                    f" ({rate:,.0f}/s)  stored {stored:,}  RSS {s.rss_mib:,.1f} MiB"
                )
            self._tick.set()
            self._tick = asyncio.Event()
            await asyncio.sleep(1.0)
        self._tick.set()

    async def room(self) -> None:
        """Wait until the backlog leaves room for a chunk (or ingest died or stalled)."""
        while self.published - self.taken > MAX_BACKLOG - CHUNK and not (self.dead or self.stalled):
            await self._tick.wait()

    async def drained(self) -> None:
        """Until ingest took every message and then nothing for ``SETTLED_S`` with nothing in flight.

        Taken counts redeliveries too (the broker sends a reconnected consumer what it had not acked
        again), so reaching the published count is not the end: the broker's queue is empty when
        nothing more comes.
        """
        settled: tuple[int, float] | None = None
        while not (self.dead or self.stalled):
            now = time.monotonic()
            if self.taken >= self.published and not self.metrics.get(IN_FLIGHT):
                if settled is None or settled[0] != self.taken:
                    settled = (self.taken, now)
                elif now - settled[1] >= SETTLED_S:
                    return
            else:
                settled = None
            await self._tick.wait()


async def _counts(database_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        return (
            await conn.fetchval("SELECT count(*) FROM positions"),
            await conn.fetchval("SELECT count(*) FROM rejected_frames"),
        )
    finally:
        await conn.close()


async def run_fuzz(
    urls: ServiceUrls,
    kek_text: str,
    report: Report,
    *,
    payloads: int,
    seed: int,
    pool_size: int,
    corpus_dir: Path | None,
    seed_bytes: list[bytes] | None = None,
) -> FuzzResult:
    """The campaign; ``seed_bytes`` are atheris inputs (fleet_devtools.fuzz_atheris), published first."""
    seed_bytes = seed_bytes or []
    started_ms = int(time.time() * 1000)
    kek = KeyEncryptionKey(base64.b64decode(kek_text))
    context = multiprocessing.get_context("spawn")
    chunks, candidates = context.Queue(maxsize=4), context.Queue()
    start_ms = started_ms - 3 * fuzz_corpus.DAY_MS  # valid frames: 500 ms apart, behind now for 500k a device
    generator = context.Process(
        target=_generate,
        args=(seed, pool_size, seed_bytes, payloads, start_ms, started_ms * 1000, chunks, candidates),
    )
    report(
        f"fuzz: {len(seed_bytes):,} atheris inputs and {pool_size:,} Hypothesis draws as seeds,"
        f" then {payloads:,} payloads (seed {seed})"
    )
    async with scratch(urls, "_fuzz", SCRATCH_REDIS_DB) as (database_url, redis_url):
        await fuzz_corpus.register(database_url, kek)
        group = f"fuzz{uuid.uuid4().hex[:8]}"
        port = free_port()
        env = fuzz_corpus.ingest_env(
            urls.mqtt_url, database_url, redis_url, kek_text, group, FLEET_METRICS_ADDR=f"127.0.0.1:{port}"
        )
        kinds: dict[str, int] = {}
        found: list[tuple[str, bytes, str]] = []
        chunk: list[tuple[str, bytes, str]] | None = []
        async with fuzz_corpus.ingest_session(urls.mqtt_url, database_url, group):
            with tempfile.TemporaryFile() as log:
                process = await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "fleet_cli", "ingest", "--instance", "1"), env=env, stderr=log
                )
                watch = _Watch(process, port, report)
                watching = asyncio.create_task(watch.run())
                generator.start()
                try:
                    async with LoadPublisher(urls.mqtt_url) as publisher:
                        while (chunk := await asyncio.to_thread(chunks.get)) is not None:
                            await watch.room()
                            if watch.dead or watch.stalled:
                                break
                            for _, _, kind in chunk:
                                kinds[kind] = kinds.get(kind, 0) + 1
                            await publisher.publish([(topic, raw) for topic, raw, _ in chunk], None)
                            watch.published += len(chunk)
                    await watch.drained()
                    await asyncio.sleep(1.5)  # one more scrape after the last commit's counters
                    final = await asyncio.to_thread(_scrape, port) if not watch.dead else watch.metrics
                    if chunk is None:  # the whole stream went: its candidates follow (killed, it could
                        # leave half a message in the pipe and the read would never end)
                        found = await asyncio.to_thread(candidates.get, True, 120)
                        generator.join(30)
                finally:
                    if generator.is_alive():
                        generator.kill()
                    if not watch.dead:
                        process.send_signal(signal.SIGTERM)
                    exit_code = await _wait(process)
                    watching.cancel()
                log.seek(0)
                logged = log.read()
                tracebacks = logged.count(b"Traceback")
                lines = logged.decode(errors="replace").splitlines()
        rows_positions, rows_rejected = await _counts(database_url)
    seconds = watch.samples[-1].seconds if watch.samples else 0.0
    result = FuzzResult(
        payloads=watch.published,
        seed=seed,
        seconds=seconds,
        payloads_per_s=watch.published / max(seconds, 1e-9),
        kinds=kinds,
        messages_taken=int(final.get("fleet_ingest_messages_total", 0)),
        units_received=int(final.get("fleet_ingest_frames_received_total", 0)),
        stored=int(final.get("fleet_ingest_frames_accepted_total", 0)),
        duplicates=int(final.get("fleet_ingest_frames_duplicate_total", 0)),
        rejected={
            name.split(":", 1)[1]: int(value)
            for name, value in final.items()
            if name.startswith("fleet_ingest_frames_rejected_total:") and value
        },
        rejections_repeated=int(final.get("fleet_ingest_rejections_repeated_total", 0)),
        rows_positions=rows_positions,
        rows_rejected=rows_rejected,
        peak_rss_mib=max((s.rss_mib for s in watch.samples), default=0.0),
        rss_slope_mib_per_100k=slope_per_100k(watch.samples),
        ingest_exit=exit_code,
        stalled=watch.stalled,
        tracebacks=tracebacks,
        reconnects=int(final.get("fleet_ingest_broker_reconnects_total", 0)),
        store_errors=int(sum(v for k, v in final.items() if k.startswith("fleet_ingest_store_errors_total"))),
        log_lines=len(lines),
        log_first=[line[:300] for line in lines[:5]],
        samples=watch.samples,
    )
    if payloads != watch.published:
        result.payloads = payloads  # what was asked: the shortfall shows as lost
    result.targets = judge(result)
    if corpus_dir is not None and found:
        result.corpus = await write_corpus(urls, kek_text, report, corpus_dir, found, seed, started_ms)
    return result


async def _wait(process: asyncio.subprocess.Process) -> int | None:
    """Its exit code within a minute of SIGTERM; None (and killed) if it would not stop."""
    try:
        return await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None


async def write_corpus(
    urls: ServiceUrls,
    kek_text: str,
    report: Report,
    folder: Path,
    found: list[tuple[str, bytes, str]],
    seed: int,
    written_at_ms: int,
) -> int:
    """Replay the candidates until their outcomes repeat; write those (stable with the date) as the corpus."""
    entries = [(t, raw, kind) for t, raw, kind in found if fuzz_corpus.stable(t, raw, written_at_ms)]
    report(f"fuzz: {len(entries)} corpus candidates of {len(found)} stable with the date; replaying them")

    async def once(chosen: list[tuple[str, bytes, str]]) -> list[list[str]]:
        async with scratch(urls, "_fuzzcorpus", SCRATCH_REDIS_DB) as (database_url, redis_url):
            messages = [(t, raw) for t, raw, _ in chosen]
            return await fuzz_corpus.replay(
                urls.mqtt_url, database_url, redis_url, kek_text, messages, written_at_ms
            )

    first, second = await once(entries), await once(entries)
    lost = [e for e, a in zip(entries, first, strict=True) if "missing" in a]
    if lost:
        report(f"fuzz: FOUND {len(lost)} corpus candidates neither stored nor rejected: {lost[:3]!r}")
    entries = [e for e, a, b in zip(entries, first, second, strict=True) if a == b and "missing" not in a]
    final = await once(entries)
    index = fuzz_corpus.Index(
        written_at_ms=written_at_ms,
        seed=seed,
        entries=[
            fuzz_corpus.Entry(file=f"{n:03d}.bin", topic=t, kind=kind, outcome=outcome)
            for n, ((t, _, kind), outcome) in enumerate(zip(entries, final, strict=True))
        ],
    )
    fuzz_corpus.write(folder, index, [raw for _, raw, _ in entries])
    report(f"fuzz: wrote {len(entries)} entries to {folder}")
    return len(entries)
