"""Typed errors of the pure processing code, each with a stable ``code``.

Ingest maps them to a reason code and a metric label, so codes never change
once released.
"""

from __future__ import annotations

from typing import ClassVar


class FleetProcessingError(Exception):
    """Base of every error fleet_processing raises on bad input; ``code`` is stable."""

    code: ClassVar[str] = "processing_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class UnusableFeedError(FleetProcessingError):
    """A feed handed to ``build_network`` breaks the normalized-feed contract (a trip with no shape, …)."""

    code = "unusable_feed"


class UnknownTimezoneError(FleetProcessingError):
    """An agency's timezone is not an IANA name this machine's tz database knows."""

    code = "unknown_timezone"


class FixOrderError(FleetProcessingError):
    """The fixes of one bus in a batch are not in time order."""

    code = "fix_order"
