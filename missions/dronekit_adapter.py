"""The only module that imports DroneKit (dronekit2, same ``dronekit`` import name).

It hides DroneKit's traps behind a small `DroneLink`: a watchdog around ``connect`` (which
can hang forever without PARAM_VALUE), its own mission upload (DroneKit answers only
MISSION_REQUEST; PX4 and the mission protocol ask with MISSION_REQUEST_INT: both are served,
always with MISSION_ITEM_INT, which ArduPilot 4.8+ requires), a mission read-back over
MISSION_REQUEST_INT, home asked for with MAV_CMD_REQUEST_MESSAGE, and take-off in GUIDED
before AUTO.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dronekit
from pymavlink import mavutil

from missions.errors import MissionError
from missions.model import MavCmd, MavFrame, MissionItem

mavlink = mavutil.mavlink
MSG_ID_HOME_POSITION = 242
LINK_NOISE_EVERY_S = 30.0  # repeated link complaints pass at most this often
RECONNECT_PAUSE_S = 0.5  # between pymavlink's attempts to reopen a dropped TCP link

_log = logging.getLogger("missions.link")


class _Sparse(logging.Filter):
    """Passes a repeated message once per LINK_NOISE_EVERY_S, saying how many it held back."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        last, held = self._last.get(key, (-LINK_NOISE_EVERY_S, 0))
        if now - last < LINK_NOISE_EVERY_S:
            self._last[key] = (last, held + 1)
            return False
        self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it held back)"
        record.exc_info = None  # one line, not a traceback per dropped packet
        return True


def _pymavlink_print(*args: object, **_kwargs: object) -> None:
    """pymavlink prints each EOF and reconnect attempt on a dropped TCP link (millions of lines
    over a minute's outage): they go to our logger, thinned out, instead of stdout."""
    _log.warning("pymavlink: %s", " ".join(str(a) for a in args))


mavutil.print = _pymavlink_print
# A logger's filters see only the records logged on it, not its children's: name each one.
for _name in (
    "missions.link",
    "dronekit",
    "dronekit.mavlink",
    "dronekit.vehicle",
    "dronekit.observers",
    "dronekit.parameters",
):
    logging.getLogger(_name).addFilter(_Sparse())
RESEND_AFTER_S = 1.5  # the mission protocol's retry pause when an answer is lost


class LinkError(MissionError):
    """The vehicle cannot be reached, or stopped answering."""


@dataclass(frozen=True, slots=True)
class VehicleState:
    mode: str
    armed: bool
    lat_deg: float
    lon_deg: float
    relative_alt_m: float
    battery_pct: float | None
    gps_fix_type: int
    next_item: int  # index into the uploaded items (0 = the first item after home)
    heartbeat_age_s: float


@dataclass(frozen=True, slots=True)
class CameraEvent:
    index: int
    lat_deg: float
    lon_deg: float
    relative_alt_m: float
    yaw_deg: float
    time_usec: int


class DroneLink:
    """A connected vehicle. Use `connect` to make one; `close` when done."""

    def __init__(self, vehicle: Any, address: str) -> None:
        self._vehicle = vehicle
        self.address = address
        self._camera_listeners: list[Callable[[CameraEvent], None]] = []
        self._mission_items: dict[int, Any] = {}
        self._mission_count: int | None = None
        self._mission_event = threading.Event()
        self._count_event = threading.Event()
        self._upload_inbox: queue.Queue[tuple[str, int]] = queue.Queue()
        # Our own clock of the vehicle's heartbeats: DroneKit's `last_heartbeat` is refreshed
        # by its message loop, so it freezes (looking fresh) once that loop dies with the link.
        self._heartbeat_at = time.monotonic()
        vehicle.add_message_listener("HEARTBEAT", self._on_heartbeat)
        vehicle.add_message_listener("CAMERA_FEEDBACK", self._on_camera)
        vehicle.add_message_listener("MISSION_ITEM_INT", self._on_mission_item)
        vehicle.add_message_listener("MISSION_COUNT", self._on_mission_count)
        vehicle.add_message_listener("MISSION_REQUEST", self._on_mission_request)
        vehicle.add_message_listener("MISSION_REQUEST_INT", self._on_mission_request)
        vehicle.add_message_listener("MISSION_ACK", self._on_mission_ack)

    @classmethod
    def connect(cls, address: str, timeout_s: float = 30.0) -> DroneLink:
        """Connect and wait for parameters, GNSS, mode and attitude, within ``timeout_s``."""
        result: dict[str, Any] = {}

        def attempt() -> None:
            try:
                result["vehicle"] = dronekit.connect(
                    address, wait_ready=True, timeout=timeout_s, heartbeat_timeout=timeout_s
                )
            except Exception as exc:  # DroneKit raises bare Exceptions and socket errors
                result["error"] = exc

        worker = threading.Thread(target=attempt, name="dronekit-connect", daemon=True)
        worker.start()
        worker.join(timeout_s + 2.0)
        if worker.is_alive():
            raise LinkError(
                f"no answer from {address} within {timeout_s:.0f} s (no heartbeat or parameters); "
                "check the address and that the vehicle is powered"
            )
        if "error" in result:
            raise LinkError(f"cannot connect to {address}: {result['error']}")
        _pace_reconnects(result["vehicle"]._master)
        return cls(result["vehicle"], address)

    def close(self) -> None:
        self._vehicle.close()

    # --- state ----------------------------------------------------------------------------

    def state(self) -> VehicleState:
        v = self._vehicle
        location = v.location.global_relative_frame
        battery = v.battery.level if v.battery is not None else None
        return VehicleState(
            mode=v.mode.name,
            armed=bool(v.armed),
            lat_deg=float(location.lat or 0.0),
            lon_deg=float(location.lon or 0.0),
            relative_alt_m=float(location.alt or 0.0),
            battery_pct=None if battery is None else float(battery),
            gps_fix_type=int(v.gps_0.fix_type or 0),
            next_item=max(int(v.commands.next or 0) - 1, 0),
            heartbeat_age_s=time.monotonic() - self._heartbeat_at,
        )

    def is_armable(self) -> bool:
        return bool(self._vehicle.is_armable)

    def home(self, timeout_s: float = 10.0) -> tuple[float, float, float]:
        """Home (lat, lon, amsl m), asked for with MAV_CMD_REQUEST_MESSAGE(HOME_POSITION)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            home = self.home_now()
            if home is not None:
                return home
            time.sleep(0.3)
        raise LinkError(f"the vehicle did not report its home position within {timeout_s:.0f} s")

    def home_now(self) -> tuple[float, float, float] | None:
        """Home (lat, lon, amsl m) if the vehicle has reported it; asks for it again."""
        home = self._vehicle.home_location
        if home is not None and home.lat is not None:
            return float(home.lat), float(home.lon), float(home.alt or 0.0)
        self._command_long(mavlink.MAV_CMD_REQUEST_MESSAGE, MSG_ID_HOME_POSITION)
        return None

    def stop_camera(self) -> None:
        """Stop distance triggering (MAV_CMD_DO_SET_CAM_TRIGG_DIST 0), e.g. before RTL."""
        self._command_long(mavlink.MAV_CMD_DO_SET_CAM_TRIGG_DIST, 0.0, 0.0, 0.0)

    # --- mission ----------------------------------------------------------------------------

    def upload(
        self, home: tuple[float, float], items: Sequence[MissionItem], timeout_s: float
    ) -> None:
        """Replace the vehicle's mission (item 0 is home, as ArduPilot keeps it).

        The MAVLink mission protocol run here rather than by DroneKit: MISSION_COUNT, then the
        vehicle asks for each item (MISSION_REQUEST_INT, or the deprecated MISSION_REQUEST)
        and gets a MISSION_ITEM_INT, until its MISSION_ACK. A lost message is sent again after
        a pause; a refusal is an error naming the vehicle's reason."""
        home_item = MissionItem(
            MavCmd.NAV_WAYPOINT, MavFrame.GLOBAL, lat_deg=home[0], lon_deg=home[1]
        )
        mission = [home_item, *items]
        master = self._vehicle._master
        while not self._upload_inbox.empty():  # acks left over from earlier exchanges
            self._upload_inbox.get_nowait()
        deadline = time.monotonic() + timeout_s

        def send_count() -> None:
            master.mav.mission_count_send(
                master.target_system, master.target_component, len(mission), 0
            )

        resend: Callable[[], None] = send_count
        resend()
        asked: set[int] = set()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LinkError(
                    f"mission upload did not finish within {timeout_s:.0f} s "
                    f"({len(asked)} of {len(mission)} items asked for by the vehicle)"
                )
            try:
                kind, value = self._upload_inbox.get(timeout=min(RESEND_AFTER_S, left))
            except queue.Empty:
                resend()
                continue
            if kind == "ack":
                if value == mavlink.MAV_MISSION_ACCEPTED and len(asked) == len(mission):
                    return
                if value == mavlink.MAV_MISSION_ACCEPTED:
                    continue  # an ack that belongs to an earlier exchange
                raise LinkError(
                    f"the vehicle refused the mission: {_mission_result(value)} "
                    f"(after {len(asked)} of {len(mission)} items)"
                )
            if not 0 <= value < len(mission):
                raise LinkError(f"the vehicle asked for mission item {value} of {len(mission)}")
            asked.add(value)
            seq = value

            def send_item(seq: int = seq) -> None:
                _send_item_int(master, seq, mission[seq])

            resend = send_item
            resend()

    def _on_heartbeat(self, _vehicle: Any, _name: str, message: Any) -> None:
        if int(message.type) != mavlink.MAV_TYPE_GCS:
            self._heartbeat_at = time.monotonic()

    def _on_mission_request(self, _vehicle: Any, _name: str, message: Any) -> None:
        self._upload_inbox.put(("request", int(message.seq)))

    def _on_mission_ack(self, _vehicle: Any, _name: str, message: Any) -> None:
        if int(getattr(message, "mission_type", 0) or 0) == 0:
            self._upload_inbox.put(("ack", int(message.type)))

    def read_back(self, timeout_s: float) -> list[tuple[int, float, float, float]]:
        """The vehicle's mission as (command, lat, lon, alt), read with MISSION_REQUEST_INT."""
        self._mission_items = {}
        self._mission_count = None
        self._count_event.clear()
        self._mission_event.clear()
        master = self._vehicle._master
        master.mav.mission_request_list_send(master.target_system, master.target_component)
        deadline = time.monotonic() + timeout_s
        if not self._count_event.wait(timeout_s):
            raise LinkError("the vehicle did not answer MISSION_REQUEST_LIST")
        count = self._mission_count or 0
        for seq in range(count):
            for _ in range(5):
                self._mission_event.clear()
                master.mav.mission_request_int_send(
                    master.target_system, master.target_component, seq
                )
                if (
                    self._mission_event.wait(max(0.1, min(1.0, deadline - time.monotonic())))
                    and seq in self._mission_items
                ):
                    break
            if seq not in self._mission_items:
                raise LinkError(f"mission item {seq} could not be read back")
        master.mav.mission_ack_send(
            master.target_system, master.target_component, mavlink.MAV_MISSION_ACCEPTED
        )
        return [self._mission_items[seq] for seq in range(count)]

    def _on_mission_count(self, _vehicle: Any, _name: str, message: Any) -> None:
        self._mission_count = int(message.count)
        self._count_event.set()

    def _on_mission_item(self, _vehicle: Any, _name: str, message: Any) -> None:
        scale = 1.0 if message.frame == MavFrame.MISSION else 1e7
        self._mission_items[int(message.seq)] = (
            int(message.command),
            message.x / scale,
            message.y / scale,
            float(message.z),
        )
        self._mission_event.set()

    # --- control ----------------------------------------------------------------------------

    def set_mode(self, name: str, timeout_s: float = 5.0) -> None:
        self._vehicle.mode = dronekit.VehicleMode(name)
        self._wait(lambda: self._vehicle.mode.name == name, timeout_s, f"mode {name}")

    def arm(self, timeout_s: float = 10.0) -> None:
        self._vehicle.armed = True
        self._wait(lambda: bool(self._vehicle.armed), timeout_s, "arming")

    def takeoff(self, altitude_m: float) -> None:
        self._vehicle.simple_takeoff(altitude_m)

    def return_to_launch(self) -> None:
        self._vehicle.mode = dronekit.VehicleMode("RTL")

    def on_camera(self, listener: Callable[[CameraEvent], None]) -> None:
        self._camera_listeners.append(listener)

    def _on_camera(self, _vehicle: Any, _name: str, message: Any) -> None:
        event = CameraEvent(
            int(message.img_idx),
            message.lat / 1e7,
            message.lng / 1e7,
            float(message.alt_rel),
            float(message.yaw),
            int(message.time_usec),
        )
        for listener in self._camera_listeners:
            listener(event)

    def _command_long(self, command: int, *params: float) -> None:
        values = [*params] + [0.0] * (7 - len(params))
        message = self._vehicle.message_factory.command_long_encode(0, 0, command, 0, *values)
        self._vehicle.send_mavlink(message)

    def _wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise LinkError(f"{what} not confirmed by the vehicle within {timeout_s:.0f} s")
            time.sleep(0.05)


def _pace_reconnects(master: Any) -> None:
    """pymavlink reopens a TCP link that hit EOF at once, in a tight loop while the vehicle is
    gone: pause between attempts."""
    for name in ("handle_eof", "handle_disconnect"):
        original = getattr(master, name, None)
        if original is None:
            continue

        def paced(original: Callable[[], None] = original) -> None:
            time.sleep(RECONNECT_PAUSE_S)
            original()

        setattr(master, name, paced)


def _send_item_int(master: Any, seq: int, item: MissionItem) -> None:
    """A MISSION_ITEM_INT: x/y are degrees * 1e7 in global frames, plain integers otherwise."""
    scale = 1e7 if item.frame is not MavFrame.MISSION else 1.0
    master.mav.mission_item_int_send(
        master.target_system,
        master.target_component,
        seq,
        int(item.frame),
        int(item.command),
        0,
        1 if item.autocontinue else 0,
        item.param1,
        item.param2,
        item.param3,
        item.param4,
        round(item.lat_deg * scale),
        round(item.lon_deg * scale),
        item.altitude_m,
        0,
    )


def _mission_result(value: int) -> str:
    entry = mavlink.enums["MAV_MISSION_RESULT"].get(value)
    return f"{entry.name} ({entry.description.rstrip('.')})" if entry else f"result {value}"
