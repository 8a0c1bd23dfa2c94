"""Each operator's detector context (fences, thresholds), kept fresh for the processing step.

The thresholds are the process's settings (``FLEET_INGEST_*``); the
operator's fences and per-route deviation limits live in PostgreSQL and are
reloaded every ``refresh_s`` from ingest's upkeep loop, the last good ones
serving while a reload fails.
"""

from __future__ import annotations

from collections.abc import Iterable

from fleet_processing.detect import DetectContext
from fleet_processing.detection import DetectorPolicy


class Detectors:
    """The detector contexts by operator; an operator with nothing stored gets the base policy alone."""

    def __init__(self, policy: DetectorPolicy) -> None:
        self.policy = policy
        self._contexts: dict[str, DetectContext] = {}

    def contexts(self, operators: Iterable[str]) -> dict[str, DetectContext]:
        """A context for each of ``operators``."""
        out = {}
        for operator in operators:
            context = self._contexts.get(operator)
            if context is None:
                context = self._contexts[operator] = DetectContext(operator, policy=self.policy)
            out[operator] = context
        return out
