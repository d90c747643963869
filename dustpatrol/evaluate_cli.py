"""``dustpatrol evaluate``: a flight's findings against the simulated district's truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dustpatrol.errors import DustpatrolError


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
        "median area error | median position error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, figures in report["classes"].items():
        lines.append(
            f"| {name} | {figures['site_classes_true']} | {figures['site_classes_found']} | "
            f"{_fmt(figures['median_iou'])} | {_fmt(figures['median_area_error'], '{:.1%}')} | "
            f"{_fmt(figures['median_position_error_m'], '{:.2f} m')} |"
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
        Path, typer.Argument(help="Findings GeoJSON (from `analyze` or the service).")
    ],
    world: Annotated[Path, typer.Option("--world", help="The simulated district's folder.")],
    sites: Annotated[
        str | None, typer.Option(help="Only these sites, e.g. S0001,S0004 (default: all).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.json and report.md.")] = Path(
        "var/evaluation/findings"
    ),
) -> None:
    """Site precision and recall, patch IoU, area and position error against the truth."""
    from dustpatrol.cli import cli_state
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
    report = evaluate_findings(collection, district, cli_state(ctx).settings, chosen)
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
