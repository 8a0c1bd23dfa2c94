"""``fleet routes``: per-route settings of the detectors, for now the corridor deviation thresholds."""

from __future__ import annotations

import click
import msgspec

from fleet_cli.database import run_on_database
from fleet_store.route_policies import (
    check_limits,
    clear_route_policy,
    list_route_policies,
    set_route_policy,
)
from fleet_store.settings import Settings


@click.group(name="routes")
def routes() -> None:
    """Per-route detector settings (GTFS route_id of the operator's feed).

    \b
    Example:
      fleet routes deviation set --operator sogral --route R-ALG-ORN --leave-m 3000 --return-m 2200
    """


@routes.group(name="deviation")
def deviation() -> None:
    """Corridor thresholds of a route, instead of the default (leave at 2 km, back under 1.5 km).

    Ingest reads them when it loads the operator's feed; a bus already off
    its corridor keeps the state it has.

    \b
    Example:
      fleet routes deviation set --operator sogral --route R-ALG-ORN --leave-m 3000 --return-m 2200
      fleet routes deviation list --operator sogral
      fleet routes deviation clear --operator sogral --route R-ALG-ORN
    """


@deviation.command(name="set")
@click.option("--operator", required=True)
@click.option("--route", "route_id", required=True, help="GTFS route_id")
@click.option(
    "--leave-m", type=float, required=True, help="a bus further than this (m) is leaving its corridor"
)
@click.option("--return-m", type=float, required=True, help="and back in it under this (m); below --leave-m")
@click.pass_obj
def set_deviation(settings: Settings, operator: str, route_id: str, leave_m: float, return_m: float) -> None:
    """Set (or replace) a route's corridor thresholds, in metres.

    \b
    Example:
      fleet routes deviation set --operator sogral --route R-ALG-ORN --leave-m 3000 --return-m 2200
    """
    check_limits(leave_m, return_m)
    run_on_database(settings, lambda conn: set_route_policy(conn, operator, route_id, leave_m, return_m))
    click.echo(f"route {route_id} of {operator}: deviation from {leave_m:g} m, back under {return_m:g} m")


@deviation.command(name="list")
@click.option("--operator", default=None, help="default: every operator")
@click.option("--json", "as_json", is_flag=True, help="print the rows as a JSON array")
@click.pass_obj
def list_deviation(settings: Settings, operator: str | None, as_json: bool) -> None:
    """List the routes with their own corridor thresholds.

    \b
    Example:
      fleet routes deviation list --operator sogral --json
    """
    policies = run_on_database(settings, lambda conn: list_route_policies(conn, operator))
    if as_json:
        click.echo(msgspec.json.encode(policies).decode())
        return
    for p in policies:
        click.echo(
            f"{p.operator:<14} {p.route_id:<24}"
            f" leave {p.deviation_leave_m:>8g} m  return {p.deviation_return_m:>8g} m"
        )
    click.echo(f"{len(policies)} routes with their own thresholds; the others use the default", err=True)


@deviation.command(name="clear")
@click.option("--operator", required=True)
@click.option("--route", "route_id", required=True, help="GTFS route_id")
@click.pass_obj
def clear_deviation(settings: Settings, operator: str, route_id: str) -> None:
    """Remove a route's thresholds: it goes back to the default.

    \b
    Example:
      fleet routes deviation clear --operator sogral --route R-ALG-ORN
    """
    cleared = run_on_database(settings, lambda conn: clear_route_policy(conn, operator, route_id))
    click.echo(
        f"route {route_id} of {operator}: " + ("back to the default" if cleared else "had no thresholds")
    )
