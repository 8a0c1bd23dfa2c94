"""One of the two ingest processes stopped or killed under the stream, and started again 2 s later.

What the broker had delivered to the stopped one and it had not acked comes
again after its restart (its persistent session kept its share meanwhile);
``(device, seq)`` makes the second delivery a duplicate that is not stored.
"""

from __future__ import annotations

import signal
import time

import pytest

from fleet_testing.chaos import Pipeline, keep, run_fault

RESTART_SEC = 2.0
"""deploy/systemd/fleet-ingest@.service: RestartSec=2"""


def _restart(pipeline: Pipeline, sig: signal.Signals) -> None:
    ingest = pipeline.ingest
    process = ingest.running.pop("b")
    process.send_signal(sig)
    code = process.wait(timeout=60)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    time.sleep(RESTART_SEC)
    ingest.start("b", burst_s=None)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_one_of_two_ingest_processes_stopped_or_killed_loses_nothing(
    pipeline: Pipeline, sig: signal.Signals
) -> None:
    outcome = keep(
        run_fault(
            pipeline,
            f"ingest {sig.name}, one of two",
            lambda: _restart(pipeline, sig),
            lambda: None,
            outage_s=0.0,
        )
    )
    assert outcome.lost == 0, outcome.lost_seqs
    assert outcome.duplicated == 0
    assert outcome.events_duplicated == 0
