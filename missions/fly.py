"""Flying a sortie: pre-flight checks, upload and read-back, GUIDED take-off, AUTO, watch.

The executor keeps to standard ArduPilot behaviour so it flies a real vehicle or SITL as
well as the simulated one: it relies on the vehicle's own failsafes when the link drops,
commands RTL itself on low battery or Ctrl-C (never a silent exit), and logs the track, every
camera trigger and every event.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from missions.dronekit_adapter import CameraEvent, DroneLink, LinkError, VehicleState
from missions.errors import MissionError
from missions.model import MavCmd, Sortie

RTK_FIXED, RTK_FLOAT, FIX_3D = 6, 5, 3
POSITION_TOLERANCE_DEG = 2e-7  # MISSION_ITEM_INT resolution is 1e-7 degrees


class PreflightError(MissionError):
    """The vehicle is not fit to fly this sortie; the message says why and what to do."""


class FlightOutcome(StrEnum):
    COMPLETED = "completed"
    RETURNED_LOW_BATTERY = "returned: low battery"
    RETURNED_LINK_LOSS = "returned: link lost (vehicle failsafe)"
    RETURNED_VEHICLE_FAILSAFE = "returned: vehicle failsafe"
    RETURNED_INTERRUPTED = "returned: interrupted by the operator"


@dataclass(frozen=True, slots=True)
class FlightOptions:
    connect_timeout_s: float = 30.0
    upload_timeout_s: float = 30.0
    takeoff_timeout_s: float = 120.0
    require_rtk_fixed: bool = True
    battery_reserve_pct: float = 25.0
    heartbeat_lost_s: float = 2.5
    link_loss_grace_s: float = 120.0  # wall seconds to wait for the link to come back
    reconnect_after_s: float = 5.0  # then open a new connection, every this many seconds
    reconnect_timeout_s: float = 5.0
    max_flight_s: float = 3 * 3600.0  # wall-clock guard


@dataclass(frozen=True, slots=True)
class Progress:
    item: int
    items: int
    distance_m: float
    battery_pct: float | None
    frames: int
    mode: str


@dataclass(slots=True)
class FlightLog:
    sortie: str
    outcome: FlightOutcome | None = None
    track: list[tuple[float, float, float, float, str, float | None, int]] = field(
        default_factory=list
    )
    triggers: list[tuple[CameraEvent, bool]] = field(default_factory=list)  # (event, RTK fixed)
    events: list[tuple[float, str]] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    distance_m: float = 0.0

    def event(self, text: str) -> None:
        self.events.append((round(time.monotonic() - self.started_at, 3), text))

    @property
    def lower_quality_frames(self) -> int:
        return sum(1 for _, fixed in self.triggers if not fixed)

    def write(self, folder: Path) -> list[Path]:
        """track.csv, track.geojson, triggers.csv, events.jsonl and summary.json."""
        folder.mkdir(parents=True, exist_ok=True)
        track_csv = folder / "track.csv"
        with track_csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["t_s", "lat_deg", "lon_deg", "relative_alt_m", "mode", "battery_pct", "gps_fix"]
            )
            writer.writerows(self.track)
        geojson = folder / "track.geojson"
        line = [[lon, lat, alt] for _, lat, lon, alt, *_ in self.track]
        geojson.write_text(
            json.dumps(
                {
                    "type": "FeatureCollection",
                    "features": [
                        {
                            "type": "Feature",
                            "properties": {"sortie": self.sortie},
                            "geometry": {"type": "LineString", "coordinates": line},
                        }
                    ]
                    + [
                        {
                            "type": "Feature",
                            "properties": {"frame": e.index, "rtk_fixed": fixed},
                            "geometry": {
                                "type": "Point",
                                "coordinates": [e.lon_deg, e.lat_deg, e.relative_alt_m],
                            },
                        }
                        for e, fixed in self.triggers
                    ],
                }
            ),
            encoding="utf-8",
        )
        triggers = folder / "triggers.csv"
        with triggers.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "index",
                    "lat_deg",
                    "lon_deg",
                    "relative_alt_m",
                    "yaw_deg",
                    "time_usec",
                    "rtk_fixed",
                ]
            )
            for event, fixed in self.triggers:
                writer.writerow(
                    [
                        event.index,
                        event.lat_deg,
                        event.lon_deg,
                        event.relative_alt_m,
                        event.yaw_deg,
                        event.time_usec,
                        fixed,
                    ]
                )
        events = folder / "events.jsonl"
        events.write_text(
            "".join(json.dumps({"t_s": t, "event": e}) + "\n" for t, e in self.events),
            encoding="utf-8",
        )
        summary = folder / "summary.json"
        summary.write_text(
            json.dumps(
                {
                    "sortie": self.sortie,
                    "outcome": self.outcome.value if self.outcome else None,
                    "frames": len(self.triggers),
                    "lower_quality_frames": self.lower_quality_frames,
                    "distance_m": round(self.distance_m, 1),
                    "track_points": len(self.track),
                },
                indent=1,
            ),
            encoding="utf-8",
        )
        return [track_csv, geojson, triggers, events, summary]


def preflight(
    link: DroneLink, sortie: Sortie, options: FlightOptions, log: FlightLog
) -> tuple[float, float, float]:
    """Check GNSS, battery, home and arming readiness; returns home (lat, lon, amsl)."""
    state = link.state()
    if state.gps_fix_type < FIX_3D:
        raise PreflightError(f"no GNSS fix (fix type {state.gps_fix_type}); wait for satellites")
    if state.gps_fix_type < RTK_FIXED:
        kind = "RTK float" if state.gps_fix_type == RTK_FLOAT else "a plain 3D fix"
        if options.require_rtk_fixed:
            raise PreflightError(
                f"GNSS has {kind} (fix type {state.gps_fix_type}), not RTK fixed; wait for RTK "
                "fixed or fly anyway with --allow-no-rtk (frames are then marked lower quality)"
            )
        log.event(f"flying without RTK fixed ({kind}): frames marked lower quality")
    needed = sortie.battery_fraction * 100.0 + options.battery_reserve_pct
    if state.battery_pct is not None and state.battery_pct < needed:
        raise PreflightError(
            f"battery at {state.battery_pct:.0f} %, the sortie needs "
            f"{sortie.battery_fraction * 100:.0f} % "
            f"plus {options.battery_reserve_pct:.0f} % reserve; change the battery"
        )
    home = link.home()
    if not link.is_armable():
        raise PreflightError("the vehicle is not armable (pre-arm checks or EKF not ready)")
    log.event(
        f"pre-flight ok: fix {state.gps_fix_type}, battery {state.battery_pct} %, "
        f"home {home[0]:.7f},{home[1]:.7f}"
    )
    return home


def upload_and_verify(
    link: DroneLink, sortie: Sortie, home: tuple[float, float, float], options: FlightOptions
) -> None:
    """Upload with MISSION_ITEM_INT and read the mission back item by item."""
    link.upload((home[0], home[1]), sortie.items, options.upload_timeout_s)
    read = link.read_back(options.upload_timeout_s)[1:]  # item 0 is home
    if len(read) != len(sortie.items):
        raise MissionError(
            f"the vehicle holds {len(read)} mission items, {len(sortie.items)} were sent"
        )
    for number, (item, (command, lat, lon, alt)) in enumerate(
        zip(sortie.items, read, strict=True), start=1
    ):
        same_position = not item.is_position or (
            abs(lat - item.lat_deg) <= POSITION_TOLERANCE_DEG
            and abs(lon - item.lon_deg) <= POSITION_TOLERANCE_DEG
            and abs(alt - item.altitude_m) < 0.01
        )
        if command != int(item.command) or not same_position:
            raise MissionError(f"mission item {number} read back differs from the one uploaded")


def fly(
    sortie: Sortie,
    address: str,
    options: FlightOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> FlightLog:
    """Fly one sortie on the vehicle at ``address`` (e.g. ``tcp:127.0.0.1:5760``)."""
    options = options or FlightOptions()
    log = FlightLog(sortie.name)
    link = DroneLink.connect(address, options.connect_timeout_s)
    session = _Session(link, address)
    log.event(f"connected to {address}")
    try:
        home = preflight(link, sortie, options, log)
        fixed_now = [link.state().gps_fix_type >= RTK_FIXED]
        session.camera_listener = lambda event: log.triggers.append((event, fixed_now[0]))
        link.on_camera(session.camera_listener)
        upload_and_verify(link, sortie, home, options)
        log.event(f"mission of {len(sortie.items)} items uploaded and verified")
        takeoff = next(i for i in sortie.items if i.command is MavCmd.NAV_TAKEOFF)
        link.set_mode("GUIDED")
        link.arm()
        log.event("armed")
        link.takeoff(takeoff.altitude_m)
        _record(log, link.state())
        _wait_for_altitude(link, takeoff.altitude_m, options.takeoff_timeout_s, log)
        link.set_mode("AUTO")
        log.event("AUTO: mission started")
        _watch(session, sortie, options, log, fixed_now, on_progress)
    except KeyboardInterrupt:
        if log.outcome is None:
            log.event("interrupted before the mission started: commanding RTL")
            session.link.return_to_launch()
            log.outcome = FlightOutcome.RETURNED_INTERRUPTED
        raise
    finally:
        session.link.close()
    return log


@dataclass(slots=True)
class _Session:
    """The current link; replaced when the executor reconnects after a link loss."""

    link: DroneLink
    address: str
    camera_listener: Callable[[CameraEvent], None] | None = None
    last_attempt: float = 0.0

    def reconnect(self, timeout_s: float) -> bool:
        self.last_attempt = time.monotonic()
        try:
            fresh = DroneLink.connect(self.address, timeout_s)
        except LinkError:
            return False
        with contextlib.suppress(Exception):  # the old link is dead; closing it may fail
            self.link.close()
        self.link = fresh
        if self.camera_listener is not None:
            fresh.on_camera(self.camera_listener)
        return True


def _record(log: FlightLog, state: VehicleState) -> None:
    if log.track and state.armed:
        _, lat, lon, *_ = log.track[-1]
        previous = (lat, lon)
        log.distance_m += _distance_m(previous, (state.lat_deg, state.lon_deg))
    log.track.append(
        (
            round(time.monotonic() - log.started_at, 3),
            state.lat_deg,
            state.lon_deg,
            state.relative_alt_m,
            state.mode,
            state.battery_pct,
            state.gps_fix_type,
        )
    )


def _wait_for_altitude(
    link: DroneLink, altitude_m: float, timeout_s: float, log: FlightLog
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        state = link.state()
        _record(log, state)
        if state.relative_alt_m >= 0.95 * altitude_m:
            return
        if state.heartbeat_age_s < 1.0 and (state.mode != "GUIDED" or not state.armed):
            log.event(f"take-off interrupted: vehicle in {state.mode}, armed={state.armed}")
            raise MissionError(
                f"take-off interrupted: the vehicle switched to {state.mode} "
                f"({'armed' if state.armed else 'disarmed'}); it follows its own failsafe"
            )
        if time.monotonic() > deadline:
            link.return_to_launch()
            raise MissionError(
                f"take-off did not reach {altitude_m:.0f} m within {timeout_s:.0f} s; RTL commanded"
            )
        time.sleep(0.05)


def _watch(
    session: _Session,
    sortie: Sortie,
    options: FlightOptions,
    log: FlightLog,
    fixed_now: list[bool],
    on_progress: Callable[[Progress], None] | None,
) -> None:
    commanded_rtl = False
    link_lost_since: float | None = None
    was_lost = False
    item_at_loss = 0
    interrupted = False
    deadline = time.monotonic() + options.max_flight_s
    while True:
        link = session.link
        try:
            state = link.state()
            fixed_now[0] = state.gps_fix_type >= RTK_FIXED
            if state.heartbeat_age_s > options.heartbeat_lost_s:
                if link_lost_since is None:
                    link_lost_since = time.monotonic()
                    was_lost = True
                    item_at_loss = state.next_item
                    log.event(
                        "link lost: the vehicle flies on its own failsafe; waiting for the link"
                    )
                elif time.monotonic() - link_lost_since > options.link_loss_grace_s:
                    log.outcome = FlightOutcome.RETURNED_LINK_LOSS
                    raise LinkError(
                        f"no heartbeat for {options.link_loss_grace_s:.0f} s; "
                        "the vehicle is on its own failsafe"
                    )
                elif (
                    time.monotonic() - link_lost_since > options.reconnect_after_s
                    and time.monotonic() - session.last_attempt > options.reconnect_after_s
                ):
                    log.event("reconnecting")
                    if session.reconnect(options.reconnect_timeout_s):
                        log.event("reconnected")
                time.sleep(0.1)
                continue
            if link_lost_since is not None:
                link_lost_since = None
                log.event(f"link restored; vehicle in {state.mode}")
            _record(log, state)
            if on_progress is not None:
                on_progress(
                    Progress(
                        min(state.next_item, len(sortie.items)),
                        len(sortie.items),
                        log.distance_m,
                        state.battery_pct,
                        len(log.triggers),
                        state.mode,
                    )
                )
            if (
                state.battery_pct is not None
                and state.battery_pct < options.battery_reserve_pct
                and state.mode not in ("RTL", "LAND")
                and state.armed
            ):
                log.event(
                    f"battery at {state.battery_pct:.0f} %: below the reserve, commanding RTL"
                )
                link.return_to_launch()
                commanded_rtl = True
                log.outcome = FlightOutcome.RETURNED_LOW_BATTERY
            if state.mode == "RTL" and log.outcome is None and not commanded_rtl:
                last_item = len(sortie.items) - 1
                finished = state.next_item >= last_item and not (
                    was_lost and item_at_loss < last_item
                )
                if finished:
                    log.outcome = FlightOutcome.COMPLETED
                else:
                    log.outcome = (
                        FlightOutcome.RETURNED_LINK_LOSS
                        if was_lost
                        else FlightOutcome.RETURNED_VEHICLE_FAILSAFE
                    )
                    log.event(f"the vehicle returns on its own ({log.outcome.value})")
            if not state.armed and state.relative_alt_m < 0.5 and len(log.track) > 1:
                log.event("landed and disarmed")
                if log.outcome is None:
                    log.outcome = FlightOutcome.COMPLETED
                return
            if time.monotonic() > deadline:
                link.return_to_launch()
                raise MissionError("flight exceeded its wall-clock guard; RTL commanded")
            time.sleep(0.1)
        except KeyboardInterrupt:
            if interrupted:
                log.event("second interrupt: leaving the vehicle in RTL")
                raise
            interrupted = True
            log.event("interrupted: commanding RTL (interrupt again to stop watching)")
            link.return_to_launch()
            commanded_rtl = True
            log.outcome = FlightOutcome.RETURNED_INTERRUPTED


def _distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Metres between two (lat, lon) points a few metres apart (local flat approximation)."""
    north = (b[0] - a[0]) * 111_320.0
    east = (b[1] - a[1]) * 111_320.0 * math.cos(math.radians(a[0]))
    return math.hypot(east, north)
