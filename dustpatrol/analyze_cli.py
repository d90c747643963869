"""``dustpatrol analyze``: a folder of frames and a site registry in, findings out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dustpatrol.client import open_flight
from dustpatrol.pipeline import analyze_frames, frame_files, site_status
from dustpatrol.progress import progress_bar
from geo.matching import findings_geojson
from geo.mrk import MrkPositions
from geo.sites import load_sites
from vision.detect import Detector


def analyze_command(
    ctx: typer.Context,
    frames: Annotated[Path, typer.Argument(help="Folder of JPEG frames (an SD card offload).")],
    sites: Annotated[Path, typer.Option("--sites", help="Site registry (GeoJSON, KML, ...).")],
    out: Annotated[Path, typer.Option("--out", help="Findings GeoJSON to write.")] = Path(
        "findings.geojson"
    ),
    model: Annotated[Path | None, typer.Option(help="ONNX model (default: settings).")] = None,
    gsd: Annotated[
        float | None, typer.Option(help="Analysis resolution, m/px (default: settings).")
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(
            help="Upload frames and findings to the notice service at this URL (API key: "
            "client.api_key, env DUSTPATROL_CLIENT__API_KEY)."
        ),
    ] = None,
    flight_name: Annotated[
        str | None, typer.Option(help="Name of the flight on the service (default: the folder).")
    ] = None,
) -> None:
    """Detect exposed soil, road dust and dust-net cover in frames and match them to sites."""
    from dustpatrol.cli import cli_state

    settings = cli_state(ctx).settings
    paths = frame_files(frames)
    registry = load_sites(sites)
    upload = open_flight(api, settings, flight_name or frames.resolve().name) if api else None
    detector = Detector(
        model or settings.detection.model_path,
        threads=settings.detection.threads,
        conf=settings.detection.min_confidence,
        overlap=settings.detection.tile_overlap,
    )
    console = Console(stderr=True)
    whose = "set for all" if settings.detection.min_confidence is not None else "the model's own"
    shown = ", ".join(f"{name} > {value:g}" for name, value in detector.thresholds.items())
    console.print(f"detector {detector.model.path.name}: confidence {shown} ({whose})")
    positions = None
    if any(p.suffix.lower() == ".mrk" for p in frames.iterdir()):
        positions = MrkPositions.for_folder(frames)
        for problem in positions.problems:
            console.print(f"[yellow]MRK not used[/] {problem}")
    with progress_bar(console) as progress:
        task = progress.add_task("analysing frames", total=len(paths))

        def on_frame(path: Path) -> None:
            if upload is not None:
                upload.frame(path)  # as soon as it is analysed: the service sees progress
            progress.advance(task)

        result = analyze_frames(
            paths,
            registry.sites,
            detector,
            target_gsd_m=gsd or settings.detection.target_gsd_m,
            tolerance_floor_m=settings.georeferencing.match_tolerance_m,
            quality=settings.quality,
            positions=positions,
            sites_only=settings.detection.sites_only,
            vote_share=settings.georeferencing.merge_vote_share,
            vote_max_uncertainty_m=settings.georeferencing.merge_vote_max_uncertainty_m,
            on_frame=on_frame,
        )
    minimum = settings.quality.min_site_coverage
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(findings_geojson(result.findings), indent=1), encoding="utf-8")
    coverage_path = out.with_suffix(".coverage.json")
    coverage_path.write_text(
        json.dumps(
            {
                "frames_analysed": result.frames_analysed,
                "rejected": [{"frame": r.frame_id, "reason": r.reason} for r in result.rejected],
                "placed_by_mrk": result.placed_by_mrk,
                "not_in_mrk": result.not_in_mrk,
                "sites": [
                    {
                        "site_id": c.site_id,
                        "status": site_status(c, result.findings, minimum),
                        "coverage": round(c.coverage_ratio, 4),
                        "exposed_soil_m2": round(c.exposed_soil_m2, 2),
                        "covered_soil_m2": round(c.covered_soil_m2, 2),
                    }
                    for c in result.coverage
                ],
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    table = Table(title=f"{len(result.findings)} findings in {result.frames_analysed} frames")
    for column in ("site", "status", "seen", "exposed soil m²", "covered soil m²", "road dust"):
        table.add_column(column)
    dust: dict[str | None, int] = {}
    for finding in result.findings:
        if finding.class_name == "road_dust":
            dust[finding.site_id] = dust.get(finding.site_id, 0) + 1
    for c in result.coverage:
        if c.seen_m2 <= 0:
            continue
        table.add_row(
            c.site_id,
            site_status(c, result.findings, minimum),
            f"{c.coverage_ratio:.0%}",
            f"{c.exposed_soil_m2:.0f}",
            f"{c.covered_soil_m2:.0f}",
            str(dust.get(c.site_id, 0)),
        )
    Console(highlight=False).print(table)
    for rejected in result.rejected:
        console.print(f"[yellow]rejected[/] {rejected.frame_id}: {rejected.reason}")
    if positions is not None:
        names = ", ".join(p.name for p in positions.files)
        typer.echo(f"{names}: {result.placed_by_mrk} frames placed by its RTK positions")
        if result.not_in_mrk:
            shown = ", ".join(result.not_in_mrk[:10])
            more = f" and {len(result.not_in_mrk) - 10} more" if len(result.not_in_mrk) > 10 else ""
            console.print(
                f"[yellow]not in the MRK[/] {len(result.not_in_mrk)} frames placed by their "
                f"EXIF/XMP instead: {shown}{more}"
            )
    typer.echo(f"findings: {out}\ncoverage: {coverage_path}")
    if upload is not None:
        for failure in upload.failed:
            console.print(f"[yellow]not uploaded[/] {failure}")
        ingested = upload.findings(findings_geojson(result.findings))
        typer.echo(
            f"uploaded to {upload.client.base_url}: flight {upload.flight_id}, "
            f"{ingested['created']} new findings, notices issued: "
            f"{', '.join(ingested['notices_issued']) or 'none (analyst confirmation pending)'}"
        )
