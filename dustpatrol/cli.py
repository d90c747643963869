"""The ``dustpatrol`` command line.

Each package contributes its own sub-command group; this module wires them together,
configures logging (the only place that does) and turns known errors into one clear line
and a non-zero exit code (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from typer.core import TyperGroup

from api.cli import import_sites_command, serve_command, users_app, worker_command
from api.errors import ApiError
from dustpatrol import __version__
from dustpatrol.analyze_cli import analyze_command
from dustpatrol.demo_cli import demo_command
from dustpatrol.doctor import CheckStatus, run_checks
from dustpatrol.errors import ConfigError, DustpatrolError
from dustpatrol.evaluate_cli import evaluate_command
from dustpatrol.fly_cli import fly_command
from dustpatrol.settings import Settings, load_settings, masked_settings
from dustpatrol.train_cli import train_app
from geo.cli import sites_app
from geo.errors import GeoError
from missions.cli import plan_command
from missions.errors import MissionError
from sim.cli import sim_app
from sim.errors import SimError
from vision.errors import VisionError

EXIT_ERROR = 1
EXIT_CONFIG = 3

USER_FACING_ERRORS: tuple[type[BaseException], ...] = (
    DustpatrolError,
    GeoError,
    VisionError,
    MissionError,
    SimError,
    ApiError,
    OSError,
)

log = logging.getLogger("dustpatrol")


@dataclass(slots=True)
class CliState:
    """What the top-level options decided, shared with every sub-command."""

    config_file: Path | None = None
    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """The effective settings, loaded on first use so ``--help`` works with a bad config."""
        if self._settings is None:
            self._settings = load_settings(self.config_file)
        return self._settings


def cli_state(ctx: typer.Context) -> CliState:
    """The `CliState` of the running command (sub-command modules use this)."""
    root = ctx.find_root()
    state = root.obj
    if not isinstance(state, CliState):
        state = CliState()
        root.obj = state
    return state


class _ErrorReportingGroup(TyperGroup):
    """Turns known errors into one line on stderr and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except USER_FACING_ERRORS as exc:
            state = ctx.obj if isinstance(ctx.obj, CliState) else CliState()
            if state.debug:
                raise
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                f"[bold red]error:[/] {_one_line(exc)}", markup=True
            )
            code = EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_ERROR
            raise typer.Exit(code) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    return " ".join(text.split())


app = typer.Typer(
    name="dustpatrol",
    cls=_ErrorReportingGroup,
    help="Drone environmental inspection: plan, fly, detect, locate, notify, verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _configure_logging(verbose: int, quiet: bool) -> None:
    if quiet:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=True)
    logging.basicConfig(level=level, handlers=[handler], format="%(message)s", force=True)


@app.callback()
def _main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML settings file (default: $DUSTPATROL_CONFIG, else built-in defaults).",
            dir_okay=False,
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """Drone environmental inspection: plan, fly, detect, locate, notify, verify."""
    _configure_logging(verbose, quiet)
    ctx.obj = CliState(config_file=config, debug=debug)


@app.command()
def version() -> None:
    """Print the dustpatrol version."""
    typer.echo(f"dustpatrol {__version__}")


class OutputFormat(StrEnum):
    TOML = "toml"
    JSON = "json"


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="Output format.")
    ] = OutputFormat.TOML,
) -> None:
    """Print the effective settings (defaults < config file < environment), secrets masked."""
    data = masked_settings(cli_state(ctx).settings)
    if output_format is OutputFormat.JSON:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        typer.echo(_to_toml(data))


def _to_toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        nested: list[tuple[str, dict[str, Any]]] = []
        for key, value in values.items():
            if isinstance(value, dict):
                nested.append((key, value))
            elif value is None:
                lines.append(f"# {key} is not set")
            else:
                lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        for key, table in nested:
            lines.append(f"\n[{section}.{key}]")
            lines.extend(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in table.items())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


@app.command()
def doctor(ctx: typer.Context) -> None:
    """Check this installation: Python, packages, settings, data folder, database and model."""
    console = Console(highlight=False, soft_wrap=True)
    results = run_checks(cli_state(ctx).config_file)
    marks = {CheckStatus.OK: "[green]ok[/]", CheckStatus.WARN: "[yellow]warn[/]"}
    marks[CheckStatus.FAIL] = "[red]FAIL[/]"
    for result in results:
        console.print(f"{marks[result.status]:>14}  [bold]{result.name}[/]: {result.detail}")
        if result.fix and result.status is not CheckStatus.OK:
            console.print(f"{'':>6}  fix: {result.fix}")
    failed = [r for r in results if r.status is CheckStatus.FAIL]
    if failed:
        console.print(f"\n{len(failed)} check(s) failed.")
        raise typer.Exit(EXIT_ERROR)
    console.print("\nAll required checks passed.")


app.add_typer(sim_app, name="sim")
app.add_typer(train_app, name="train")
app.add_typer(sites_app, name="sites")
app.command("plan")(plan_command)
app.command("fly")(fly_command)
app.command("analyze")(analyze_command)
app.command("demo")(demo_command)
app.command("evaluate")(evaluate_command)
app.command("serve")(serve_command)
app.command("worker")(worker_command)
app.add_typer(users_app, name="users")
sites_app.command("import")(import_sites_command)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dustpatrol")
