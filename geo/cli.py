"""``dustpatrol sites``: check a site registry file before importing it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from geo.sites import SiteRegistryError, format_report, load_sites

sites_app = typer.Typer(
    help="Site registries: check (import comes with the API).", no_args_is_help=True
)


@sites_app.command("check")
def check_command(
    file: Annotated[
        Path, typer.Argument(help="GeoJSON, KML/KMZ, Shapefile (.shp/.zip), GeoPackage or CSV.")
    ],
    crs: Annotated[
        str | None,
        typer.Option(help="CRS of the coordinates if the file has none: EPSG:xxxx, or gcj02."),
    ] = None,
    id_field: Annotated[str | None, typer.Option(help="Attribute holding the site id.")] = None,
    encoding: Annotated[str | None, typer.Option(help="Attribute text encoding, e.g. gbk.")] = None,
) -> None:
    """Load FILE, repair what can be repaired and report what cannot; exit 1 if any feature
    was rejected or no site was found."""
    registry = load_sites(file, crs=crs, id_field=id_field, encoding=encoding)
    typer.echo(format_report(registry.report))
    if not registry.report.ok:
        raise SiteRegistryError(
            f"{file}: {len(registry.report.rejected)} feature(s) rejected, "
            f"{registry.report.loaded} loaded; fix the features listed above"
        )
