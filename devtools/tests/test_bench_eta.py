"""`fleet bench eta` end to end on a small simulation: the table's shape and the invariants, not accuracy."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
from click.testing import CliRunner

from fleet_cli.cli import main
from fleet_devtools.bench_eta import BUCKETS_MIN, EtaBenchResult, run_eta_bench, summary_text


def _small(database_url: str, seed: int) -> EtaBenchResult:
    lines: list[str] = []
    result = asyncio.run(
        run_eta_bench(
            database_url,
            lines.append,
            seed=seed,
            history_days=2,
            test_days=1,
            every_s=60,
            big_batch=200,
        )
    )
    assert any(line.startswith("history day 2/2") for line in lines), "progress is reported"
    return result


def test_a_small_eta_bench_scores_every_horizon_and_breaks_no_invariant(database_url: str) -> None:
    result = _small(database_url, seed=3)
    assert [b.horizon for b in result.buckets] == [f"{low}-{high} min" for low, high in BUCKETS_MIN]
    assert result.invariant_violations == 0
    assert result.visits_stored > 0
    assert result.segment_rows > 0
    assert sum(b.predictions for b in result.buckets) == result.predictions > 0
    for b in result.buckets:
        for share in (b.eta_early, b.eta_inside, b.schedule_inside, b.speed_inside, b.band_coverage):
            assert 0.0 <= share <= 1.0
    assert [t.name for t in result.targets][:2] == ["invariants", "MAE 0-3 min"]
    decoded = msgspec.json.decode(msgspec.json.encode(result))
    assert set(decoded["buckets"][0]) >= {"eta_mae_s", "schedule_mae_s", "speed_mae_s", "window"}
    assert "| horizon |" in summary_text(result)


def test_the_same_seed_replays_the_same_figures_and_leaves_no_rows_behind(database_url: str) -> None:
    first, second = _small(database_url, seed=5), _small(database_url, seed=5)
    assert first.buckets == second.buckets
    assert first.predictions == second.predictions

    async def left() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM stop_visits WHERE operator = 'bench-eta-5'"))
        finally:
            await conn.close()

    assert asyncio.run(left()) == 0


def test_fleet_bench_eta_help_shows_an_example() -> None:
    result = CliRunner().invoke(main, ["bench", "eta", "--help"])
    assert result.exit_code == 0
    assert "fleet bench eta --seed" in result.output
