"""A Prometheus histogram observed a batch of values at a time.

prometheus_client's ``Histogram.observe`` takes one value per call, under a
lock, walking the buckets in Python: 1.5 µs a value, measured. Ingest
observes the lag of every accepted frame, so at 100 frames a message that
was about a tenth of the process's CPU per frame. The library has no bulk
observe; this collector counts a batch's values into the same buckets with
one numpy pass (0.04 µs a value) and exposes them through the library's own
``HistogramMetricFamily``, so ``/metrics`` shows the same series (buckets,
``_count``, ``_sum``) as a ``Histogram`` of the same name and buckets would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray
from prometheus_client import REGISTRY
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

_BOUND_LABEL: Callable[[float], str] = floatToGoString
"""How the library writes a bucket's ``le`` (untyped there)."""


class BatchHistogram(Collector):
    """A histogram without labels whose values come in arrays (``observe_many``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        bounds = sorted(float(b) for b in buckets if b != float("inf"))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct finite numbers, got {list(buckets)}")
        self._name = name
        self._documentation = documentation
        self._bounds = np.array(bounds, dtype=np.float64)
        self._labels = [_BOUND_LABEL(b) for b in bounds] + ["+Inf"]
        self._counts = np.zeros(len(bounds) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()  # the metrics server's thread reads while the event loop writes
        registry.register(self)

    def observe_many(self, values: NDArray[np.float64]) -> None:
        """Count each value in the first bucket whose bound it does not exceed (as ``Histogram.observe``)."""
        if not len(values):
            return
        counts = np.bincount(np.searchsorted(self._bounds, values, side="left"), minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        yield HistogramMetricFamily(
            self._name,
            self._documentation,
            buckets=list(zip(self._labels, cumulative, strict=True)),
            sum_value=total,
        )

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)
