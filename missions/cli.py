"""``dustpatrol plan``: plan a patrol over a site registry and write every mission format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from geo.sites import load_sites
from missions.files import write_plan_files
from missions.model import (
    CAMERAS,
    DroneProfile,
    LaunchPoint,
    PlanningError,
    SiteMode,
    SurveySettings,
)
from missions.planner import plan_patrol


def plan_command(
    sites_file: Annotated[
        Path, typer.Argument(help="Site registry (any format `sites check` reads).")
    ],
    launch: Annotated[
        list[str],
        typer.Option(
            help="Launch point LAT,LON[,ALT] (ALT: ground height AMSL, m, written as the "
            "plan's home altitude); repeat for several."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for the mission files.")],
    drones: Annotated[int, typer.Option(min=1, max=50, help="Drones in the fleet.")] = 1,
    altitude: Annotated[
        float, typer.Option(help="Height above the launch point, m (max 120).")
    ] = 100.0,
    front_overlap: Annotated[float, typer.Option(help="Front overlap, 0..0.95.")] = 0.75,
    side_overlap: Annotated[float, typer.Option(help="Side overlap, 0..0.95.")] = 0.65,
    camera: Annotated[str, typer.Option(help=f"Camera: {', '.join(CAMERAS)}.")] = "m3e",
    check: Annotated[
        list[str] | None, typer.Option(help="Site id to check (oblique shots) instead of survey.")
    ] = None,
    no_fly: Annotated[
        Path | None, typer.Option(help="Polygons nobody may fly into (any vector format).")
    ] = None,
    crs: Annotated[
        str | None, typer.Option(help="CRS of the sites file if it has none (EPSG:xxxx or gcj02).")
    ] = None,
    solver_seconds: Annotated[
        float,
        typer.Option(help="Seconds the planning may take (the route search gets what is left)."),
    ] = 5.0,
    flight_minutes: Annotated[
        float, typer.Option(help="Battery flight time per drone, minutes.")
    ] = 40.0,
) -> None:
    """Plan sorties for every site and write .plan, .waypoints, .kml and DJI .kmz files."""
    if camera not in CAMERAS:
        raise PlanningError(f"unknown camera {camera!r}; choose one of {', '.join(CAMERAS)}")
    registry = load_sites(sites_file, crs=crs)
    if registry.report.rejected:
        raise PlanningError(
            f"{sites_file}: {len(registry.report.rejected)} site(s) rejected; run "
            f"`dustpatrol sites check {sites_file}` and fix them first"
        )
    zones = list(load_sites(no_fly).sites.geometry) if no_fly is not None else []
    settings = SurveySettings(CAMERAS[camera], altitude, front_overlap, side_overlap)
    fleet = [DroneProfile(flight_time_s=flight_minutes * 60.0)] * drones
    modes = dict.fromkeys(check or [], SiteMode.CHECK)
    launch_points = [LaunchPoint.parse(text) for text in launch]
    plan = plan_patrol(
        registry.sites,
        launch_points,
        fleet,
        settings,
        no_fly=zones,
        modes=modes,
        solver_time_s=solver_seconds,
    )
    written = write_plan_files(plan, out)
    console = Console(soft_wrap=True)
    table = Table(title=f"patrol over {len(registry.sites)} sites")
    for column in ("sortie", "sites", "distance km", "time min", "battery %", "frames"):
        table.add_column(column)
    for sortie in plan.sorties:
        table.add_row(
            sortie.name,
            ", ".join(
                v.site_id if v.parts == 1 else f"{v.site_id}({v.part}/{v.parts})"
                for v in sortie.visits
            ),
            f"{sortie.distance_m / 1000:.1f}",
            f"{sortie.duration_s / 60:.1f}",
            f"{sortie.battery_fraction * 100:.0f}",
            str(sortie.expected_frames),
        )
    console.print(table)
    surveyed = [share for site, share in plan.coverage.items() if site not in modes]
    lowest = min(surveyed, default=0.0)
    console.print(
        f"{len(plan.sorties)} sorties, {plan.total_duration_s / 3600:.2f} h flight time, "
        f"{plan.expected_frames} frames, lowest survey coverage {lowest * 100:.1f} %"
    )
    for dropped in plan.dropped:
        console.print(f"[yellow]dropped[/] {dropped.site_id}: {dropped.reason}")
    if any(point.amsl_m is None for point in launch_points):
        console.print(
            "[yellow]launch altitude not given[/]: the files carry a home altitude of 0 m AMSL; "
            "give --launch LAT,LON,ALT so ground stations show the home at its real height"
        )
    console.print(f"{len(written)} files written to {out}")
