"""BatchHistogram exposes what prometheus_client's Histogram would, for the same values and buckets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fleet_ingest.batch_histogram import BatchHistogram
from fleet_ingest.metrics import LAG_SECONDS

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)


def _series(registry: CollectorRegistry) -> dict[str, float]:
    """Every sample of the exposition, parsed by the library, but its ``_created`` timestamp."""
    return {
        f"{sample.name}{{{','.join(f'{k}={v!r}' for k, v in sorted(sample.labels.items()))}}}": sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def _both(values: list[list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    library, batched = CollectorRegistry(), CollectorRegistry()
    one = Histogram("lag_seconds", "lag", buckets=BUCKETS, registry=library)
    many = BatchHistogram("lag_seconds", "lag", BUCKETS, registry=batched)
    for batch in values:
        for v in batch:
            one.observe(v)
        many.observe_many(np.array(batch, dtype=np.float64))
    return _series(library), _series(batched)


@given(
    st.lists(
        st.lists(
            st.one_of(
                st.floats(min_value=0, max_value=1e6, allow_nan=False),
                st.sampled_from([float(b) for b in BUCKETS]),  # exactly on a bound: that bucket, as observe
            ),
            max_size=50,
        ),
        max_size=5,
    )
)
def test_a_batch_histogram_exposes_the_series_a_histogram_of_the_same_values_does(
    values: list[list[float]],
) -> None:
    library, batched = _both(values)
    assert batched.keys() == library.keys()
    for name, value in library.items():
        assert batched[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name


def test_no_values_leave_every_bucket_at_zero() -> None:
    library, batched = _both([[]])
    assert batched == library
    assert batched["lag_seconds_bucket{le='+Inf'}"] == 0


def test_buckets_must_be_distinct_finite_numbers() -> None:
    with pytest.raises(ValueError, match="distinct"):
        BatchHistogram("x_seconds", "x", (1, 1, 2), registry=CollectorRegistry())


def test_the_ingest_lag_is_served_under_its_name_and_counts_what_it_observes() -> None:
    def count() -> float:
        return _series(REGISTRY)["fleet_ingest_lag_seconds_count{}"]

    before = count()
    LAG_SECONDS.observe_many(np.array([0.02, 7.0, 90_000.0]))
    assert count() == before + 3
    assert "# TYPE fleet_ingest_lag_seconds histogram" in generate_latest(REGISTRY).decode()
