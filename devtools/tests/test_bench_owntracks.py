"""``fleet bench owntracks`` runs its batches through the real checks and reports every figure."""

from __future__ import annotations

from fleet_devtools.bench_owntracks import APPS, run_owntracks_bench, summary_text


def test_the_bench_accepts_every_message_of_each_kind_and_reports_them() -> None:
    heard: list[str] = []
    result = run_owntracks_bench(heard.append, rounds=1)
    assert result.messages == APPS
    assert min(result.plain_per_s, result.encrypted_per_s, result.signed_per_s) > 0
    assert len(heard) == 3
    text = summary_text(result)
    assert "OwnTracks encrypted" in text
    assert "target 20,000" in text
