"""DJI RTK ``*_Timestamp.MRK`` files: the position of every shot as the RTK module logged it.

DJI's RTK drones (Phantom 4 RTK, Matrice 300/350 RTK, Mavic 3 Enterprise) write one beside the
photos of each flight, one tab-separated line per shot::

    1  282401.669089  [2404]  101,N  107,E  129,V  22.77995359,Lat  114.10089118,Lon
       139.231,Ellh  0.002967, 0.003104, 0.007622  50,Q

shot number (the photo's sequence number), GPS seconds of week, [GPS week], the offset from
the antenna phase centre to the camera's sensor in mm north, east and up, latitude, longitude,
ellipsoidal height (m), the standard deviations north, east, up (m) and the solution quality
(50 fixed, 34 float, 16 single). These positions are newer and better than the EXIF ones (the
photo is tagged before the RTK solution settles), so a frame the file names takes its
position, quality and uncertainty from it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from geo.errors import GeoError
from geo.frames import RTK_FLAGS, FrameMeta, PositionQuality

GPS_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)
GPS_UTC_LEAP_S = 18  # GPS time runs ahead of UTC by 18 s since 2017
EARTH_RADIUS_M = 6_378_137.0
_LINE = re.compile(
    r"^\s*(?P<index>\d+)\s+(?P<sow>[\d.]+)\s+\[(?P<week>\d+)\]\s+"
    r"(?P<n>-?\d+(?:\.\d+)?),N\s+(?P<e>-?\d+(?:\.\d+)?),E\s+(?P<v>-?\d+(?:\.\d+)?),V\s+"
    r"(?P<lat>-?[\d.]+),Lat\s+(?P<lon>-?[\d.]+),Lon\s+(?P<h>-?[\d.]+),Ellh\s+"
    r"(?P<sn>[\d.]+),\s*(?P<se>[\d.]+),\s*(?P<sv>[\d.]+)\s+(?P<q>\d+),Q\s*$"
)
_SEQUENCE = re.compile(r"_(\d{4})(?:_[A-Za-z]+)?\.jpe?g$", re.IGNORECASE)


class MrkError(GeoError):
    """An MRK file that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class MrkShot:
    index: int
    time: datetime  # UTC
    lat_deg: float  # the camera's, after the antenna offset
    lon_deg: float
    ellipsoidal_height_m: float
    std_north_m: float
    std_east_m: float
    std_up_m: float
    quality_flag: int

    @property
    def quality(self) -> PositionQuality:
        return RTK_FLAGS.get(self.quality_flag, PositionQuality.UNKNOWN)


def read_mrk(path: Path) -> dict[int, MrkShot]:
    """Every shot of an MRK file by its number; a line that is not an MRK line is an error
    naming it (blank lines are skipped)."""
    shots: dict[int, MrkShot] = {}
    try:
        text = path.read_text(encoding="ascii", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise MrkError(f"{path}: not a readable MRK text file ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise MrkError(
                f"{path}, line {number}: not a DJI MRK line (shot, seconds of week, [week], "
                f"N/E/V offsets, Lat, Lon, Ellh, three std devs, Q): {line.strip()[:80]!r}"
            )
        try:
            shot = _shot(match)
        except ValueError as exc:
            raise MrkError(f"{path}, line {number}: {exc}") from None
        if shot.index in shots:
            raise MrkError(f"{path}, line {number}: shot {shot.index} is listed twice")
        shots[shot.index] = shot
    if not shots:
        raise MrkError(f"{path}: no shots in the file")
    return shots


def _shot(match: re.Match[str]) -> MrkShot:
    lat, lon = float(match["lat"]), float(match["lon"])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        raise ValueError(f"position {lat}, {lon} is not a place on Earth the drone flew")
    north_m, east_m, up_m = (float(match[k]) / 1000.0 for k in ("n", "e", "v"))
    # The antenna-to-sensor offset, applied on the local tangent plane (it is tens of cm).
    lat += math.degrees(north_m / EARTH_RADIUS_M)
    lon += math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    gps_time = GPS_EPOCH + timedelta(weeks=int(match["week"]), seconds=float(match["sow"]))
    return MrkShot(
        index=int(match["index"]),
        time=gps_time - timedelta(seconds=GPS_UTC_LEAP_S),
        lat_deg=lat,
        lon_deg=lon,
        ellipsoidal_height_m=float(match["h"]) + up_m,
        std_north_m=float(match["sn"]),
        std_east_m=float(match["se"]),
        std_up_m=float(match["sv"]),
        quality_flag=int(match["q"]),
    )


def frame_sequence(name: str) -> int | None:
    """The shot number in a DJI file name (``DJI_20240301103015_0042_D.JPG`` -> 42,
    ``DJI_0042.JPG`` -> 42), or None."""
    match = _SEQUENCE.search(name)
    return int(match[1]) if match else None


def apply_shot(meta: FrameMeta, shot: MrkShot) -> FrameMeta:
    """``meta`` with the MRK's position, quality and uncertainty."""
    return dataclasses.replace(
        meta,
        lat_deg=shot.lat_deg,
        lon_deg=shot.lon_deg,
        rtk_flag=shot.quality_flag,
        position_quality=shot.quality,
        horizontal_std_m=math.sqrt((shot.std_north_m**2 + shot.std_east_m**2) / 2.0),
        vertical_std_m=shot.std_up_m,
    )


@dataclass(frozen=True)
class MrkPositions:
    """The MRK files of a folder of frames, and which frames they name."""

    shots: dict[int, MrkShot]
    files: tuple[Path, ...]
    problems: tuple[str, ...]  # files that could not be used, and why

    @classmethod
    def for_folder(cls, folder: Path) -> MrkPositions:
        """Read every ``*.MRK`` in ``folder``. One flight's file is used; several files that
        number the same shots (several flights in one folder) cannot say which photo is which
        and are not used."""
        files = tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() == ".mrk"))
        shots: dict[int, MrkShot] = {}
        problems: list[str] = []
        for path in files:
            try:
                found = read_mrk(path)
            except MrkError as exc:
                problems.append(str(exc))
                continue
            clash = shots.keys() & found.keys()
            if clash:
                problems.append(
                    f"{path.name} numbers shots another MRK file in the folder numbers too "
                    f"(e.g. {min(clash)}): keep one flight per folder; neither is used for those"
                )
                for index in clash:
                    shots.pop(index)
                found = {k: v for k, v in found.items() if k not in clash}
            shots.update(found)
        return cls(shots=shots, files=files, problems=tuple(problems))

    def position(self, meta: FrameMeta, name: str) -> tuple[FrameMeta, bool]:
        """``meta`` placed by the MRK when it names the frame (and True), else unchanged."""
        sequence = frame_sequence(name)
        shot = self.shots.get(sequence) if sequence is not None else None
        if shot is None:
            return meta, False
        return apply_shot(meta, shot), True
