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
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TextIO

from geo.errors import GeoError
from geo.frames import PositionQuality, read_frame_meta
from geo.mrk import frame_sequence
from missions.dronekit_adapter import CameraEvent, DroneLink, LinkError, VehicleState
from missions.errors import MissionError
from missions.model import MavCmd, Sortie, check_positions, distance_m

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


class StopAction(StrEnum):
    """What the executor commands when it is told to stop (Ctrl-C, SIGTERM, SIGHUP)."""

    RTL = "rtl"  # return to launch and land
    HOLD = "hold"  # hold position (LOITER) for the pilot to take over


@dataclass(frozen=True, slots=True)
class FlightOptions:
    connect_timeout_s: float = 30.0
    upload_timeout_s: float = 30.0
    takeoff_timeout_s: float = 120.0
    ready_timeout_s: float = 60.0  # wait this long for GNSS, EKF/pre-arm and home
    require_rtk_fixed: bool = True
    battery_reserve_pct: float = 25.0
    max_home_offset_m: float = 50.0  # vehicle home vs the plan's launch point
    max_item_distance_m: float = 15_000.0  # any mission position vs home
    on_stop: StopAction = StopAction.RTL
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


TRACK_COLUMNS = ["t_s", "lat_deg", "lon_deg", "relative_alt_m", "mode", "battery_pct", "gps_fix"]
TRIGGER_COLUMNS = [
    "index",
    "lat_deg",
    "lon_deg",
    "relative_alt_m",
    "yaw_deg",
    "time_usec",
    "rtk_fixed",
    "survey",
    "source",
]


@dataclass(frozen=True, slots=True)
class Trigger:
    """A camera trigger: RTK fixed at the time, and whether it was shot on the survey (AUTO)
    rather than on the way home or while holding; ``source`` "link" when the vehicle reported
    it, "card" when recovered afterwards from the frame the camera wrote."""

    event: CameraEvent
    rtk_fixed: bool
    survey: bool
    source: str = "link"


@dataclass(slots=True)
class FlightLog:
    """What happened on a sortie. With a folder, every track point, trigger and event is
    appended to its file as it happens (so any exit, even a kill, keeps them); `close` adds
    the summary and the GeoJSON track."""

    sortie: str
    expected_frames: int = 0
    folder: Path | None = None
    outcome: FlightOutcome | None = None
    track: list[tuple[float, float, float, float, str, float | None, int]] = field(
        default_factory=list
    )
    triggers: list[Trigger] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    distance_m: float = 0.0
    _files: dict[str, TextIO] = field(default_factory=dict)

    def open(self, base: Path) -> Path:
        """Start writing into a new folder ``base/<sortie>`` (``-2``, ``-3``... when the
        sortie was flown before: earlier logs are never overwritten)."""
        self.folder = new_folder(base / self.sortie)
        for name, header in (("track.csv", TRACK_COLUMNS), ("triggers.csv", TRIGGER_COLUMNS)):
            handle = (self.folder / name).open("w", newline="", encoding="utf-8")
            csv.writer(handle).writerow(header)
            handle.flush()
            self._files[name] = handle
        self._files["events.jsonl"] = (self.folder / "events.jsonl").open("w", encoding="utf-8")
        for t, text in self.events:
            self._append("events.jsonl", json.dumps({"t_s": t, "event": text}) + "\n")
        return self.folder

    def _append(self, name: str, line: str) -> None:
        handle = self._files.get(name)
        if handle is not None:
            handle.write(line)
            handle.flush()

    def _append_row(self, name: str, row: list[object]) -> None:
        handle = self._files.get(name)
        if handle is not None:
            csv.writer(handle).writerow(row)
            handle.flush()

    def event(self, text: str) -> None:
        t = round(time.monotonic() - self.started_at, 3)
        self.events.append((t, text))
        self._append("events.jsonl", json.dumps({"t_s": t, "event": text}) + "\n")

    def add_track(self, row: tuple[float, float, float, float, str, float | None, int]) -> None:
        self.track.append(row)
        self._append_row("track.csv", list(row))

    def add_trigger(self, trigger: Trigger) -> None:
        self.triggers.append(trigger)
        e = trigger.event
        self._append_row(
            "triggers.csv",
            [
                e.index,
                e.lat_deg,
                e.lon_deg,
                e.relative_alt_m,
                e.yaw_deg,
                e.time_usec,
                trigger.rtk_fixed,
                trigger.survey,
                trigger.source,
            ],
        )

    @property
    def lower_quality_frames(self) -> int:
        return sum(1 for t in self.triggers if not t.rtk_fixed)

    @property
    def survey_frames(self) -> int:
        return sum(1 for t in self.triggers if t.survey)

    @property
    def missing_indices(self) -> list[int]:
        """Camera image indices the vehicle took but whose feedback never arrived (gaps in
        the sequence numbers, e.g. while the link was down)."""
        seen = sorted({t.event.index for t in self.triggers})
        if not seen:
            return []
        return sorted(set(range(seen[0], seen[-1] + 1)) - set(seen))

    @property
    def shortfall(self) -> str | None:
        """Why the frames are not what the plan announced, or None when they are."""
        problems = []
        if self.survey_frames < self.expected_frames:
            problems.append(
                f"{self.survey_frames} survey frames confirmed, {self.expected_frames} planned"
            )
        if self.missing_indices:
            problems.append(
                f"{len(self.missing_indices)} frames taken without feedback over the link "
                f"(indices {_ranges(self.missing_indices)}): recover them from the camera's "
                "card with --frames"
            )
        return "; ".join(problems) or None

    def recover(self, frames: Path) -> list[int]:
        """Fill the gaps in the camera's sequence, and the frames after the last one the link
        reported, from the frames the camera wrote on this flight (a DJI card's flight folder
        or the simulated camera's folder: the shot number is in the file name, 1-based),
        reading the position from each frame's EXIF/XMP. Returns the indices recovered; what stays
        missing remains in `missing_indices`. After `close` (the usual case: the card is read
        once the vehicle has landed), the files are reopened and finished again."""
        last = max((t.event.index for t in self.triggers), default=-1)
        gaps = set(self.missing_indices)
        reopened = self.folder is not None and not self._files
        if reopened:
            assert self.folder is not None
            for name in ("triggers.csv", "events.jsonl"):
                self._files[name] = (self.folder / name).open("a", newline="", encoding="utf-8")
        confirmed = sorted(self.triggers, key=lambda t: t.event.index)
        recovered = []
        for path in sorted(frames.iterdir()):
            number = frame_sequence(path.name)
            if path.suffix.lower() not in (".jpg", ".jpeg") or number is None:
                continue
            index = number - 1
            if index not in gaps and index <= last:
                continue  # confirmed over the link already
            try:
                meta = read_frame_meta(path)
            except GeoError as exc:
                self.event(f"frame {path.name} could not be read to recover shot {index}: {exc}")
                continue
            # A frame between two survey frames was shot on the survey too.
            before = [t for t in confirmed if t.event.index < index][-1:]
            after = [t for t in confirmed if t.event.index > index][:1]
            survey = bool(before and after and before[0].survey and after[0].survey)
            event = CameraEvent(
                index,
                meta.lat_deg,
                meta.lon_deg,
                meta.relative_altitude_m or 0.0,
                meta.gimbal_yaw_deg or 0.0,
                int(meta.captured_at.timestamp() * 1e6) if meta.captured_at else 0,
            )
            fixed = meta.position_quality is PositionQuality.RTK_FIXED
            self.add_trigger(Trigger(event, fixed, survey, source="card"))
            gaps.discard(index)
            recovered.append(index)
        self.event(
            f"recovered {len(recovered)} frames the link missed from {frames}"
            + (f"; still missing {_ranges(sorted(gaps))}" if gaps else "")
        )
        if reopened:
            self.close()
        return recovered

    def close(self) -> list[Path]:
        """Finish the files: summary.json and track.geojson beside the appended ones."""
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        if self.folder is None:
            return []
        geojson = self.folder / "track.geojson"
        line = [[lon, lat, alt] for _, lat, lon, alt, *_ in self.track]
        features: list[dict[str, object]] = [
            {
                "type": "Feature",
                "properties": {"sortie": self.sortie},
                "geometry": {"type": "LineString", "coordinates": line},
            }
        ]
        features += [
            {
                "type": "Feature",
                "properties": {
                    "frame": t.event.index,
                    "rtk_fixed": t.rtk_fixed,
                    "survey": t.survey,
                    "source": t.source,
                },
                "geometry": {
                    "type": "Point",
                    "coordinates": [t.event.lon_deg, t.event.lat_deg, t.event.relative_alt_m],
                },
            }
            for t in self.triggers
        ]
        geojson.write_text(
            json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8"
        )
        summary = self.folder / "summary.json"
        summary.write_text(
            json.dumps(
                {
                    "sortie": self.sortie,
                    "outcome": self.outcome.value if self.outcome else None,
                    "expected_frames": self.expected_frames,
                    "frames": len(self.triggers),
                    "survey_frames": self.survey_frames,
                    "off_survey_frames": len(self.triggers) - self.survey_frames,
                    "missing_indices": self.missing_indices,
                    "recovered_from_card": sum(1 for t in self.triggers if t.source == "card"),
                    "shortfall": self.shortfall,
                    "lower_quality_frames": self.lower_quality_frames,
                    "distance_m": round(self.distance_m, 1),
                    "track_points": len(self.track),
                },
                indent=1,
            ),
            encoding="utf-8",
        )
        return [
            self.folder / name
            for name in ("track.csv", "track.geojson", "triggers.csv", "events.jsonl")
        ] + [summary]


def new_folder(wanted: Path) -> Path:
    """Create ``wanted``, or ``wanted-2``, ``wanted-3``... if it exists (atomically: two
    processes never get the same one)."""
    wanted.parent.mkdir(parents=True, exist_ok=True)
    for number in range(1, 10_000):
        candidate = wanted if number == 1 else wanted.with_name(f"{wanted.name}-{number}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise MissionError(f"{wanted}: 10,000 log folders of this sortie exist; clean some up")


def _ranges(numbers: list[int]) -> str:
    spans: list[str] = []
    for number in numbers:
        if spans and spans[-1].split("-")[-1] == str(number - 1):
            spans[-1] = f"{spans[-1].split('-')[0]}-{number}"
        else:
            spans.append(str(number))
    return ", ".join(spans)


def preflight(
    link: DroneLink, sortie: Sortie, options: FlightOptions, log: FlightLog
) -> tuple[float, float, float]:
    """Wait (up to ``ready_timeout_s``) for GNSS, pre-arm/EKF and home, then check battery,
    home against the plan's launch point and every mission position against home; returns
    home (lat, lon, amsl)."""
    deadline = time.monotonic() + options.ready_timeout_s
    home: tuple[float, float, float] | None = None
    while True:
        state = link.state()
        if home is None:
            home = link.home_now()
        missing = _not_ready(state, link.is_armable(), home, options)
        if not missing:
            break
        if time.monotonic() > deadline:
            raise PreflightError(
                f"the vehicle is not ready after {options.ready_timeout_s:.0f} s: "
                + "; ".join(missing)
            )
        time.sleep(0.25)
    assert home is not None
    if state.gps_fix_type < RTK_FIXED:
        log.event(
            f"flying without RTK fixed ({_fix_kind(state.gps_fix_type)}): "
            "frames marked lower quality"
        )
    needed = sortie.battery_fraction * 100.0 + options.battery_reserve_pct
    if state.battery_pct is not None and state.battery_pct < needed:
        raise PreflightError(
            f"battery at {state.battery_pct:.0f} %, the sortie needs "
            f"{sortie.battery_fraction * 100:.0f} % "
            f"plus {options.battery_reserve_pct:.0f} % reserve; change the battery"
        )
    offset = distance_m((home[0], home[1]), (sortie.launch.lat_deg, sortie.launch.lon_deg))
    if offset > options.max_home_offset_m:
        raise PreflightError(
            f"the vehicle's home is {offset:,.0f} m from the plan's launch point "
            f"({sortie.launch.lat_deg:.6f},{sortie.launch.lon_deg:.6f}); launch from there, "
            f"or allow it with --max-home-offset (now {options.max_home_offset_m:.0f} m)"
        )
    check_positions(sortie.items, (home[0], home[1]), options.max_item_distance_m, "home")
    log.event(
        f"pre-flight ok: fix {state.gps_fix_type}, battery {state.battery_pct} %, "
        f"home {home[0]:.7f},{home[1]:.7f} ({offset:.1f} m from the plan's launch point)"
    )
    return home


def _fix_kind(fix_type: int) -> str:
    return "RTK float" if fix_type == RTK_FLOAT else "a plain 3D fix"


def _not_ready(
    state: VehicleState,
    armable: bool,
    home: tuple[float, float, float] | None,
    options: FlightOptions,
) -> list[str]:
    """What the vehicle still lacks, each with what to do."""
    missing = []
    if state.gps_fix_type < FIX_3D:
        missing.append(f"no GNSS fix (fix type {state.gps_fix_type}): wait for satellites")
    elif state.gps_fix_type < RTK_FIXED and options.require_rtk_fixed:
        missing.append(
            f"GNSS has {_fix_kind(state.gps_fix_type)} (fix type {state.gps_fix_type}), "
            "not RTK fixed: wait for RTK fixed or fly anyway with --allow-no-rtk "
            "(frames are then marked lower quality)"
        )
    if not armable:
        missing.append("not armable (pre-arm checks or EKF not ready)")
    if home is None:
        missing.append("no home position reported yet")
    return missing


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


class StopRequested(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a service manager stopping the process): handled like Ctrl-C."""


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """While flying, SIGTERM and SIGHUP raise StopRequested in the main thread (so the
    vehicle is sent home and the logs are finished) instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(number: int, _frame: object) -> None:
        raise StopRequested(signal.Signals(number).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(slots=True)
class _Now:
    """What the camera listener needs to know about the moment a frame is confirmed."""

    rtk_fixed: bool = False
    mode: str = ""


def fly(
    sortie: Sortie,
    address: str,
    options: FlightOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    log_folder: Path | None = None,
) -> FlightLog:
    """Fly one sortie on the vehicle at ``address`` (e.g. ``tcp:127.0.0.1:5760``).

    With ``log_folder``, the logs go to a new folder ``log_folder/<sortie>`` as they happen
    and are finished however the flight ends (see `FlightLog`)."""
    options = options or FlightOptions()
    log = FlightLog(sortie.name, sortie.expected_frames)
    if log_folder is not None:
        log.open(log_folder)
    session: _Session | None = None
    try:
        with _stop_signals():
            link = DroneLink.connect(address, options.connect_timeout_s)
            session = _Session(link, address)
            log.event(f"connected to {address}")
            try:
                _fly(session, sortie, options, log, on_progress)
            except KeyboardInterrupt as stop:
                if log.outcome is None:
                    why = str(stop) or "Ctrl-C"
                    if session.link.state().armed:
                        log.event(f"interrupted ({why}) before the mission started")
                        _stop_flight(session.link, options.on_stop, log)
                    else:
                        log.event(f"interrupted ({why}) before take-off: nothing to command")
                    log.outcome = FlightOutcome.RETURNED_INTERRUPTED
                raise
    except Exception as exc:
        log.event(f"stopped: {exc}")
        raise
    finally:
        if session is not None:
            with contextlib.suppress(Exception):
                session.link.close()
        log.close()
    return log


def _fly(
    session: _Session,
    sortie: Sortie,
    options: FlightOptions,
    log: FlightLog,
    on_progress: Callable[[Progress], None] | None,
) -> None:
    link = session.link
    home = preflight(link, sortie, options, log)
    state = link.state()
    now = _Now(state.gps_fix_type >= RTK_FIXED, state.mode)
    session.camera_listener = lambda event: log.add_trigger(
        Trigger(event, now.rtk_fixed, now.mode == "AUTO")
    )
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
    now.mode = "AUTO"
    log.event("AUTO: mission started")
    _watch(session, sortie, options, log, now, on_progress)


def _stop_flight(link: DroneLink, action: StopAction, log: FlightLog) -> None:
    """Stop the camera (frames on the way home are not survey frames), then RTL or hold."""
    try:
        link.stop_camera()
    except LinkError as exc:
        log.event(f"could not stop the camera trigger: {exc}")
    if action is StopAction.HOLD:
        log.event("holding position (LOITER) for the pilot")
        link.set_mode("LOITER")
    else:
        log.event("commanding RTL")
        link.return_to_launch()


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
        log.distance_m += distance_m(previous, (state.lat_deg, state.lon_deg))
    log.add_track(
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
    now: _Now,
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
            now.rtk_fixed, now.mode = state.gps_fix_type >= RTK_FIXED, state.mode
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
                log.event(f"battery at {state.battery_pct:.0f} %: below the reserve")
                _stop_flight(link, StopAction.RTL, log)
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
                    try:  # ArduPilot keeps triggering by distance in RTL
                        link.stop_camera()
                    except LinkError as exc:
                        log.event(f"could not stop the camera trigger: {exc}")
            if not state.armed and state.relative_alt_m < 0.5 and len(log.track) > 1:
                log.event("landed and disarmed")
                if log.outcome is None:
                    log.outcome = FlightOutcome.COMPLETED
                return
            if time.monotonic() > deadline:
                link.return_to_launch()
                raise MissionError("flight exceeded its wall-clock guard; RTL commanded")
            time.sleep(0.1)
        except KeyboardInterrupt as stop:
            why = str(stop) or "Ctrl-C"
            if interrupted:
                log.event(f"second interrupt ({why}): leaving the vehicle as it is")
                raise
            interrupted = True
            log.event(f"interrupted ({why}); interrupt again to stop watching")
            _stop_flight(link, options.on_stop, log)
            commanded_rtl = True
            log.outcome = FlightOutcome.RETURNED_INTERRUPTED
