"""``dustpatrol sim``: generate a simulated district and take pictures of it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sim.camera import CAMERA_PRESETS, PoseNoise, camera_preset
from sim.errors import SimError
from sim.export import load_district, write_district
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot, write_shot
from sim.world import DEFAULT_ORIGIN_LAT, DEFAULT_ORIGIN_LON, generate_district, parse_seeds

sim_app = typer.Typer(help="The simulated district: worlds and frames.", no_args_is_help=True)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )


@sim_app.command("world")
def world_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the district into.")],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same world.")] = 7,
    sites: Annotated[int, typer.Option(help="Number of sites (10-200).")] = 40,
    extent_m: Annotated[
        float, typer.Option(help="Side of the square district in metres.")
    ] = 12_000.0,
    lat: Annotated[
        float, typer.Option(help="Latitude of the district centre.")
    ] = DEFAULT_ORIGIN_LAT,
    lon: Annotated[
        float, typer.Option(help="Longitude of the district centre.")
    ] = DEFAULT_ORIGIN_LON,
) -> None:
    """Generate a district: site registry, ground truth and world.json."""
    console = Console(stderr=True)
    with _progress(console) as progress:
        task = progress.add_task("generating district", total=2)
        district = generate_district(
            seed, origin_lat=lat, origin_lon=lon, n_sites=sites, extent_m=extent_m
        )
        progress.update(task, advance=1, description="writing files")
        written = write_district(district, out)
        progress.update(task, advance=1, description="done")
    compliant = sum(site.compliant for site in district.sites)
    typer.echo(
        f"district seed {seed}: {len(district.sites)} sites ({compliant} compliant), "
        f"{len(district.patches)} ground-truth patches, UTM EPSG:{district.crs.to_epsg()}, "
        f"{district.environment.season.value}, haze {district.environment.haze_per_m:.4f}/m"
    )
    for path in written:
        typer.echo(f"  {path}")


@sim_app.command("shoot")
def shoot_command(
    world: Annotated[Path, typer.Option("--world", help="A folder written by `sim world`.")],
    out: Annotated[Path, typer.Option("--out", help="Output path without extension.")],
    lat: Annotated[float | None, typer.Option(help="Camera latitude (or use --site).")] = None,
    lon: Annotated[float | None, typer.Option(help="Camera longitude (or use --site).")] = None,
    site: Annotated[str | None, typer.Option(help="Centre the camera over this site id.")] = None,
    alt: Annotated[float, typer.Option(help="Height above the take-off point, metres.")] = 100.0,
    yaw: Annotated[float, typer.Option(help="Gimbal yaw, degrees clockwise from north.")] = 0.0,
    pitch: Annotated[
        float, typer.Option(help="Gimbal pitch: -90 nadir, towards 0 oblique.")
    ] = -90.0,
    roll: Annotated[float, typer.Option(help="Gimbal roll, degrees.")] = 0.0,
    camera: Annotated[
        str, typer.Option(help=f"Camera preset: {', '.join(CAMERA_PRESETS)}.")
    ] = "m3e",
    scale: Annotated[float, typer.Option(help="Render at this fraction of full resolution.")] = 1.0,
    gnss: Annotated[
        GnssMode, typer.Option(help="Position quality written into the metadata.")
    ] = GnssMode.RTK_FIXED,
    seed: Annotated[int, typer.Option(help="Seed of pose error and sensor noise.")] = 0,
) -> None:
    """Take one frame: OUT.jpg (EXIF + DJI XMP), OUT.mask.png and OUT.truth.json."""
    if alt > 120.0:
        raise SimError(f"--alt {alt} m is above the 120 m legal cap for light drones")
    console = Console(stderr=True)
    with console.status("loading district"):
        district = load_district(world)
    if site is not None:
        centre = district.site(site).geometry.centroid
        east, north = centre.x, centre.y
    elif lat is not None and lon is not None:
        east, north = district.from_lonlat().transform(lon, lat)
    else:
        raise SimError("give either --site or both --lat and --lon")
    pose = pose_at(
        district, east, north, alt, gimbal_yaw_deg=yaw, gimbal_pitch_deg=pitch, gimbal_roll_deg=roll
    )
    with console.status("rendering frame"):
        shot = shoot(district, pose, camera_preset(camera, scale), PoseNoise(gnss_mode=gnss), seed)
        path = write_shot(shot, district, out.parent, out.name)
    typer.echo(
        f"{path} ({shot.camera.width_px}x{shot.camera.height_px}, {len(shot.jpeg) / 1e6:.1f} MB)"
    )


@sim_app.command("preview")
def preview_command(
    world: Annotated[Path, typer.Option("--world", help="A folder written by `sim world`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the preview PNGs.")],
    count: Annotated[int, typer.Option(help="Number of sites to look at.")] = 3,
    scale: Annotated[float, typer.Option(help="Render scale of the m3e camera.")] = 0.25,
) -> None:
    """Render nadir and oblique frames over a few sites with the ground-truth mask beside them."""
    from sim.preview import write_previews

    console = Console(stderr=True)
    with console.status("loading district"):
        district = load_district(world)
    with _progress(console) as progress:
        task = progress.add_task("rendering previews", total=count * 2)
        paths = write_previews(district, out, count, scale, lambda: progress.advance(task))
    for path in paths:
        typer.echo(str(path))


@sim_app.command("compare")
def compare_command(
    real: Annotated[Path, typer.Argument(help="Folder of real photos with regions.json.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the sheet and the table.")],
    world: Annotated[
        Path | None, typer.Option("--world", help="A folder written by `sim world`.")
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Instead of --world: small districts of these seeds (e.g. 78-87), the median "
            "of each statistic over them (every season and picture style)."
        ),
    ] = None,
    count: Annotated[int, typer.Option(help="Number of renders (per district).")] = 8,
) -> None:
    """Renders beside real photos at one ground resolution: a contact sheet and a table of
    image statistics (colour, gradients, spectrum, edge width) of soil and vegetation."""
    from sim.compare import compare

    if (world is None) == (seeds is None):
        raise SimError("give either --world FOLDER or --seeds A-B (not both)")
    console = Console(stderr=True)
    with console.status("loading district" if world else "generating districts"):
        if world is not None:
            districts = [load_district(world)]
        else:
            districts = [
                generate_district(seed, n_sites=10, extent_m=2_000.0)
                for seed in parse_seeds(seeds or "")
            ]
    with _progress(console) as progress:
        task = progress.add_task("rendering", total=count * len(districts))
        comparison = compare(real, districts, out, count, lambda: progress.advance(task))
    typer.echo(comparison.markdown(), nl=False)
    typer.echo(f"contact sheet: {out / 'contact_sheet.png'}")


@sim_app.command("vehicle")
def vehicle_command(
    lat: Annotated[float, typer.Option(help="Home latitude.")],
    lon: Annotated[float, typer.Option(help="Home longitude.")],
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 5760,
    speedup: Annotated[float, typer.Option(help="Simulated seconds per wall second.")] = 20.0,
    gnss: Annotated[
        GnssMode, typer.Option(help="GNSS solution the vehicle reports.")
    ] = GnssMode.RTK_FIXED,
    world: Annotated[
        Path | None, typer.Option(help="District folder: render a frame at each trigger.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Flight folder for rendered frames.")] = Path(
        "var/flight"
    ),
    scale: Annotated[float, typer.Option(help="Render scale of the m3e camera.")] = 0.25,
    no_float_missions: Annotated[
        bool, typer.Option(help="Refuse MISSION_ITEM as ArduPilot 4.8+ may.")
    ] = False,
    legacy_requests: Annotated[
        bool,
        typer.Option(help="Ask for mission items with MISSION_REQUEST (older ArduPilot)."),
    ] = False,
    ready_after: Annotated[
        float, typer.Option(help="Wall seconds without GNSS fix, EKF and home after start.")
    ] = 0.0,
    no_camera_feedback: Annotated[
        bool, typer.Option(help="Shoot frames but never send CAMERA_FEEDBACK.")
    ] = False,
    link_drop_at: Annotated[
        float | None, typer.Option(help="Drop the link this many simulated s after arming.")
    ] = None,
    link_drop_for: Annotated[float, typer.Option(help="Wall seconds the link stays down.")] = 10.0,
) -> None:
    """A simulated ArduCopter on 127.0.0.1 for DroneKit and `dustpatrol fly`; Ctrl-C stops it."""
    import signal
    import threading

    from sim.vehicle import Failures, SimVehicle, VehicleConfig

    district = load_district(world) if world is not None else None
    config = VehicleConfig(
        home_lat_deg=lat,
        home_lon_deg=lon,
        speedup=speedup,
        gnss=gnss,
        failures=Failures(
            no_float_mission_items=no_float_missions,
            no_camera_feedback=no_camera_feedback,
            link_drop_at_s=link_drop_at,
            link_drop_for_s=link_drop_for,
        ),
        mission_request_int=not legacy_requests,
        ready_after_s=ready_after,
        flight_folder=out / "frames" if district is not None else None,
        camera=camera_preset("m3e", scale),
    )
    vehicle = SimVehicle(config, district)
    vehicle.start(port)
    typer.echo(f"simulated vehicle on tcp:127.0.0.1:{port} ({speedup:g}x); Ctrl-C to stop")
    stopping = threading.Event()
    # A background job ignores SIGINT: stop on SIGTERM as well.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        vehicle.stop()
        vehicle.write_log(out)
        typer.echo(f"{len(vehicle.triggers)} frames triggered; log in {out}")
