"""``fleet geofences``: import an operator's fences from GeoJSON, list them, delete them.

The whole file is validated before anything is stored (``fleet_processing.fence_geojson``):
one bad feature refuses the import with its code, its place in the file and
why, and exit status 1.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg
import click
import msgspec

from fleet_cli.events_cli import check_operator
from fleet_ingest.fences import stored_fence
from fleet_processing.errors import InvalidFenceError
from fleet_processing.fence_geojson import fences_from_geojson, read_geojson
from fleet_store import stackfile
from fleet_store.errors import InvalidIdentifierError
from fleet_store.geofences import (
    delete_all_fences,
    delete_fences,
    import_fences,
    list_fences,
)
from fleet_store.settings import Settings

T = TypeVar("T")


def _note(line: str) -> None:
    click.echo(line, err=True)


def _on_database(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    from fleet_cli.cli import on_database

    return asyncio.run(on_database(stackfile.resolve_urls(settings).database_url, work))


@click.group(name="geofences")
def geofences() -> None:
    """Geofences: stations, depots, restricted zones, speed zones and border checkpoints, per operator.

    Drawn in any GIS tool as a GeoJSON FeatureCollection: Polygons and
    MultiPolygons as drawn, a Point with 'radius_m' (a circle), a LineString
    with 'buffer_m' (a corridor); every feature needs the properties 'id'
    and 'kind' (station, depot, restricted, speed_zone, border), and may have
    'name', 'dwell_s' and 'speed_limit_kmh'.

    \b
    Example:
      fleet geofences import fences.geojson --operator sogral
      fleet geofences list --operator sogral
      fleet geofences delete --operator sogral old-depot
    """


@geofences.command(name="import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--operator", default=None, help="operator id (default: the file's top-level 'operator' member)"
)
@click.option("--replace", is_flag=True, help="delete the operator's fences that the file does not have")
@click.option("--json", "as_json", is_flag=True, help="print the counts as JSON")
@click.pass_obj
def import_(settings: Settings, source: Path, operator: str | None, replace: bool, as_json: bool) -> None:
    """Validate a GeoJSON file and store its fences as the operator's, in one transaction.

    A fence already stored under the same id is updated; one that is the same
    is left as it was. A file with one bad feature stores nothing: the error
    names the feature (its index in 'features' and its id) and what is wrong.

    \b
    Example:
      fleet geofences import devtools/src/fleet_devtools/data/feeds/algeria/geofences.geojson
      fleet geofences import stations.geojson --operator sogral --replace --json
    """
    try:
        document = read_geojson(source.read_bytes())
        if isinstance(document, dict) and isinstance(document.get("features"), list):
            _note(f"geofences: {source}: checking {len(document['features']):,} features")
        owner = check_operator(operator if operator is not None else _named_operator(document))
        fences = fences_from_geojson(owner, document)
    except InvalidFenceError as exc:
        _refuse(exc)
    _note(f"geofences: {source}: {len(fences):,} fences valid")
    counts = _on_database(
        settings, lambda conn: import_fences(conn, owner, [stored_fence(f) for f in fences], replace=replace)
    )
    if as_json:
        click.echo(msgspec.json.encode(counts).decode())
        return
    click.echo(
        f"{owner}: {len(fences)} fences imported ({counts.added} added, {counts.changed} changed,"
        f" {counts.unchanged} unchanged, {counts.removed} removed)"
    )


def _named_operator(document: Any) -> str:
    named = document.get("operator") if isinstance(document, dict) else None
    if not isinstance(named, str):
        raise InvalidIdentifierError("say which operator with --operator (the file has no 'operator' member)")
    return named


def _refuse(error: InvalidFenceError) -> NoReturn:
    click.echo(f"error [{error.code}]: {error.located}", err=True)
    sys.exit(1)


@geofences.command(name="list")
@click.option("--operator", default=None, help="only this operator's fences")
@click.option("--json", "as_json", is_flag=True, help="every fence with its geometry and properties, as JSON")
@click.pass_obj
def list_(settings: Settings, operator: str | None, as_json: bool) -> None:
    """List the fences stored, by operator and id.

    \b
    Example:
      fleet geofences list --operator sogral
      fleet geofences list --json > all-fences.json
    """
    rows = _on_database(settings, lambda conn: list_fences(conn, operator))
    if as_json:
        click.echo(msgspec.json.encode(rows).decode())
        return
    if not rows:
        click.echo("no geofences")
        return
    click.echo(f"{'OPERATOR':<16} {'FENCE':<24} {'KIND':<11} {'DWELL':>7} {'LIMIT':>9}  UPDATED  NAME")
    for row in rows:
        dwell = "" if row.dwell_s is None else f"{row.dwell_s:.0f} s"
        limit = "" if row.speed_limit_mps is None else f"{row.speed_limit_mps * 3.6:.0f} km/h"
        updated = datetime.fromtimestamp(row.updated_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        where = f"{row.operator:<16} {row.fence_id:<24} {row.kind:<11}"
        click.echo(f"{where} {dwell:>7} {limit:>9}  {updated}  {row.name}")


@geofences.command(name="delete")
@click.option("--operator", required=True, help="whose fences")
@click.option("--all", "everything", is_flag=True, help="delete every fence of the operator")
@click.argument("fence_ids", nargs=-1)
@click.pass_obj
def delete(settings: Settings, operator: str, everything: bool, fence_ids: tuple[str, ...]) -> None:
    """Delete some fences of an operator (all of them or none), or all with --all.

    A bus inside a deleted fence gets no exit event: the fence is gone, the bus did not move.

    \b
    Example:
      fleet geofences delete --operator sogral old-depot works-2026
      fleet geofences delete --operator sogral --all
    """
    if everything == bool(fence_ids):
        raise click.UsageError("give fence ids or --all, not both and not neither")
    if everything:
        deleted = _on_database(settings, lambda conn: delete_all_fences(conn, operator))
    else:
        deleted = _on_database(settings, lambda conn: delete_fences(conn, operator, fence_ids))
    click.echo(f"{operator}: {deleted} fences deleted")
