"""``fleet bench``: measure fleet's parts on this machine against real servers.

Each subcommand measures, prints a summary with every figure against its
target (``--json`` for the same as JSON) and exits 1 if a target is missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import msgspec

from fleet_store import stackfile
from fleet_store.settings import Settings


def _progress(line: str) -> None:
    click.echo(line, err=True)


def _finish(summary: msgspec.Struct, text: str, *, passed: bool, as_json: bool) -> None:
    """Print the summary (JSON or text) on stdout; exit 1 if a target was missed."""
    click.echo(msgspec.json.format(msgspec.json.encode(summary)).decode() if as_json else text)
    if not passed:
        sys.exit(1)


_json_option = click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")


@click.group()
def bench() -> None:
    """Measure fleet on this machine against the local stack's servers (or FLEET_*_URL's).

    Progress goes to stderr, the summary to stdout; the exit code is 1 if a
    target is missed.

    \b
    Example:
      fleet bench agent --duration 600 --json > agent-bench.json
    """


@bench.command()
@click.option(
    "--duration",
    type=click.FloatRange(min=15),
    default=600.0,
    show_default=True,
    help="seconds the fleet-agent run process is sampled",
)
@click.option(
    "--backlog",
    "backlog_frames",
    type=click.IntRange(min=1),
    default=86_400,
    show_default=True,
    help="frames in the outbox to drain (86,400: a day at 1 Hz)",
)
@_json_option
@click.pass_obj
def agent(settings: Settings, duration: float, backlog_frames: int, as_json: bool) -> None:
    """The device agent: RSS and CPU of `fleet-agent run`, then the drain rate of a day of backlog.

    Targets: RSS under 40 MB, CPU under 2 % of one core (start-up left out),
    a drain of at least 5,000 frames/s with every frame arriving verified.
    Scratch files live under FLEET_STATE_DIR and are removed afterwards.

    \b
    Example:
      fleet bench agent                 # about 11 minutes
      fleet bench agent --duration 60 --backlog 10000 --json
    """
    from fleet_devtools.bench_agent import run_agent_bench, summary_text

    urls = stackfile.resolve_urls(settings)
    result = run_agent_bench(
        urls.mqtt_url,
        settings.state_dir,
        duration_s=duration,
        backlog_frames=backlog_frames,
        report=_progress,
    )
    _finish(result, summary_text(result), passed=result.passed, as_json=as_json)


@bench.command(name="ingest")
@click.option(
    "--devices", type=click.IntRange(min=2), default=100, show_default=True, help="registered devices"
)
@click.option(
    "--frames",
    type=click.IntRange(min=1_000),
    default=100_000,
    show_default=True,
    help="frames for the ceiling and for each drain",
)
@click.option(
    "--rates",
    default="5000,10000,20000,30000",
    show_default=True,
    help="paced offered loads, frames/s, one frame per message",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=2),
    default=10.0,
    show_default=True,
    help="duration of each paced load",
)
@click.option(
    "--trip-pairs",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="drains with the trip step off then on, alternated, per message size (the ratio is their median)",
)
@_json_option
@click.pass_obj
def ingest(
    settings: Settings, devices: int, frames: int, rates: str, seconds: float, trip_pairs: int, as_json: bool
) -> None:
    """Ingest: ceiling, paced live loads with lag, backlog drains with 1 and 2 processes.

    Then the same drain of buses keeping to the demo feed's trips, with the
    trip step (progress, delay, ETAs) off and on, side by side, in pairs
    alternated --trip-pairs times (the machine's noise is larger than the
    difference: the ratio is the median of the pairs).

    Targets: at least 20,000 frames/s sustained and half the bare-subscriber
    ceiling; p99 publish-to-committed under 250 ms at 5,000 frames/s; with
    the trip step at least 0.7 of the frames/s without it; no frame lost.
    Registers its own devices (an operator named bench...).

    \b
    Example:
      fleet bench ingest                      # about 5 minutes
      fleet bench ingest --rates 5000 --seconds 5 --frames 20000 --json
    """
    import asyncio

    from fleet_devtools.bench_ingest import run_bench, summary_text
    from fleet_store.secretbox import KEK_FILE, load_key_encryption_key

    urls = stackfile.resolve_urls(settings)
    load_key_encryption_key(settings)  # checks it, and makes the local stack's on first use
    kek = settings.key_encryption_key or (settings.state_dir / KEK_FILE).read_text().strip()
    try:
        offered = [float(rate) for rate in rates.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{rates!r} is not a comma-separated list of numbers", param_hint="--rates"
        ) from None
    result = asyncio.run(
        run_bench(
            urls,
            kek,
            _progress,
            devices=devices,
            frames=frames,
            rates=offered,
            seconds=seconds,
            trip_pairs=trip_pairs,
        )
    )
    _finish(result, summary_text(result), passed=result.passed, as_json=as_json)


@bench.command(name="processing")
@click.option(
    "--batches",
    type=click.IntRange(min=3),
    default=30,
    show_default=True,
    help="timed batches per batch shape",
)
@_json_option
def processing(batches: int, as_json: bool) -> None:
    """Progress, ETAs and event detectors on one core: fixes/s, without fences and with 1,000 and 10,000.

    A demo-like feed (five Algerian intercity lines both ways, a departure
    every 30 minutes) and simulated buses with GPS noise; two batch shapes as
    ingest hands them: 500 buses with 4 fixes each, 2,000 buses with one.
    Times, on the same fixes and no server: advance_batch alone; ingest's
    processing step (progress, the ETA of every upcoming stop, deviation,
    stops, delay, offline and geofence detectors) without fences, with 1,000
    fences and with 10,000 (stations and speed zones on the lines, zones
    scattered over Algeria); the detectors alone with each set. Targets: at
    least 150,000 fixes/s for the step with 1,000 fences, 10,000 costing at
    most 1.3 times as much (and 200,000 fixes/s for the step without fences).
    Prints the error against the simulated truth too, so a fast wrong answer
    shows. Exits 1 when a target is missed.

    \b
    Example:
      fleet bench processing                 # about three minutes
      fleet bench processing --batches 10 --json
    """
    from fleet_devtools.bench_processing import run_processing_bench, summary_text

    result = run_processing_bench(_progress, batches=batches)
    _finish(result, summary_text(result), passed=result.passed, as_json=as_json)


@bench.command(name="owntracks")
@click.option(
    "--rounds", type=click.IntRange(min=1), default=10, show_default=True, help="timed batches per kind"
)
@_json_option
def owntracks(rounds: int, as_json: bool) -> None:
    """OwnTracks apps' messages through ingest's checks on one core: messages/s, plain and encrypted.

    What ingest spends on a batch of 2,000 OwnTracks locations (as the
    Android app sends them) before its commit: topic and registry,
    decryption, JSON, SI frame, then the device, bus and track checks; one-frame
    signed batches through the same checks beside them. No server. Target: at
    least 20,000 encrypted messages/s. Exits 1 when it is missed.

    \b
    Example:
      fleet bench owntracks --rounds 20
    """
    from fleet_devtools.bench_owntracks import run_owntracks_bench, summary_text

    result = run_owntracks_bench(_progress, rounds=rounds)
    _finish(result, summary_text(result), passed=result.passed, as_json=as_json)


@bench.command(name="eta")
@click.option(
    "--feed",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="a GTFS zip or folder (default: the Algerian demo feed)",
)
@click.option("--seed", type=int, default=1, show_default=True, help="replays the same simulation")
@click.option(
    "--history-days",
    type=click.IntRange(min=1),
    default=14,
    show_default=True,
    help="days driven before the test",
)
@click.option(
    "--test-days", type=click.IntRange(min=1), default=3, show_default=True, help="days replayed and scored"
)
@click.option(
    "--every",
    "every_s",
    type=click.IntRange(min=5),
    default=30,
    show_default=True,
    help="seconds between fixes",
)
@_json_option
@click.pass_obj
def eta(
    settings: Settings,
    feed: Path | None,
    seed: int,
    history_days: int,
    test_days: int,
    every_s: int,
    as_json: bool,
) -> None:
    """ETA accuracy: simulated intercity buses with known truth, against two baselines.

    Imports the feed (its own operator, bench-eta-SEED), drives days of
    history through trip progress into the database (stop visits, rolled up
    into segment times), then replays test days through progress and the ETA
    model and scores every prediction by horizon: MAE, share early and share
    inside the Transit app's windows, for the ETA, the schedule with the
    delay propagated (OneBusAway) and distance over speed. Targets: beat both
    baselines at every horizon, by 30 % at 30-180 min; 85 % inside the
    windows up to 15 min.

    \b
    Example:
      fleet bench eta                         # about a minute
      fleet bench eta --seed 7 --history-days 7 --test-days 1 --json
    """
    import asyncio

    from fleet_devtools.bench_eta import run_eta_bench, summary_text

    urls = stackfile.resolve_urls(settings)
    result = asyncio.run(
        run_eta_bench(
            urls.database_url,
            _progress,
            feed=feed,
            seed=seed,
            history_days=history_days,
            test_days=test_days,
            every_s=every_s,
        )
    )
    _finish(result, summary_text(result), passed=result.passed, as_json=as_json)


@bench.command(name="api")
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="seconds of each wrk round",
)
@click.option(
    "--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="rounds per endpoint"
)
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="keep-alive connections, of wrk and of the paced load",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=5_000.0,
    show_default=True,
    help="requests/s the paced load offers (the p99 target is at 5,000)",
)
@_json_option
@click.pass_obj
def api(
    settings: Settings, duration: float, rounds: int, connections: int, rate: float, as_json: bool
) -> None:
    """The trip-ETA endpoint on one `fleet serve` process vs a bare endpoint of the same server.

    Writes two running instances of a trip to the stack's Redis, starts the
    app as `fleet serve` runs it with one extra constant route, and loads
    both in alternating rounds, each request with a booking token: saturated
    by wrk (apt-get install wrk), then paced at --rate with every request
    timed from when it fell due. Targets: at least 5,000 requests/s, p99
    under 20 ms at 5,000 requests/s, and at least 70 % of the bare
    endpoint's requests/s.

    \b
    Example:
      fleet bench api                          # about two minutes
      fleet bench api --duration 5 --rounds 2 --json
    """
    from fleet_devtools.bench_api import run_api_bench, summary_text

    urls = stackfile.resolve_urls(settings)
    result = run_api_bench(
        urls.redis_url,
        urls.database_url,
        connections=connections,
        duration_s=duration,
        rounds=rounds,
        rate=rate,
        report=_progress,
    )
    _finish(result, summary_text(result), passed=result.passed, as_json=as_json)


@bench.command(name="fanout")
@click.option(
    "--clients", type=click.IntRange(min=100), default=10_000, show_default=True, help="websocket clients"
)
@click.option("--buses", type=click.IntRange(min=100), default=2_000, show_default=True, help="buses at 1 Hz")
@click.option(
    "--duration",
    "seconds",
    type=click.FloatRange(min=5),
    default=30.0,
    show_default=True,
    help="seconds measured in each phase (after 5 s of warm-up)",
)
@click.option(
    "--slow-share",
    type=click.FloatRange(0, 0.5),
    default=0.05,
    show_default=True,
    help="share of clients that stop reading for 2 s after every frame",
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="client processes")
@_json_option
@click.pass_obj
def fanout(
    settings: Settings,
    clients: int,
    buses: int,
    seconds: float,
    slow_share: float,
    workers: int,
    as_json: bool,
) -> None:
    """Websocket fan-out: one `fleet serve` process, clients in other processes, then the bare ceiling.

    The issue's mix (90 % one bus or trip, 9 % a route, 1 % maps over a
    tenth of the fleet), buses updating once a second through Redis; delay
    from publish to receipt per kind of client, the share of clients that
    got every update of their buses, and the same clients on a bare
    `websockets` broadcast loop in the same run. Targets: one-bus p99 under
    100 ms, maps under 200 ms, every fast client complete.

    \b
    Example:
      fleet bench fanout                          # 10,000 clients, about 3 minutes
      fleet bench fanout --clients 2000 --duration 20 --json
    """
    from fleet_devtools.bench_fanout import FanoutOptions, run_fanout_bench, summary_text

    urls = stackfile.resolve_urls(settings)
    options = FanoutOptions(clients, buses, seconds, slow_share, workers)
    result = run_fanout_bench(urls.redis_url, urls.database_url, _progress, options)
    _finish(result, summary_text(result), passed=result.passed, as_json=as_json)


@bench.command(name="phones")
@click.option("--phones", type=click.IntRange(min=1), default=50, show_default=True, help="phones registered")
@click.option(
    "--duration", type=click.FloatRange(min=1), default=20.0, show_default=True, help="seconds of wrk load"
)
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="wrk keep-alive connections",
)
@_json_option
@click.pass_obj
def phones(settings: Settings, phones: int, duration: float, connections: int, as_json: bool) -> None:
    """Traccar Client requests through one `fleet ingest http` process into PostgreSQL.

    Registers PHONES phones of a fresh operator, sends each one's first
    request (argon2id check), then loads the front with wrk (apt-get install
    wrk), each request a new fix. Targets: at least 300 requests/s, p99 under
    1 s, no error, every answered request stored.

    \b
    Example:
      fleet bench phones                       # about half a minute
      fleet bench phones --phones 200 --duration 60 --json
    """
    from fleet_devtools.bench_agent import target_lines
    from fleet_devtools.bench_phones import run_phones_bench
    from fleet_store.secretbox import load_key_encryption_key

    urls = stackfile.resolve_urls(settings)
    result = run_phones_bench(
        urls.database_url,
        load_key_encryption_key(settings),
        phones=phones,
        connections=connections,
        duration_s=duration,
        report=_progress,
    )
    text = "\n".join(
        [
            f"fleet bench phones ({result.measured_at}, {result.machine.cpu}, {result.machine.cores} cores)",
            f"  {result.phones} phones, {result.connections} connections, {result.duration_s:g} s,"
            f" load average {result.load_1m:.1f}",
            f"  first request {result.first_request_ms:.0f} ms (median), then {result.requests:,} requests:"
            f" {result.requests_per_s:,.0f}/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms,"
            f" {result.stored:,} frames stored",
            *target_lines(result.targets),
        ]
    )
    _finish(result, text, passed=result.passed, as_json=as_json)


@bench.command(name="fuzz")
@click.option(
    "--payloads",
    type=click.IntRange(min=1_000),
    default=1_000_000,
    show_default=True,
    help="payloads published",
)
@click.option("--seed", type=int, default=1, show_default=True, help="the stream's seed (the same run again)")
@click.option(
    "--pool",
    "pool_size",
    type=click.IntRange(min=10),
    default=2_000,
    show_default=True,
    help="Hypothesis seed envelopes drawn first (each published once, and mutated)",
)
@click.option(
    "--corpus",
    "corpus_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="write the interesting inputs found, replayed, to this folder (tests/fuzz_corpus)",
)
@click.option(
    "--seeds",
    "seeds_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="a folder of atheris inputs (python -m fleet_devtools.fuzz_atheris) to publish first and mutate",
)
@_json_option
@click.pass_obj
def fuzz(
    settings: Settings,
    payloads: int,
    seed: int,
    pool_size: int,
    corpus_dir: Path | None,
    seeds_dir: Path | None,
    as_json: bool,
) -> None:
    """Fuzzing: hostile payloads through the real broker into a real `fleet ingest`.

    Hypothesis-drawn envelopes signed with the fuzz devices' keys, hostile
    field values, byte mutations of envelopes and of signed payloads, depth
    bombs, oversized batches, wrong topics. Works in a scratch database
    (dropped afterwards). Targets: every payload taken and ending stored,
    duplicate or rejected with a reason (ingest's counters and PostgreSQL's
    rows agree), no unstorable, ingest alive and never stalled, RSS bounded
    and flat.

    \b
    Example:
      fleet bench fuzz                                  # 1,000,000 payloads
      fleet bench fuzz --payloads 20000 --corpus tests/fuzz_corpus
      fleet bench fuzz --seeds .fleet/atheris-corpus   # after a run of fleet_devtools.fuzz_atheris
    """
    import asyncio

    from fleet_devtools.bench_fuzz import run_fuzz, summary_text
    from fleet_store.secretbox import KEK_FILE, load_key_encryption_key

    urls = stackfile.resolve_urls(settings)
    load_key_encryption_key(settings)
    kek = settings.key_encryption_key or (settings.state_dir / KEK_FILE).read_text().strip()
    result = asyncio.run(
        run_fuzz(
            urls,
            kek,
            _progress,
            payloads=payloads,
            seed=seed,
            pool_size=pool_size,
            corpus_dir=corpus_dir,
            seed_bytes=[p.read_bytes() for p in sorted(seeds_dir.iterdir()) if p.is_file()]
            if seeds_dir
            else [],
        )
    )
    _finish(result, summary_text(result), passed=result.passed, as_json=as_json)
