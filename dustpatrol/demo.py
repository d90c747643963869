"""``dustpatrol demo``: the whole loop on a simulated district, on the embedded default.

A district is generated, its registry imported into a notice service started here (SQLite,
local files, in-process worker), a patrol planned and flown with DroneKit against the
simulated vehicle (time-accelerated; its camera renders frames), frames uploaded and analysed
as they appear, findings confirmed by the analyst and notices issued to the bureaus. The
bureaus acknowledge and report rectification; the district is re-generated with those sites
covered, except one whose bureau reported work it did not do; a second flight verifies:
rectified notices close, the other goes back to its bureau. Everything goes through the
service's HTTP API, as the field and the bureaus would use it.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import SecretStr

from dustpatrol.client import FlightUpload, FolderUploader, ServiceClient
from dustpatrol.errors import DustpatrolError
from dustpatrol.findings_eval import evaluate_findings, true_problems
from dustpatrol.pipeline import shared_detector
from dustpatrol.settings import (
    DatabaseSettings,
    NoticesSettings,
    PathsSettings,
    ServerSettings,
    Settings,
)
from dustpatrol.survey_eval import launch_point, registry_frame
from missions.fly import FlightOptions, Progress, fly
from missions.model import DroneProfile, PatrolPlan, SurveySettings
from missions.planner import plan_patrol
from sim.camera import camera_preset
from sim.export import SITES_FILE, write_district
from sim.shots import pose_at, shoot
from sim.vehicle import SimVehicle, VehicleConfig
from sim.world import District, generate_district, rectified

MARKER = ".dustpatrol-demo"  # the demo only ever deletes a folder it created itself
PROBLEM_CLASSES = ("exposed_soil", "road_dust")
PASSWORDS = {  # demo logins, printed at the end; the service listens on 127.0.0.1 only
    "admin": "demo-admin-2026",
    "analyst": "demo-analyst-2026",
    "inspector": "demo-inspector-2026",
}
BUREAU_PASSWORD = "demo-bureau-2026"


@dataclass(frozen=True, slots=True)
class DemoSpec:
    seed: int = 7
    out: Path = Path("var/demo")
    n_sites: int = 20
    extent_m: float = 2500.0
    altitude_m: float = 100.0
    render_scale: float = 0.25  # of the M3E's 20 MP frame: ~11 cm/px at 100 m
    speedup: float = 40.0
    host: str = "127.0.0.1"
    port: int = 8000
    unrectified: int = 1  # sites whose bureau reports rectification it did not do


@dataclass(slots=True)
class FlightResult:
    flight_id: int
    frames: int
    rejected: dict[str, str]  # frame -> why the service kept it out of detection
    findings: dict[str, Any]  # the service's findings of the flight, GeoJSON
    seconds: float
    after_landing_s: float  # from the last sortie's end to the findings being made

    def problems(self, rules: NoticesSettings) -> set[tuple[str, str]]:
        """(site, class) of every finding on a site that the notice ``rules`` act on (a
        problem class, large and sure enough): what issues a notice, or reopens one."""
        return {
            (p["site_id"], p["class"])
            for p in (f["properties"] for f in self.findings["features"])
            if p["site_id"] and rules.acts_on(p["class"], p["area_m2"], p["confidence"])
        }


@dataclass(slots=True)
class DemoResult:
    base_url: str
    logins: dict[str, str]
    notices_issued: list[str]
    notices_closed: list[str]
    notices_reopened: list[str]
    pdfs: list[Path]
    reports: list[Path]
    evaluation: dict[str, Any]
    flights: list[FlightResult]


Say = Callable[[str], None]


def demo_settings(base: Settings, spec: DemoSpec) -> Settings:
    """The embedded default inside the demo folder: its own database, frames and files."""
    data = spec.out / "service"
    return base.model_copy(
        update={
            "paths": PathsSettings(
                data_dir=data, frames_dir=data / "frames", models_dir=base.paths.models_dir
            ),
            "database": DatabaseSettings(url=f"sqlite:///{(data / 'dustpatrol.db').resolve()}"),
            "server": ServerSettings(
                host=spec.host,
                port=spec.port,
                admin_username="admin",
                admin_password=SecretStr(PASSWORDS["admin"]),
            ),
        }
    )


def prepare_folder(out: Path) -> None:
    """An empty demo folder; refuses to delete a folder the demo did not create."""
    if out.exists():
        if not (out / MARKER).is_file():
            raise DustpatrolError(
                f"{out} exists and was not made by the demo: choose another --out or remove it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by dustpatrol demo; deleted by the next run\n")


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise DustpatrolError(
                f"port {port} on {host} is in use (another dustpatrol serve?): pass --port"
            ) from None


class ServiceThread:
    """The notice service in a background thread of this process."""

    def __init__(self, settings: Settings) -> None:
        from api.app import create_app
        from api.cli import ensure_admin

        app = create_app(settings)
        ensure_admin(settings)
        config = uvicorn.Config(
            app, host=settings.server.host, port=settings.server.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="demo-service", daemon=True)
        self.base_url = f"http://{settings.server.host}:{settings.server.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DustpatrolError(f"the service did not start on {self.base_url}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def setup_users(admin: ServiceClient) -> dict[str, str]:
    """The analyst, the inspector and one login per bureau of the imported registry."""
    logins = {"admin": PASSWORDS["admin"]}
    for role in ("analyst", "inspector"):
        admin.post("/users", {"username": role, "password": PASSWORDS[role], "role": role})
        logins[role] = PASSWORDS[role]
    for number, bureau in enumerate(admin.get("/bureaus"), start=1):
        username = f"bureau{number}"
        admin.post(
            "/users",
            {
                "username": username,
                "password": BUREAU_PASSWORD,
                "role": "bureau",
                "bureau_id": bureau["id"],
            },
        )
        logins[username] = BUREAU_PASSWORD
    return logins


class _ProgressPrinter:
    """Says where a sortie is every 20 frames."""

    def __init__(self, sortie: str, uploader: FolderUploader, say: Say) -> None:
        self.sortie, self.uploader, self.say = sortie, uploader, say
        self.last = 0

    def __call__(self, p: Progress) -> None:
        if p.frames >= self.last + 20:
            self.last = p.frames
            self.say(
                f"  {self.sortie}: item {p.item}/{p.items}, {p.frames} frames shot, "
                f"{len(self.uploader.seen)} uploaded"
            )


def plan_flight(
    district: District, site_ids: list[str], spec: DemoSpec, folder: Path
) -> PatrolPlan:
    from missions.files import write_plan_files

    registry = registry_frame(district)
    registry = registry[registry["site_id"].isin(site_ids)]
    plan = plan_patrol(
        registry,
        [launch_point(district)],
        [DroneProfile()],
        SurveySettings(altitude_m=spec.altitude_m),
        solver_time_s=2.0,
    )
    write_plan_files(plan, folder)
    return plan


def run_flight(
    district: District,
    plan: PatrolPlan,
    spec: DemoSpec,
    folder: Path,
    inspector: ServiceClient,
    name: str,
    say: Say,
) -> FlightResult:
    """Fly every sortie of ``plan`` over ``district``; each frame goes to the service as soon
    as it is shot and the service analyses it; when the drone is down the flight is completed
    and the service makes its findings."""
    started = time.monotonic()
    upload = FlightUpload(inspector, name, drone="M3E", operator="inspector")
    frames_dir = folder / "frames"
    uploader = FolderUploader(frames_dir, upload)
    uploader.start()
    launch = launch_point(district)
    try:
        for sortie in plan.sorties:
            vehicle = SimVehicle(
                VehicleConfig(
                    launch.lat_deg,
                    launch.lon_deg,
                    speedup=spec.speedup,
                    flight_folder=frames_dir,
                    camera=camera_preset("m3e", spec.render_scale),
                ),
                district,
            )
            port = vehicle.start()
            progress = _ProgressPrinter(sortie.name, uploader, say)
            try:
                log = fly(
                    sortie,
                    f"tcp:127.0.0.1:{port}",
                    FlightOptions(),
                    on_progress=progress,
                    log_folder=folder / "logs",
                )
            finally:
                vehicle.stop()
            say(f"  {sortie.name}: {log.outcome}, {len(log.triggers)} frames")
    finally:
        uploader.finish()
    for error in upload.failed:
        say(f"  upload failed: {error}")
    landed = time.monotonic()
    upload.complete()
    findings = inspector.get(f"/flights/{upload.flight_id}/findings.geojson")
    (folder / "findings.geojson").write_text(json.dumps(findings, indent=1), encoding="utf-8")
    frames = inspector.get(f"/flights/{upload.flight_id}/frames")
    return FlightResult(
        flight_id=upload.flight_id,
        frames=len(frames),
        rejected={f["filename"]: f["analysis_note"] for f in frames if f["analysis"] == "rejected"},
        findings=findings,
        seconds=time.monotonic() - started,
        after_landing_s=time.monotonic() - landed,
    )


def confirm_findings(analyst: ServiceClient, flight_id: int) -> int:
    """The analyst's review: problems on a site are confirmed (which issues notices)."""
    confirmed = 0
    for finding in analyst.get("/findings", flight=flight_id):
        if finding["finding_class"] in PROBLEM_CLASSES and finding["site"]:
            analyst.post(f"/findings/{finding['id']}/confirm")
            confirmed += 1
    return confirmed


def verification_against_truth(
    notices: list[dict[str, Any]],
    reported: list[str],
    after: District,
    settings: Settings,
) -> dict[str, Any]:
    """The fate of each notice reported rectified against the truth after the bureaus' work:
    a notice should go back to its bureau exactly when its problem is still on the ground."""
    still = true_problems(after, settings)
    judged = [n for n in notices if n["number"] in reported]
    back = {n["number"] for n in judged if n["state"] == "acknowledged"}
    closed = {n["number"] for n in judged if n["state"] in ("verified", "closed")}
    unrectified = {n["number"] for n in judged if (n["site"], n["finding_class"]) in still}
    return {
        "not_rectified": len(unrectified),
        "rectified": len(judged) - len(unrectified),
        "sent_back_rightly": sorted(back & unrectified),
        "sent_back_wrongly": sorted(back - unrectified),
        "closed_wrongly": sorted(closed & unrectified),
        "not_verified": sorted({n["number"] for n in judged} - back - closed),
    }


def rectification_photo(district: District, site_id: str, folder: Path) -> Path:
    """What the site's operator photographs after the work: a low view of the site."""
    centre = district.site(site_id).geometry.centroid
    pose = pose_at(district, centre.x, centre.y, 40.0, gimbal_pitch_deg=-60.0)
    shot = shoot(district, pose, camera_preset("m3e", 0.15))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{site_id}-rectified.jpg"
    path.write_bytes(shot.jpeg)
    return path


def bureaus_respond(
    base_url: str,
    logins: dict[str, str],
    notices: list[dict[str, Any]],
    district_after: District,
    lying: set[str],
    folder: Path,
) -> list[str]:
    """Each bureau acknowledges its notices and reports them rectified with a photo (of the
    real state of the site: unchanged where the bureau only claims the work)."""
    reported = []
    for username, password in logins.items():
        if not username.startswith("bureau"):
            continue
        with ServiceClient(base_url, username=username, password=password) as bureau:
            own = {n["number"] for n in bureau.get("/notices", limit=500)}
            for notice in notices:
                if notice["number"] not in own or notice["state"] != "issued":
                    continue
                number = notice["number"]
                bureau.post(
                    f"/notices/{number}/transitions", {"to": "acknowledged", "note": "收到"}
                )
                photo = rectification_photo(district_after, notice["site"], folder)
                uploaded = bureau.upload(f"/notices/{number}/photos", photo, "image/jpeg")
                note = "已覆盖防尘网" if notice["site"] not in lying else "已整改"
                bureau.post(
                    f"/notices/{number}/transitions",
                    {"to": "rectified", "note": note, "attachments": [uploaded["sha256"]]},
                )
                reported.append(number)
    return reported


def run_demo(spec: DemoSpec, base_settings: Settings, say: Say) -> tuple[DemoResult, ServiceThread]:
    """Run the loop; returns what it did and the service, still running (stop it when done)."""
    check_port_free(spec.host, spec.port)
    prepare_folder(spec.out)
    settings = demo_settings(base_settings, spec)
    shared_detector(settings.detection)  # the model must load before anything else happens

    side_km = spec.extent_m / 1000
    say(f"1/7 district: seed {spec.seed}, {spec.n_sites} sites in {side_km:g} × {side_km:g} km")
    district = generate_district(spec.seed, n_sites=spec.n_sites, extent_m=spec.extent_m)
    write_district(district, spec.out / "district")
    violating = [s.site_id for s in district.sites if not s.compliant]
    say(f"    {len(violating)} sites with exposed soil or road dust, the rest compliant")

    say(f"2/7 service on http://{spec.host}:{spec.port} (SQLite in {spec.out / 'service'})")
    service = ServiceThread(settings)
    service.start()
    try:
        result = _loop(spec, settings, district, service.base_url, say)
    except BaseException:
        service.stop()
        raise
    return result, service


def _loop(
    spec: DemoSpec,
    settings: Settings,
    district: District,
    base_url: str,
    say: Say,
) -> DemoResult:
    admin = ServiceClient(base_url, username="admin", password=PASSWORDS["admin"])
    report = admin.upload("/sites/import", spec.out / "district" / SITES_FILE, "application/json")
    logins = setup_users(admin)
    say(f"    registry imported: {report['created']} sites; users: {', '.join(logins)}")
    inspector = ServiceClient(base_url, username="inspector", password=PASSWORDS["inspector"])
    analyst = ServiceClient(base_url, username="analyst", password=PASSWORDS["analyst"])

    all_sites = [s.site_id for s in district.sites]
    plan = plan_flight(district, all_sites, spec, spec.out / "flight1" / "plan")
    say(
        f"3/7 patrol planned: {len(plan.sorties)} sortie(s), {plan.expected_frames} frames, "
        f"{plan.total_duration_s / 60:.0f} min of flight (x{spec.speedup:g} here)"
    )
    first = run_flight(district, plan, spec, spec.out / "flight1", inspector, "patrol 1", say)
    say(
        f"    flight {first.flight_id}: {first.frames} frames in {first.seconds:.0f} s, "
        f"{len(first.findings['features'])} findings "
        f"(made {first.after_landing_s:.0f} s after landing), {len(first.rejected)} frames "
        "kept out of detection"
    )
    confirmed = confirm_findings(analyst, first.flight_id)
    notices = admin.get("/notices", limit=500)
    issued = [n["number"] for n in notices]
    say(f"4/7 analyst confirmed {confirmed} findings: {len(issued)} notices issued")
    for notice in notices:
        say(f"    {notice['number']} {notice['site']} {notice['finding_class']}")

    noticed_sites = sorted({n["site"] for n in notices})
    lying = set(noticed_sites[: spec.unrectified])
    honest = [s for s in noticed_sites if s not in lying]
    after = rectified(district, honest)
    write_district(after, spec.out / "district-after")
    reported = bureaus_respond(base_url, logins, notices, after, lying, spec.out / "photos")
    say(
        f"5/7 bureaus acknowledged and reported {len(reported)} notices rectified "
        f"({len(honest)} sites really covered, {len(lying)} not: {', '.join(sorted(lying))})"
    )

    second = FlightResult(0, 0, {}, {"type": "FeatureCollection", "features": []}, 0.0, 0.0)
    if noticed_sites:
        plan2 = plan_flight(after, noticed_sites, spec, spec.out / "flight2" / "plan")
        say(f"6/7 verification flight over {len(noticed_sites)} sites")
        second = run_flight(after, plan2, spec, spec.out / "flight2", inspector, "verify", say)
    else:
        say("6/7 no notices, no verification flight")
    closed, reopened = [], []
    verified = admin.get("/notices", limit=500)
    for notice in verified:
        if notice["state"] == "verified":
            analyst.post(
                f"/notices/{notice['number']}/transitions",
                {"to": "closed", "note": "无人机复查确认已整改"},
            )
            closed.append(notice["number"])
        elif notice["number"] in reported and notice["state"] == "acknowledged":
            reopened.append(notice["number"])
    say(f"    closed {len(closed)}; back to the bureau {len(reopened)}: {', '.join(reopened)}")

    pdfs = []
    for number in issued:
        path = spec.out / "notices" / f"{number}.pdf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(admin.get(f"/notices/{number}/pdf"))
        pdfs.append(path)
    reports = []
    for flight in (first, second):
        if flight.flight_id:
            path = spec.out / f"patrol-report-{flight.flight_id}.pdf"
            path.write_bytes(admin.get(f"/flights/{flight.flight_id}/report.pdf"))
            reports.append(path)
    evaluation = evaluate_findings(first.findings, district, settings)
    evaluation["verification"] = verification_against_truth(verified, reported, after, settings)
    (spec.out / "evaluation.json").write_text(json.dumps(evaluation, indent=1), encoding="utf-8")
    scores, checked = evaluation["sites"], evaluation["verification"]
    say(
        f"7/7 patrol 1 against the truth: {scores['true_positive']} of {scores['violating']} "
        f"violating sites reported, {scores['false_positive']} compliant sites reported; "
        f"verification: {len(checked['sent_back_rightly'])} of {checked['not_rectified']} "
        "notices whose problem is still there went back to the bureau, "
        f"{len(checked['sent_back_wrongly'])} of {checked['rectified']} rectified ones went "
        f"back on a false alarm ({', '.join(checked['sent_back_wrongly']) or 'none'})"
    )
    for client in (admin, inspector, analyst):
        client.close()
    return DemoResult(
        base_url=base_url,
        logins=logins,
        notices_issued=issued,
        notices_closed=closed,
        notices_reopened=reopened,
        pdfs=pdfs,
        reports=reports,
        evaluation=evaluation,
        flights=[first, second],
    )
