"""Per-route corridor thresholds (``route_policies``, migration 012).

An intercity route through mountains or a town with a ring road may need a
wider (or narrower) corridor than the detector's default. Ingest loads the
rows into ``DetectorPolicy.deviation_by_route`` (``fleet_ingest.detectors``);
``fleet routes deviation`` sets, lists and clears them. The database checks the hysteresis
too, but the error here says what is wrong in words.
"""

from __future__ import annotations

import math

import asyncpg
import msgspec

from fleet_store.errors import FleetError

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class InvalidRoutePolicyError(FleetError):
    """Thresholds that cannot work: not positive, or the return one not below the leave one."""

    code = "invalid_route_policy"


class RoutePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """One route's corridor: leaving it beyond ``leave_m``, back in it under ``return_m``."""

    operator: str
    route_id: str
    deviation_leave_m: float
    deviation_return_m: float
    updated_ms: int = 0


def check_limits(leave_m: float, return_m: float) -> None:
    """Raise InvalidRoutePolicyError unless ``0 < return_m < leave_m`` (both finite)."""
    if not (math.isfinite(leave_m) and math.isfinite(return_m)) or return_m <= 0:
        raise InvalidRoutePolicyError(f"thresholds must be positive metres, got {leave_m} and {return_m}")
    if return_m >= leave_m:
        raise InvalidRoutePolicyError(
            f"the return threshold ({return_m} m) must be below the leave threshold ({leave_m} m):"
            " that gap is the hysteresis that keeps noise from raising deviations"
        )


async def set_route_policy(
    conn: Connection, operator: str, route_id: str, leave_m: float, return_m: float
) -> None:
    """Set (or replace) one route's thresholds."""
    check_limits(leave_m, return_m)
    await conn.execute(
        "INSERT INTO route_policies (operator, route_id, deviation_leave_m, deviation_return_m)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (operator, route_id) DO UPDATE SET"
        " deviation_leave_m = excluded.deviation_leave_m,"
        " deviation_return_m = excluded.deviation_return_m, updated_at = now()",
        operator,
        route_id,
        leave_m,
        return_m,
    )


async def clear_route_policy(conn: Connection, operator: str, route_id: str) -> bool:
    """Remove one route's thresholds (it falls back to the default); False if it had none."""
    status = await conn.execute(
        "DELETE FROM route_policies WHERE operator = $1 AND route_id = $2", operator, route_id
    )
    return status != "DELETE 0"


async def list_route_policies(conn: Connection, operator: str | None = None) -> list[RoutePolicy]:
    """Every route's thresholds (of one operator if given), by operator and route."""
    rows = await conn.fetch(
        "SELECT operator, route_id, deviation_leave_m, deviation_return_m,"
        " (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms"
        " FROM route_policies WHERE $1::text IS NULL OR operator = $1 ORDER BY operator, route_id",
        operator,
    )
    return [RoutePolicy(**dict(r)) for r in rows]
