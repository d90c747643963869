"""``dustpatrol evaluate``: a flight's findings against the simulated district's truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dustpatrol.errors import DustpatrolError
from dustpatrol.settings import Settings


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "—" if value is None else pattern.format(value)


def markdown_report(report: dict[str, Any], findings: Path, world: Path) -> str:
    sites = report["sites"]
    lines = [
        f"# Findings against the simulated truth\n\nfindings `{findings}`, district `{world}`\n",
        "| sites evaluated | violating | reported | found | false alarms | precision | recall |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {sites['evaluated']} | {sites['violating']} | {sites['reported']} | "
        f"{sites['true_positive']} | {sites['false_positive']} | {_fmt(sites['precision'])} | "
        f"{_fmt(sites['recall'])} |\n",
        "| class | sites with it (truth) | sites with it (found) | median IoU | "
        "median area error | median position error (placed patches) | site centroid offset |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figures in report["classes"].items():
        lines.append(
            f"| {name} | {figures['site_classes_true']} | {figures['site_classes_found']} | "
            f"{_fmt(figures['median_iou'])} | {_fmt(figures['median_area_error'], '{:.1%}')} | "
            f"{_fmt(figures['median_position_error_m'], '{:.2f} m')} "
            f"({figures['placed_patches']}) | "
            f"{_fmt(figures['median_centroid_offset_m'], '{:.2f} m')} |"
        )
    lines.append(
        f"\nProblem findings outside every site: {report['off_site_problem_findings']}. "
        f"Missed sites: {', '.join(sites['missed']) or 'none'}; false alarms: "
        f"{', '.join(sites['false_alarms']) or 'none'}."
    )
    return "\n".join(lines) + "\n"


def evaluate_command(
    ctx: typer.Context,
    findings: Annotated[
        Path | None,
        typer.Argument(help="Findings GeoJSON (from `analyze` or the service), with --world."),
    ] = None,
    world: Annotated[
        Path | None, typer.Option("--world", help="The simulated district's folder.")
    ] = None,
    sites: Annotated[
        str | None, typer.Option(help="Only these sites, e.g. S0001,S0004 (default: all).")
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Instead of FINDINGS: survey these districts (e.g. 9001-9003, never trained "
            "on), analyse and score them per position mode."
        ),
    ] = None,
    modes: Annotated[
        str, typer.Option(help="Position modes with --seeds: rtk_fixed,rtk_float,single or all.")
    ] = "all",
    sites_per_district: Annotated[
        int, typer.Option(help="Sites in each district surveyed with --seeds.")
    ] = 20,
    render_scale: Annotated[
        float, typer.Option(help="Frame size with --seeds, as a share of the 20 MP frame.")
    ] = 0.25,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the reports (default var/evaluation/findings or var/evaluation/modes)."
        ),
    ] = None,
) -> None:
    """Score findings against the simulated truth: site precision and recall, patch IoU, area
    and position error. Either FINDINGS --world W, or --seeds to fly simulated surveys of
    districts in each position mode (RTK fixed, float, single) and score each."""
    from dustpatrol.cli import cli_state

    settings = cli_state(ctx).settings
    if seeds is not None:
        if findings is not None or world is not None or sites is not None:
            raise DustpatrolError(
                "give either FINDINGS with --world (score a flight's findings) or --seeds "
                "(survey simulated districts), not both"
            )
        _evaluate_modes(settings, seeds, modes, sites_per_district, render_scale, out)
        return
    if findings is None or world is None:
        raise DustpatrolError(
            "give FINDINGS and --world (a flight's findings and its simulated district), or "
            "--seeds 9001-9003 to survey districts in each position mode"
        )
    _evaluate_flight(settings, findings, world, sites, out or Path("var/evaluation/findings"))


def _evaluate_modes(
    settings: Settings,
    seeds: str,
    modes: str,
    sites_per_district: int,
    render_scale: float,
    out: Path | None,
) -> None:
    from dustpatrol.pipeline import shared_detector
    from dustpatrol.survey_eval import SurveyEvalSpec, evaluate_surveys, parse_modes
    from dustpatrol.training import parse_seeds

    spec = SurveyEvalSpec(
        seeds=parse_seeds(seeds),
        out=out or Path("var/evaluation/modes"),
        modes=parse_modes(modes),
        n_sites=sites_per_district,
        render_scale=render_scale,
    )
    spec.validate()
    console = Console(stderr=True, highlight=False)
    result = evaluate_surveys(spec, settings, shared_detector(settings.detection), console.print)
    table = Table(title="per position mode, over all districts")
    for column in ("mode", "violating", "found", "false alarms", "recall", "precision",
                   "soil IoU", "area error", "position error"):  # fmt: skip
        table.add_column(column)
    for mode, report in result["modes"].items():
        figures, soil = report["sites"], report["classes"]["exposed_soil"]
        table.add_row(
            mode,
            str(figures["violating"]),
            str(figures["true_positive"]),
            str(figures["false_positive"]),
            _fmt(figures["recall"]),
            _fmt(figures["precision"]),
            _fmt(soil["median_iou"]),
            _fmt(soil["median_area_error"], "{:.1%}"),
            _fmt(soil["median_position_error_m"], "{:.2f} m"),
        )
    Console(highlight=False, width=max(120, Console().width)).print(table)
    typer.echo(f"report: {spec.out / 'report.md'}, {spec.out / 'report.json'}, plots beside")


def _evaluate_flight(
    settings: Settings, findings: Path, world: Path, sites: str | None, out: Path
) -> None:
    from dustpatrol.findings_eval import evaluate_findings
    from sim.export import load_district

    try:
        collection = json.loads(findings.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DustpatrolError(f"{findings} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DustpatrolError(f"{findings} is not JSON ({exc})") from None
    if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
        raise DustpatrolError(f"{findings} is not a GeoJSON FeatureCollection of findings")
    district = load_district(world)
    chosen = [s.strip() for s in sites.split(",")] if sites else None
    if chosen:
        unknown = sorted(set(chosen) - {s.site_id for s in district.sites})
        if unknown:
            raise DustpatrolError(f"no site {', '.join(unknown)} in the district at {world}")
    report = evaluate_findings(collection, district, settings, chosen)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "report.md").write_text(markdown_report(report, findings, world), encoding="utf-8")
    figures = report["sites"]
    table = Table(title="violations per site")
    for column in ("violating", "found", "false alarms", "precision", "recall"):
        table.add_column(column)
    table.add_row(
        str(figures["violating"]),
        str(figures["true_positive"]),
        str(figures["false_positive"]),
        _fmt(figures["precision"]),
        _fmt(figures["recall"]),
    )
    Console(highlight=False).print(table)
    typer.echo(f"report: {out / 'report.md'}, {out / 'report.json'}")
