"""``dustpatrol demo``: the whole loop on a simulated district (see dustpatrol.demo)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def demo_command(
    ctx: typer.Context,
    seed: Annotated[int, typer.Option(help="District seed (another seed, another district).")] = 7,
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path(
        "var/demo"
    ),
    sites: Annotated[int, typer.Option(help="Sites in the district.")] = 20,
    port: Annotated[int, typer.Option(help="Port of the service on 127.0.0.1.")] = 8000,
    speedup: Annotated[float, typer.Option(help="Simulated seconds per wall second.")] = 40.0,
    serve: Annotated[
        bool, typer.Option(help="Keep the service running at the end (Ctrl-C stops it).")
    ] = True,
) -> None:
    """Plan, fly, detect, notify, rectify and verify on a simulated district, end to end."""
    from dustpatrol.cli import cli_state
    from dustpatrol.demo import DemoSpec, run_demo

    console = Console(highlight=False)
    started = time.monotonic()
    spec = DemoSpec(seed=seed, out=out, n_sites=sites, port=port, speedup=speedup)
    result, service = run_demo(spec, cli_state(ctx).settings, console.print)
    try:
        sites_eval = result.evaluation["sites"]
        console.print(f"\n[bold]done in {time.monotonic() - started:.0f} s[/]")
        console.print(f"map:      {result.base_url}/map")
        console.print(f"API docs: {result.base_url}/docs")
        console.print("logins:   " + ", ".join(f"{u} / {p}" for u, p in result.logins.items()))
        console.print(
            f"notices:  {len(result.notices_issued)} issued, {len(result.notices_closed)} "
            f"closed after verification, {len(result.notices_reopened)} back to the bureau"
        )
        for pdf in result.pdfs:
            console.print(f"          {pdf}")
        for report in result.reports:
            console.print(f"patrol report: {report}")
        console.print(
            f"patrol 1 against the truth: {sites_eval['violating']} violating sites, "
            f"{sites_eval['true_positive']} found, {sites_eval['false_positive']} false alarms "
            f"(report: {out / 'evaluation.json'})"
        )
        checked = result.evaluation["verification"]
        console.print(
            f"verification against the truth: {len(checked['sent_back_rightly'])} of "
            f"{checked['not_rectified']} unrectified notices back to the bureau, "
            f"{len(checked['sent_back_wrongly'])} of {checked['rectified']} rectified ones "
            "back on a false alarm"
        )
        if serve:
            console.print("\nthe service keeps running; Ctrl-C stops it")
            while service.thread.is_alive():
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
