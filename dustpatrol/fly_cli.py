"""``dustpatrol fly``: fly one sortie, and upload its frames to the service as they appear."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dustpatrol.client import FolderUploader, open_flight
from missions.errors import MissionError


def _start_upload(
    url: str | None, frames: Path | None, name: str, drone: str, ctx: typer.Context
) -> FolderUploader | None:
    """A flight on the service and a watcher uploading every new frame of ``frames``."""
    if url is None or frames is None:
        return None
    from dustpatrol.cli import cli_state

    settings = cli_state(ctx).settings
    uploader = FolderUploader(frames, open_flight(url, settings, name, drone=drone))
    uploader.start()
    return uploader


FRAMES_QUIET_S = 5.0  # after landing, the frames folder is taken as complete once this still


def _wait_for_frames(folder: Path, expected: int, quiet_s: float = FRAMES_QUIET_S) -> None:
    """After landing: until the folder holds ``expected`` frames, or no new frame has come
    for ``quiet_s`` (a camera or card reader still writing the last ones)."""
    count, changed = -1, time.monotonic()
    while True:
        now = len([p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")])
        if now >= expected:
            return
        if now != count:
            count, changed = now, time.monotonic()
        elif time.monotonic() - changed > quiet_s:
            return
        time.sleep(0.2)


def _finish_upload(uploader: FolderUploader, console: Console) -> None:
    upload = uploader.upload
    console.print(
        f"{len(uploader.seen) - len(upload.failed)} frames uploaded to "
        f"{upload.client.base_url}, flight {upload.flight_id}; the service analyses them"
    )
    for failure in upload.failed:
        console.print(f"[yellow]not uploaded[/] {failure}")
    upload.client.post(f"/flights/{upload.flight_id}/complete")


def fly_command(
    ctx: typer.Context,
    plan_file: Annotated[
        Path, typer.Argument(help="A sortie's .plan file (from `dustpatrol plan`).")
    ],
    connect: Annotated[str, typer.Option(help="Vehicle address, e.g. tcp:127.0.0.1:5760.")],
    log: Annotated[Path, typer.Option(help="Folder for track, triggers and events.")] = Path(
        "var/flights"
    ),
    allow_no_rtk: Annotated[
        bool, typer.Option(help="Fly without RTK fixed (frames marked lower quality).")
    ] = False,
    connect_timeout: Annotated[float, typer.Option(help="Seconds to wait for the vehicle.")] = 30.0,
    reserve: Annotated[float, typer.Option(help="Battery reserve, percent: RTL below it.")] = 25.0,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for GNSS, pre-arm checks and home.")
    ] = 60.0,
    max_home_offset: Annotated[
        float,
        typer.Option(help="Metres the vehicle's home may be from the plan's launch point."),
    ] = 50.0,
    on_stop: Annotated[
        str, typer.Option(help="On Ctrl-C, SIGTERM or SIGHUP: rtl (return) or hold (LOITER).")
    ] = "rtl",
    frames: Annotated[
        Path | None,
        typer.Option(
            help="The folder the camera's frames reach (card reader, download or simulated "
            "camera): after landing, frames the link did not report are recovered from it."
        ),
    ] = None,
    upload: Annotated[
        str | None,
        typer.Option(
            help="Notice service URL: upload each frame from --frames as it appears, during the "
            "flight, then ask for the analysis (API key: client.api_key in the settings)."
        ),
    ] = None,
) -> None:
    """Fly one sortie: checks, upload and read-back, take-off, AUTO, progress, logs.

    Logs go to LOG/<sortie> as they happen (a new folder per flight, never overwritten).
    The exit code is 0 only when the sortie completed with every planned frame confirmed."""
    from rich.progress import BarColumn, Progress, TextColumn

    from missions.files import sortie_from_plan_file
    from missions.fly import FlightOptions, FlightOutcome, StopAction, fly

    if upload is not None and frames is None:
        raise MissionError("--upload needs --frames: the folder the camera's frames reach")
    if on_stop not in {a.value for a in StopAction}:
        raise MissionError(f"--on-stop must be rtl or hold, not {on_stop!r}")
    sortie = sortie_from_plan_file(plan_file)
    if frames is not None and not frames.is_dir():
        raise MissionError(
            f"--frames {frames}: no such folder (the camera's frames of this flight)"
        )
    options = FlightOptions(
        connect_timeout_s=connect_timeout,
        require_rtk_fixed=not allow_no_rtk,
        battery_reserve_pct=reserve,
        ready_timeout_s=ready_timeout,
        max_home_offset_m=max_home_offset,
        on_stop=StopAction(on_stop),
    )
    console = Console(soft_wrap=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("item {task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        console=console,
    ) as bar:
        task = bar.add_task(sortie.name, total=len(sortie.items), status="connecting")

        def show(p: object) -> None:
            from missions.fly import Progress as FlightProgress

            assert isinstance(p, FlightProgress)
            battery = "?" if p.battery_pct is None else f"{p.battery_pct:.0f} %"
            status = f"{p.mode}, {p.distance_m / 1000:.2f} km, battery {battery}, {p.frames} frames"
            bar.update(task, completed=p.item, status=status)

        uploader = _start_upload(upload, frames, sortie.name, sortie.drone, ctx)
        try:
            flight = fly(sortie, connect, options, show, log_folder=log)
            if frames is not None:
                _wait_for_frames(frames, max(len(flight.triggers), flight.expected_frames))
        finally:
            if uploader is not None:
                uploader.finish()  # what is still waiting, then stop watching
    if frames is not None:
        back = flight.recover(frames)
        console.print(f"{len(back)} frames the link missed recovered from {frames}")
    if uploader is not None:
        _finish_upload(uploader, console)
    outcome = flight.outcome.value if flight.outcome else "unknown"
    console.print(
        f"{sortie.name}: {outcome}; {flight.survey_frames} of {flight.expected_frames} planned "
        f"frames, {flight.distance_m / 1000:.2f} km"
    )
    if flight.lower_quality_frames:
        console.print(f"[yellow]{flight.lower_quality_frames} frames taken without RTK fixed[/]")
    if off := len(flight.triggers) - flight.survey_frames:
        console.print(f"[yellow]{off} frames shot off the survey (marked in triggers.csv)[/]")
    console.print(f"logs: {flight.folder}")
    if flight.outcome is not FlightOutcome.COMPLETED:
        raise MissionError(f"{sortie.name} was not completed: {outcome}")
    if flight.shortfall:
        raise MissionError(f"{sortie.name}: {flight.shortfall}")
