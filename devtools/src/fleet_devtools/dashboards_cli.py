"""``fleet dashboards``: write (or check) the committed Grafana dashboards."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleet_devtools.dashboards import build_all

DEFAULT_DIR = Path("dashboards/grafana")


@click.group(name="dashboards")
def dashboards_group() -> None:
    """The Grafana dashboards in dashboards/grafana, generated from fleet_devtools.dashboards.

    \b
    Example:
      fleet dashboards build            # after changing a panel; commit the JSON
      fleet dashboards build --check    # exit 1 if the committed JSON is stale
    """


@dashboards_group.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="folder of the JSON files",
)
@click.option("--check", is_flag=True, help="write nothing; exit 1 if a file differs from what is generated")
def build(out: Path, check: bool) -> None:
    """Generate every dashboard's JSON into OUT (one file per dashboard, named by its uid).

    \b
    Example:
      fleet dashboards build --out dashboards/grafana
    """
    generated = build_all()
    stale = sorted(
        name
        for name, text in generated.items()
        if not (out / name).exists() or (out / name).read_text() != text
    )
    extra = sorted(p.name for p in out.glob("*.json") if p.name not in generated) if out.exists() else []
    if check:
        for name in stale:
            click.echo(f"stale: {out / name}", err=True)
        for name in extra:
            click.echo(f"not generated: {out / name}", err=True)
        if stale or extra:
            sys.exit(1)
        click.echo(f"{len(generated)} dashboards up to date in {out}", err=True)
        return
    out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (out / name).write_text(generated[name])
        click.echo(f"wrote {out / name}", err=True)
    for name in extra:
        (out / name).unlink()
        click.echo(f"removed {out / name} (no longer generated)", err=True)
    click.echo(f"{len(generated)} dashboards in {out}, {len(stale)} rewritten", err=True)
