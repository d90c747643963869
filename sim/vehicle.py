"""A simulated ArduCopter over MAVLink (pymavlink, ardupilotmega dialect) on 127.0.0.1.

It behaves like ArduCopter for what DroneKit and the flight executor use: heartbeat with
ArduCopter modes, status, GNSS fix types up to RTK fixed, position, attitude, parameters,
home, arming, takeoff, the mission protocol (upload/download, current item, item reached),
AUTO/GUIDED/RTL/LAND, battery drain, wind, and camera triggering by distance that renders a
frame of the simulated district into a flight folder (true and reported pose beside it).
Time runs ``speedup`` times faster than the wall clock. Failures can be injected: link drop,
battery sag, RTK loss, refusing the float ``MISSION_ITEM`` messages as newer ArduPilot, lost
camera feedback, slow readiness (no fix, EKF or home for a while), a mission too big for its
storage; it asks for mission items with MISSION_REQUEST_INT (or the legacy MISSION_REQUEST).
"""

from __future__ import annotations

import contextlib
import json
import math
import select
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymavlink import mavutil

from sim.camera import CameraModel, PoseNoise, camera_preset
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot, write_shot
from sim.world import District

mavlink = mavutil.mavlink

# ArduCopter custom modes.
MODES = {"STABILIZE": 0, "AUTO": 3, "GUIDED": 4, "LOITER": 5, "RTL": 6, "LAND": 9}
MODE_NAMES = {number: name for name, number in MODES.items()}
FIX_TYPES = {GnssMode.RTK_FIXED: 6, GnssMode.PERFECT: 6, GnssMode.RTK_FLOAT: 5, GnssMode.SINGLE: 3}
EKF_OK = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x100 | 0x200  # attitude, velocities, positions
TICK_S = 0.02  # wall-clock step of the simulation loop
TELEMETRY_EVERY = 5  # send telemetry every n ticks (10 Hz wall)
PARAMETERS = {
    "SYSID_THISMAV": 1.0,
    "WPNAV_SPEED": 1000.0,
    "WPNAV_SPEED_UP": 500.0,
    "WPNAV_SPEED_DN": 300.0,
    "RTL_ALT": 3000.0,
    "FS_GCS_ENABLE": 1.0,
    "FS_GCS_TIMEOUT": 3.0,
    "BATT_LOW_MAH": 0.0,
    "BATT_FS_LOW_ACT": 2.0,
    "BATT_LOW_VOLT": 0.0,
    "CAM_TRIGG_TYPE": 0.0,
    "FENCE_ENABLE": 0.0,
    "ARMING_CHECK": 1.0,
}


@dataclass(slots=True)
class Failures:
    """What goes wrong, in simulated seconds since arming (None: never)."""

    link_drop_at_s: float | None = None
    link_drop_for_s: float = 10.0  # wall seconds without any message either way
    link_drop_closes_socket: bool = False  # a hard drop: the TCP connection is lost too
    battery_sag_at_s: float | None = None
    battery_sag_to_pct: float = 18.0
    rtk_loss_at_s: float | None = None
    no_float_mission_items: bool = False  # reject MISSION_ITEM, as ArduPilot 4.8+ may
    no_camera_feedback: bool = False  # the camera shoots, CAMERA_FEEDBACK never comes


@dataclass(slots=True)
class VehicleConfig:
    home_lat_deg: float
    home_lon_deg: float
    home_amsl_m: float = 35.0
    speedup: float = 20.0
    gnss: GnssMode = GnssMode.RTK_FIXED
    flight_time_s: float = 40 * 60.0  # full battery
    battery_failsafe_pct: float = 15.0  # the vehicle's own failsafe: RTL below this
    wind_m_s: tuple[float, float] = (0.0, 0.0)  # east, north drift while hovering
    climb_m_s: float = 5.0
    descent_m_s: float = 3.0
    default_speed_m_s: float = 10.0
    failures: Failures = field(default_factory=Failures)
    gcs_timeout_s: float = 3.0  # wall seconds without a ground-station heartbeat -> RTL
    flight_folder: Path | None = None  # where rendered frames go (needs a district)
    camera: CameraModel | None = None
    # Ask for mission items with MISSION_REQUEST_INT, as the protocol prescribes and PX4 does;
    # False: the deprecated MISSION_REQUEST of older ArduPilot.
    mission_request_int: bool = True
    max_mission_items: int = 724  # ArduCopter's storage on a 16 kB FRAM board
    ready_after_s: float = 0.0  # wall seconds after start without GNSS fix, EKF or home
    # Distance triggering as ArduPilot does it: checked this often (simulated Hz), measured
    # from where the camera last fired, so every frame comes a little late. 0: exactly at
    # multiples of the trigger distance along the path (an ideal camera).
    trigger_check_hz: float = 50.0


@dataclass(slots=True)
class Trigger:
    index: int
    sim_time_s: float
    lat_deg: float
    lon_deg: float
    relative_alt_m: float
    yaw_deg: float
    gimbal_pitch_deg: float
    fix_type: int


class SimVehicle:
    """Run with `start`; connect DroneKit to ``tcp:127.0.0.1:<port>``; `stop` when done."""

    def __init__(self, config: VehicleConfig, district: District | None = None) -> None:
        self.config = config
        self.district = district
        self._to_local, self._to_global = _local_frame(config.home_lat_deg, config.home_lon_deg)
        self.east, self.north, self.alt = 0.0, 0.0, 0.0
        self.heading_deg = 0.0
        self.gimbal_pitch_deg = -90.0
        self.speed = config.default_speed_m_s
        self.armed = False
        self.mode = "STABILIZE"
        self.sim_time_s = 0.0
        self.armed_at_s: float | None = None
        self.battery_pct = 100.0
        self.battery_sagged = False
        self.rtk_lost = False
        self.mission: list[Any] = []
        self.current_seq = 0
        self.takeoff_alt: float | None = None
        self.trigger_distance = 0.0
        self.distance_since_trigger = 0.0
        self._last_fired: tuple[float, float] | None = None
        self.triggers: list[Trigger] = []
        self.events: list[tuple[float, str]] = []
        self._upload_expected = 0
        self._started_at = time.monotonic()
        self._last_gcs_heartbeat = time.monotonic()
        self._link_down_until = 0.0
        self._rtl_target_alt = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renderer = (
            ThreadPoolExecutor(1) if district is not None and config.flight_folder else None
        )
        self._renders: list[Future[Path]] = []
        self.connection: Any = None
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, port: int = 0, transport: str = "tcp") -> int:
        """Run on 127.0.0.1 (a free port if 0); returns the port.

        ``tcp``: listen for a ground station (``tcp:127.0.0.1:PORT`` in DroneKit); it may drop
        and reconnect. ``udp``: send to a ground station listening on PORT, as ArduPilot SITL
        sends to 14550 (``udp:127.0.0.1:PORT`` in DroneKit).
        """
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be tcp or udp, not {transport!r}")
        self.port = port or _free_port()
        device = (
            f"tcpin:127.0.0.1:{self.port}"
            if transport == "tcp"
            else f"udpout:127.0.0.1:{self.port}"
        )
        self.connection = mavutil.mavlink_connection(
            device,
            source_system=1,
            source_component=1,
            dialect="ardupilotmega",
        )
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="sim-vehicle", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._renderer is not None:
            self._renderer.shutdown(wait=True)
        if self.connection is not None:
            self.connection.close()

    def wait_rendered(self) -> list[Path]:
        """Block until every triggered frame is rendered; the JPEG paths."""
        return [future.result() for future in self._renders]

    def _event(self, text: str) -> None:
        self.events.append((self.sim_time_s, text))

    # --- main loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            started = time.monotonic()
            link_up = started >= self._link_down_until
            if link_up:
                self._receive()
            self._step(TICK_S * self.config.speedup, link_up)
            if link_up and tick % TELEMETRY_EVERY == 0:
                self._send_telemetry()
            tick += 1
            time.sleep(max(0.0, TICK_S - (time.monotonic() - started)))

    def _drop_closed_client(self) -> None:
        """pymavlink's TCP server never notices a client that hung up: accept the next one."""
        client = getattr(self.connection, "port", None)
        if not isinstance(client, socket.socket):
            return
        readable, _, _ = select.select([client], [], [], 0)
        if not readable:
            return
        try:
            gone = client.recv(1, socket.MSG_PEEK) == b""
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            gone = True
        if gone:
            client.close()
            self.connection.port = None
            self.connection.fd = self.connection.listen.fileno()
            self._event("ground station disconnected")

    def _receive(self) -> None:
        self._drop_closed_client()
        while True:
            try:
                message = self.connection.recv_match(blocking=False)
            except (OSError, ConnectionError):
                return
            if message is None:
                return
            self._handle(message)

    def _send_if(self, condition: bool, method: str, *args: Any) -> None:
        if condition:
            self._send(method, *args)

    def _send(self, method: str, *args: Any) -> None:
        if time.monotonic() < self._link_down_until:
            return
        # No client connected yet, or it went away: keep flying.
        with contextlib.suppress(OSError, ConnectionError, AttributeError):
            getattr(self.connection.mav, method)(*args)

    # --- message handling ----------------------------------------------------------------------

    def _handle(self, message: Any) -> None:
        kind = message.get_type()
        if kind == "HEARTBEAT":
            self._last_gcs_heartbeat = time.monotonic()
        elif kind == "PARAM_REQUEST_LIST":
            for index, (name, value) in enumerate(PARAMETERS.items()):
                self._send(
                    "param_value_send",
                    name.encode(),
                    value,
                    mavlink.MAV_PARAM_TYPE_REAL32,
                    len(PARAMETERS),
                    index,
                )
        elif kind == "PARAM_REQUEST_READ":
            names = list(PARAMETERS)
            index = (
                message.param_index if message.param_index >= 0 else names.index(message.param_id)
            )
            if 0 <= index < len(names):
                self._send(
                    "param_value_send",
                    names[index].encode(),
                    PARAMETERS[names[index]],
                    mavlink.MAV_PARAM_TYPE_REAL32,
                    len(names),
                    index,
                )
        elif kind == "SET_MODE":
            self._set_mode(MODE_NAMES.get(message.custom_mode, ""))
        elif kind == "COMMAND_LONG":
            self._command(message)
        elif kind == "MISSION_CLEAR_ALL":
            self.mission = []
            self._send("mission_ack_send", 255, 0, mavlink.MAV_MISSION_ACCEPTED)
        elif kind == "MISSION_COUNT":
            if message.count > self.config.max_mission_items:
                self._send("mission_ack_send", 255, 0, mavlink.MAV_MISSION_NO_SPACE)
                return
            self._upload_expected = message.count
            self.mission = []
            self._request_item(0)
        elif kind in ("MISSION_ITEM", "MISSION_ITEM_INT"):
            self._mission_item(message, kind)
        elif kind == "MISSION_REQUEST_LIST":
            self._send("mission_count_send", 255, 0, len(self.mission))
        elif kind in ("MISSION_REQUEST", "MISSION_REQUEST_INT"):
            self._send_mission_item(message.seq, as_int=kind == "MISSION_REQUEST_INT")
        elif kind == "MISSION_SET_CURRENT":
            self.current_seq = message.seq

    def _mission_item(self, message: Any, kind: str) -> None:
        if kind == "MISSION_ITEM" and self.config.failures.no_float_mission_items:
            self._send("mission_ack_send", 255, 0, mavlink.MAV_MISSION_UNSUPPORTED)
            self._event("refused a float MISSION_ITEM")
            return
        if message.seq != len(self.mission):
            self._request_item(len(self.mission))
            return
        # MISSION_ITEM_INT: degrees * 1e7 in global frames, plain numbers in MAV_FRAME_MISSION.
        global_int = kind == "MISSION_ITEM_INT" and message.frame != mavlink.MAV_FRAME_MISSION
        scale = 1e7 if global_int else 1.0
        x, y = message.x / scale, message.y / scale
        self.mission.append(
            {
                "command": message.command,
                "frame": message.frame,
                "params": [message.param1, message.param2, message.param3, message.param4],
                "lat": x,
                "lon": y,
                "alt": message.z,
            }
        )
        if len(self.mission) < self._upload_expected:
            self._request_item(len(self.mission))
        else:
            # Item 0 is home, as ArduPilot keeps it.
            self.mission[0].update(
                lat=self.config.home_lat_deg, lon=self.config.home_lon_deg, alt=0.0
            )
            self.current_seq = 1 if len(self.mission) > 1 else 0
            self._send("mission_ack_send", 255, 0, mavlink.MAV_MISSION_ACCEPTED)
            self._event(f"mission of {len(self.mission) - 1} items accepted")

    def _request_item(self, seq: int) -> None:
        if self.config.mission_request_int:
            self._send("mission_request_int_send", 255, 0, seq)
        else:
            self._send("mission_request_send", 255, 0, seq)

    def _send_mission_item(self, seq: int, as_int: bool) -> None:
        if not 0 <= seq < len(self.mission):
            self._send("mission_ack_send", 255, 0, mavlink.MAV_MISSION_INVALID_SEQUENCE)
            return
        item = self.mission[seq]
        if not as_int and self.config.failures.no_float_mission_items:
            return
        # MISSION_ITEM_INT carries degrees * 1e7 in global frames; MISSION_ITEM plain floats.
        scale = 1e7 if as_int and item["frame"] != mavlink.MAV_FRAME_MISSION else 1.0
        x, y = item["lat"] * scale, item["lon"] * scale
        self._send(
            "mission_item_int_send" if as_int else "mission_item_send",
            255,
            0,
            seq,
            item["frame"],
            item["command"],
            0,
            1,
            *item["params"],
            round(x) if as_int else x,
            round(y) if as_int else y,
            item["alt"],
        )

    def _ack(self, command: int, result: int) -> None:
        self._send("command_ack_send", command, result)

    def _command(self, message: Any) -> None:
        command = message.command
        accepted, denied = mavlink.MAV_RESULT_ACCEPTED, mavlink.MAV_RESULT_DENIED
        if command == mavlink.MAV_CMD_COMPONENT_ARM_DISARM:
            if message.param1 == 1:
                ready = self._fix_type() >= 3 and self.mode in ("GUIDED", "LOITER", "STABILIZE")
                if ready:
                    self.armed = True
                    self.armed_at_s = self.sim_time_s
                    self._event("armed")
                self._ack(command, accepted if ready else denied)
            else:
                if self.alt > 0.2:
                    self._ack(command, denied)
                else:
                    self.armed = False
                    self._event("disarmed")
                    self._ack(command, accepted)
        elif command == mavlink.MAV_CMD_NAV_TAKEOFF:
            if self.armed and self.mode == "GUIDED":
                self.takeoff_alt = float(message.param7)
                self._ack(command, accepted)
                self._event(f"takeoff to {self.takeoff_alt:.1f} m")
            else:
                self._ack(command, denied)
        elif command == mavlink.MAV_CMD_DO_SET_MODE:
            self._ack(
                command,
                accepted if self._set_mode(MODE_NAMES.get(int(message.param2), "")) else denied,
            )
        elif command == mavlink.MAV_CMD_DO_SET_CAM_TRIGG_DIST:
            self.trigger_distance = max(0.0, float(message.param1))
            self.distance_since_trigger = 0.0
            self._last_fired = None
            self._event(f"camera trigger distance {self.trigger_distance:.1f} m")
            self._ack(command, accepted)
        elif command == mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH:
            self._ack(command, accepted if self._set_mode("RTL") else denied)
        elif command == mavlink.MAV_CMD_REQUEST_MESSAGE:
            if int(message.param1) == mavlink.MAVLINK_MSG_ID_HOME_POSITION:
                self._send_home()
                self._ack(command, accepted)
            else:
                self._ack(command, mavlink.MAV_RESULT_UNSUPPORTED)
        elif command in (mavlink.MAV_CMD_GET_HOME_POSITION,):
            self._send_home()
            self._ack(command, accepted)
        elif command == mavlink.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES:
            self._send(
                "autopilot_version_send",
                0xFFFF,
                0x040600FF,
                0,
                0,
                0,
                b"\0" * 8,
                b"\0" * 8,
                b"\0" * 8,
                0,
                0,
                0,
            )
            self._ack(command, accepted)
        else:
            self._ack(command, mavlink.MAV_RESULT_UNSUPPORTED)

    def _set_mode(self, name: str) -> bool:
        if name not in MODES:
            return False
        if name == "AUTO" and (len(self.mission) < 2 or not self.armed):
            return False
        if name != self.mode:
            self._event(f"mode {self.mode} -> {name}")
        if name == "RTL":
            self._rtl_target_alt = max(self.alt, 15.0)
        self.mode = name
        return True

    # --- physics -----------------------------------------------------------------------------

    def _ready(self) -> bool:
        return time.monotonic() >= self._started_at + self.config.ready_after_s

    def _fix_type(self) -> int:
        if not self._ready():
            return 0
        return 3 if self.rtk_lost else FIX_TYPES[self.config.gnss]

    def _step(self, dt: float, link_up: bool) -> None:
        self.sim_time_s += dt
        self._inject_failures()
        if self.armed:
            self.battery_pct = max(0.0, self.battery_pct - 100.0 * dt / self.config.flight_time_s)
            if self.battery_pct < self.config.battery_failsafe_pct and self.mode not in (
                "RTL",
                "LAND",
            ):
                self._event(f"battery failsafe at {self.battery_pct:.0f} %")
                self._set_mode("RTL")
        gcs_silent = time.monotonic() - self._last_gcs_heartbeat
        if (
            self.armed
            and self.alt > 1.0
            and gcs_silent > self.config.gcs_timeout_s
            and self.mode not in ("RTL", "LAND")
        ):
            self._event("GCS failsafe: no heartbeat from the ground station")
            self._set_mode("RTL")
        if not self.armed:
            return
        if self.mode == "GUIDED" and self.takeoff_alt is not None:
            self._climb_to(self.takeoff_alt, dt)
        elif self.mode == "AUTO":
            self._auto(dt)
        elif self.mode == "RTL":
            self._rtl(dt)
        elif self.mode == "LAND":
            self._descend(dt)
        wind_e, wind_n = self.config.wind_m_s
        if self.mode in ("LOITER", "GUIDED") and self.alt > 1.0:
            self.east += wind_e * dt * 0.05  # position hold mostly cancels wind
            self.north += wind_n * dt * 0.05

    def _inject_failures(self) -> None:
        failures = self.config.failures
        since_arm = self.sim_time_s - self.armed_at_s if self.armed_at_s is not None else -1.0
        if failures.link_drop_at_s is not None and since_arm >= failures.link_drop_at_s:
            failures.link_drop_at_s = None
            self._link_down_until = time.monotonic() + failures.link_drop_for_s
            self._event("link dropped")
            client = getattr(self.connection, "port", None)
            if failures.link_drop_closes_socket and isinstance(client, socket.socket):
                client.close()
                self.connection.port = None
                self.connection.fd = self.connection.listen.fileno()
        if (
            failures.battery_sag_at_s is not None
            and since_arm >= failures.battery_sag_at_s
            and not self.battery_sagged
        ):
            self.battery_sagged = True
            self.battery_pct = min(self.battery_pct, failures.battery_sag_to_pct)
            self._event(f"battery sagged to {self.battery_pct:.0f} %")
        if (
            failures.rtk_loss_at_s is not None
            and since_arm >= failures.rtk_loss_at_s
            and not self.rtk_lost
        ):
            self.rtk_lost = True
            self._event("RTK lost")

    def _climb_to(self, target: float, dt: float) -> bool:
        if abs(self.alt - target) < 0.05:
            self.alt = target
            return True
        rate = self.config.climb_m_s if target > self.alt else self.config.descent_m_s
        step = min(abs(target - self.alt), rate * dt)
        self.alt += math.copysign(step, target - self.alt)
        return abs(self.alt - target) < 0.05

    def _move_to(self, east: float, north: float, dt: float, speed: float) -> bool:
        """Fly horizontally towards a point, triggering the camera by distance; True on arrival."""
        dx, dy = east - self.east, north - self.north
        remaining = math.hypot(dx, dy)
        if remaining < 0.01:
            return True
        step = min(remaining, speed * dt)
        ux, uy = dx / remaining, dy / remaining
        self.heading_deg = math.degrees(math.atan2(ux, uy)) % 360.0
        if self.config.trigger_check_hz > 0:
            self._move_sampled(ux, uy, step, speed / self.config.trigger_check_hz)
            return step >= remaining - 1e-9
        travelled = 0.0
        while (
            self.trigger_distance > 0
            and self.distance_since_trigger + (step - travelled) >= self.trigger_distance
        ):
            advance = self.trigger_distance - self.distance_since_trigger
            travelled += advance
            self.east += ux * advance
            self.north += uy * advance
            self.distance_since_trigger = 0.0
            self._trigger()
        rest = step - travelled
        self.east += ux * rest
        self.north += uy * rest
        if self.trigger_distance > 0:
            self.distance_since_trigger += rest
        return step >= remaining - 1e-9

    def _move_sampled(self, ux: float, uy: float, step: float, per_check: float) -> None:
        """Move ``step`` metres, checking the distance from the last trigger every
        ``per_check`` metres (AP_Camera's loop), and fire once it is reached."""
        moved = 0.0
        while moved < step - 1e-9:
            piece = min(per_check, step - moved)
            self.east += ux * piece
            self.north += uy * piece
            moved += piece
            if self.trigger_distance <= 0:
                continue
            if self._last_fired is None:
                self._last_fired = (self.east, self.north)
            gone = math.dist(self._last_fired, (self.east, self.north))
            if gone >= self.trigger_distance:
                self._trigger()

    def _auto(self, dt: float) -> None:
        budget = 50  # items without motion processed in one step
        while budget > 0 and self.current_seq < len(self.mission):
            item = self.mission[self.current_seq]
            command = item["command"]
            if command == mavlink.MAV_CMD_NAV_TAKEOFF:
                if not self._climb_to(item["alt"], dt):
                    return
            elif command == mavlink.MAV_CMD_NAV_WAYPOINT:
                east, north = self._to_local(item["lon"], item["lat"])
                arrived = self._move_to(east, north, dt, self.speed)
                level = self._climb_to(item["alt"], dt)
                if not (arrived and level):
                    return
            elif command == mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH:
                self._set_mode("RTL")
                self._advance()
                return
            elif command == mavlink.MAV_CMD_DO_CHANGE_SPEED:
                if item["params"][1] > 0:
                    self.speed = item["params"][1]
            elif command == mavlink.MAV_CMD_DO_SET_CAM_TRIGG_DIST:
                self.trigger_distance = max(0.0, item["params"][0])
                self.distance_since_trigger = 0.0
                self._last_fired = None
                if self.trigger_distance > 0 and item["params"][2] >= 1:
                    self._trigger()
            elif command == mavlink.MAV_CMD_CONDITION_YAW:
                self.heading_deg = item["params"][0] % 360.0
            elif command == mavlink.MAV_CMD_DO_MOUNT_CONTROL:
                self.gimbal_pitch_deg = item["params"][0]
            elif command == mavlink.MAV_CMD_DO_DIGICAM_CONTROL:
                self._trigger()
            self._advance()
            budget -= 1
        if self.current_seq >= len(self.mission):
            self._set_mode("LOITER")

    def _advance(self) -> None:
        self._send("mission_item_reached_send", self.current_seq)
        self.current_seq += 1
        self._send("mission_current_send", min(self.current_seq, max(len(self.mission) - 1, 0)))

    def _rtl(self, dt: float) -> None:
        # Like ArduPilot, RTL does not stop distance triggering: the ground station must.
        if math.hypot(self.east, self.north) > 0.5:
            if self._climb_to(self._rtl_target_alt, dt):
                self._move_to(0.0, 0.0, dt, self.config.default_speed_m_s)
            return
        self._descend(dt)

    def _descend(self, dt: float) -> None:
        self.alt = max(0.0, self.alt - self.config.descent_m_s * dt)
        if self.alt <= 0.0:
            self.armed = False
            self.takeoff_alt = None
            self._event("landed and disarmed")
            self.mode = "LAND" if self.mode == "LAND" else self.mode

    def _trigger(self) -> None:
        self._last_fired = (self.east, self.north)
        lon, lat = self._to_global(self.east, self.north)
        trigger = Trigger(
            len(self.triggers),
            self.sim_time_s,
            lat,
            lon,
            self.alt,
            self.heading_deg,
            self.gimbal_pitch_deg,
            self._fix_type(),
        )
        self.triggers.append(trigger)
        time_usec = int(self.sim_time_s * 1e6)
        self._send_if(
            not self.config.failures.no_camera_feedback,
            "camera_feedback_send",
            time_usec,
            1,
            0,
            trigger.index,
            round(lat * 1e7),
            round(lon * 1e7),
            self.config.home_amsl_m + self.alt,
            self.alt,
            0.0,
            self.gimbal_pitch_deg,
            self.heading_deg,
            0.0,
            0,
        )
        if self._renderer is not None:
            self._renders.append(self._renderer.submit(self._render, trigger))

    def _render(self, trigger: Trigger) -> Path:
        assert self.district is not None and self.config.flight_folder is not None
        district = self.district
        east, north = district.from_lonlat().transform(trigger.lon_deg, trigger.lat_deg)
        moment = datetime(2026, 11, 23, 2, 0, tzinfo=UTC) + timedelta(seconds=trigger.sim_time_s)
        pitch = max(-90.0, min(trigger.gimbal_pitch_deg, -5.0))
        pose = pose_at(
            district,
            east,
            north,
            max(trigger.relative_alt_m, 1.0),
            gimbal_yaw_deg=trigger.yaw_deg,
            gimbal_pitch_deg=pitch,
            time_utc=moment,
        )
        gnss = (
            GnssMode.SINGLE
            if trigger.fix_type < 5
            else (GnssMode.RTK_FLOAT if trigger.fix_type == 5 else GnssMode.RTK_FIXED)
        )
        camera = self.config.camera or camera_preset("m3e", 0.1)
        shot = shoot(district, pose, camera, PoseNoise(gnss), seed=trigger.index)
        return write_shot(shot, district, self.config.flight_folder, f"DJI_{trigger.index + 1:04d}")

    # --- telemetry -----------------------------------------------------------------------------

    def _send_home(self) -> None:
        if not self._ready():
            return
        lat = round(self.config.home_lat_deg * 1e7)
        lon = round(self.config.home_lon_deg * 1e7)
        alt = round(self.config.home_amsl_m * 1000)
        self._send("home_position_send", lat, lon, alt, 0, 0, 0, [1, 0, 0, 0], 0, 0, 0)

    def _send_telemetry(self) -> None:
        base = mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | (
            mavlink.MAV_MODE_FLAG_SAFETY_ARMED if self.armed else 0
        )
        state = mavlink.MAV_STATE_ACTIVE if self.armed else mavlink.MAV_STATE_STANDBY
        self._send(
            "heartbeat_send",
            mavlink.MAV_TYPE_QUADROTOR,
            mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA,
            base,
            MODES[self.mode],
            state,
        )
        lon, lat = self._to_global(self.east, self.north)
        boot_ms = int(self.sim_time_s * 1000) & 0xFFFFFFFF
        fix = self._fix_type()
        self._send(
            "gps_raw_int_send",
            int(self.sim_time_s * 1e6),
            fix,
            round(lat * 1e7),
            round(lon * 1e7),
            round((self.config.home_amsl_m + self.alt) * 1000),
            70 if fix >= 5 else 120,
            100,
            int(self.speed * 100),
            int(self.heading_deg * 100),
            24,
        )
        self._send(
            "global_position_int_send",
            boot_ms,
            round(lat * 1e7),
            round(lon * 1e7),
            round((self.config.home_amsl_m + self.alt) * 1000),
            round(self.alt * 1000),
            0,
            0,
            0,
            int(self.heading_deg * 100),
        )
        self._send(
            "attitude_send", boot_ms, 0.0, 0.0, math.radians(self.heading_deg), 0.0, 0.0, 0.0
        )
        self._send(
            "vfr_hud_send",
            float(self.speed if self.armed else 0.0),
            float(self.speed if self.armed else 0.0),
            int(self.heading_deg),
            50 if self.armed else 0,
            float(self.config.home_amsl_m + self.alt),
            0.0,
        )
        voltage = int((13.2 + 3.6 * self.battery_pct / 100.0) * 1000)
        self._send(
            "sys_status_send", 0, 0, 0, 500, voltage, 1500, int(self.battery_pct), 0, 0, 0, 0, 0, 0
        )
        ekf = EKF_OK if self._ready() else 0
        self._send("ekf_status_report_send", ekf, 0.1, 0.1, 0.1, 0.1, 0.1)
        self._send("mission_current_send", min(self.current_seq, max(len(self.mission) - 1, 0)))

    # --- results ------------------------------------------------------------------------------

    def write_log(self, folder: Path) -> Path:
        """The vehicle's own record of triggers and events (for tests and debugging)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "vehicle.json"
        path.write_text(
            json.dumps(
                {"triggers": [asdict(t) for t in self.triggers], "events": self.events},
                indent=1,
            ),
            encoding="utf-8",
        )
        return path


def _local_frame(lat: float, lon: float) -> tuple[Any, Any]:
    """Transforms lon/lat <-> east/north metres around (lat, lon) (azimuthal equidistant)."""
    from pyproj import Transformer

    local = f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m"
    forward = Transformer.from_crs("EPSG:4326", local, always_xy=True)
    backward = Transformer.from_crs(local, "EPSG:4326", always_xy=True)
    return (lambda lon_, lat_: forward.transform(lon_, lat_)), (
        lambda e, n: backward.transform(e, n)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
