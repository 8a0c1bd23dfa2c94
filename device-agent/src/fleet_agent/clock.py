"""Fix-time sanity: GPS week-rollover correction and a bound on future times. Pure.

Receivers with old firmware count GPS weeks in 10 bits and report dates 1024
weeks (about 19.6 years) too early after a rollover: 1999 or 2006 for a 2026
fix. The agent adds whole 1024-week periods until the time is not before
``earliest_ms`` (the agent's release date). When the system clock looks set
(not before ``earliest_ms``), a corrected time must also be within
``max_skew_s`` of it; otherwise the fix is rejected.

A fix time more than ``future_tolerance_s`` ahead of the system clock is
never published: the server would reject it, and it would poison the live
position's ordering.
"""

from __future__ import annotations

from typing import Literal

import msgspec

GPS_ROLLOVER_MS = 1024 * 7 * 86_400 * 1000
AGENT_RELEASE_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: no fix this agent sees can be older."""

Verdict = Literal["ok", "rollover_corrected", "future", "implausible"]


class ClockPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[clock] in agent.toml."""

    future_tolerance_s: float = 120.0
    max_skew_s: float = 86_400.0
    earliest_ms: int = AGENT_RELEASE_MS


def check_fix_time(policy: ClockPolicy, fix_ms: int, system_ms: int) -> tuple[int | None, Verdict]:
    """The time to publish (None: reject the fix) and why."""
    system_trusted = system_ms >= policy.earliest_ms
    periods = max(0, -((fix_ms - policy.earliest_ms) // GPS_ROLLOVER_MS))
    corrected = fix_ms + periods * GPS_ROLLOVER_MS
    verdict: Verdict = "ok" if corrected == fix_ms else "rollover_corrected"
    if system_trusted:
        if verdict != "ok" and abs(corrected - system_ms) > policy.max_skew_s * 1000:
            return None, "implausible"
        if corrected > system_ms + policy.future_tolerance_s * 1000:
            return None, "future"
    elif corrected >= policy.earliest_ms + GPS_ROLLOVER_MS:
        return None, "implausible"
    return corrected, verdict
