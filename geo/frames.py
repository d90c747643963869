"""Frame metadata: EXIF GPS and camera tags plus DJI ``drone-dji:`` XMP, read defensively.

Real files vary: XMP written as attributes (DJI cameras) or as elements (after exiftool),
signed strings such as ``"+451.659"``, DJI's misspelled ``GpsLongtitude``, rational or decimal
GPS values, missing gimbal tags on fixed nadir cameras. A frame without a usable position is
an error naming the missing tag; it is never placed at 0,0.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeElementTree
from defusedxml.common import DefusedXmlException
from PIL import Image, UnidentifiedImageError

from geo.errors import GeoError

DJI_NAMESPACE_MARK = "dji.com/drone-dji"
TAG_MAKE, TAG_MODEL = 0x010F, 0x0110
TAG_XML_PACKET = 0x02BC  # XMP kept inside EXIF IFD0, as desktop tools rewrite DJI photos
TAG_EXIF_IFD, TAG_GPS_IFD = 0x8769, 0x8825
TAG_DATETIME_ORIGINAL, TAG_OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
TAG_FOCAL_LENGTH, TAG_FOCAL_35MM = 0x920A, 0xA405
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON, GPS_ALT_REF, GPS_ALT = 1, 2, 3, 4, 5, 6


class FrameMetadataError(GeoError):
    """A frame's metadata is missing or unusable; ``tag`` names what is missing, if one is."""

    def __init__(self, source: str, message: str, tag: str | None = None) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.tag = tag


class PositionQuality(StrEnum):
    RTK_FIXED = "rtk_fixed"
    RTK_FLOAT = "rtk_float"
    SINGLE = "single"
    UNKNOWN = "unknown"


# Horizontal 1-sigma per axis (m) assumed when a frame states its quality but no RtkStd.
DEFAULT_HORIZONTAL_STD_M = {
    PositionQuality.RTK_FIXED: 0.03,
    PositionQuality.RTK_FLOAT: 0.7,
    PositionQuality.SINGLE: 3.0,
    PositionQuality.UNKNOWN: 5.0,
}
DEFAULT_VERTICAL_STD_M = {
    PositionQuality.RTK_FIXED: 0.05,
    PositionQuality.RTK_FLOAT: 1.0,
    PositionQuality.SINGLE: 5.0,
    PositionQuality.UNKNOWN: 8.0,
}
RTK_FLAGS = {
    50: PositionQuality.RTK_FIXED,
    34: PositionQuality.RTK_FLOAT,
    16: PositionQuality.SINGLE,
}


@dataclass(frozen=True, slots=True)
class FrameMeta:
    """What a frame says about where and how it was taken. Angles in degrees, lengths in m."""

    source: str
    width_px: int
    height_px: int
    make: str | None
    model: str | None
    captured_at: datetime | None  # timezone-aware when the file states its offset
    lat_deg: float
    lon_deg: float
    gps_altitude_m: float | None  # EXIF GPSAltitude, signed by GPSAltitudeRef
    absolute_altitude_m: float | None
    relative_altitude_m: float | None  # above the take-off point
    gimbal_yaw_deg: float | None
    gimbal_pitch_deg: float | None
    gimbal_roll_deg: float | None
    flight_yaw_deg: float | None
    flight_pitch_deg: float | None
    flight_roll_deg: float | None
    focal_length_mm: float | None
    focal_length_35mm: float | None
    calibrated_focal_px: float | None
    optical_center_x_px: float | None
    optical_center_y_px: float | None
    distortion: tuple[float, ...]  # k1, k2, p1, p2, k3 of a frame that is not dewarped; () if none
    rtk_flag: int | None
    gps_status: str | None
    altitude_type: str | None
    position_quality: PositionQuality
    horizontal_std_m: float  # 1-sigma per axis
    vertical_std_m: float

    @property
    def horizontal_uncertainty_m(self) -> float:
        """95 % radius of the horizontal position error (circular normal: 2.4477 sigma)."""
        return 2.4477 * self.horizontal_std_m


def read_frame_meta(source: str | Path | bytes, name: str | None = None) -> FrameMeta:
    """Read a frame's metadata from a JPEG path or bytes; ``name`` labels bytes in errors."""
    label = name or (str(source) if not isinstance(source, bytes) else "<frame bytes>")
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise FrameMetadataError(label, "file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise FrameMetadataError(label, f"not a readable image ({exc})") from None
    with image:
        if image.format != "JPEG":
            raise FrameMetadataError(label, f"is {image.format}, expected a JPEG frame")
        exif = image.getexif()
        gps = dict(exif.get_ifd(TAG_GPS_IFD))
        exif_ifd = dict(exif.get_ifd(TAG_EXIF_IFD))
        xmp = _xmp_values(image.info.get("xmp"), exif.get(TAG_XML_PACKET), source, label)
        width, height = image.size
        make = _text(exif.get(TAG_MAKE))
        model = _text(exif.get(TAG_MODEL))
    lat, lon = _position(gps, xmp, label)
    quality = _quality(xmp, label)
    std_lon = _number(xmp, "RtkStdLon", label)
    std_lat = _number(xmp, "RtkStdLat", label)
    std_hgt = _number(xmp, "RtkStdHgt", label)
    horizontal = (
        math.sqrt((std_lon**2 + std_lat**2) / 2.0)
        if std_lon is not None and std_lat is not None and quality is not PositionQuality.UNKNOWN
        else DEFAULT_HORIZONTAL_STD_M[quality]
    )
    vertical = std_hgt if std_hgt is not None else DEFAULT_VERTICAL_STD_M[quality]
    return FrameMeta(
        source=label,
        width_px=width,
        height_px=height,
        make=make,
        model=model,
        captured_at=_captured_at(exif_ifd),
        lat_deg=lat,
        lon_deg=lon,
        gps_altitude_m=_gps_altitude(gps),
        absolute_altitude_m=_number(xmp, "AbsoluteAltitude", label),
        relative_altitude_m=_number(xmp, "RelativeAltitude", label),
        gimbal_yaw_deg=_number(xmp, "GimbalYawDegree", label),
        gimbal_pitch_deg=_number(xmp, "GimbalPitchDegree", label),
        gimbal_roll_deg=_number(xmp, "GimbalRollDegree", label),
        flight_yaw_deg=_number(xmp, "FlightYawDegree", label),
        flight_pitch_deg=_number(xmp, "FlightPitchDegree", label),
        flight_roll_deg=_number(xmp, "FlightRollDegree", label),
        focal_length_mm=_rational(exif_ifd.get(TAG_FOCAL_LENGTH)),
        focal_length_35mm=_rational(exif_ifd.get(TAG_FOCAL_35MM)),
        calibrated_focal_px=_number(xmp, "CalibratedFocalLength", label),
        optical_center_x_px=_number(xmp, "CalibratedOpticalCenterX", label),
        optical_center_y_px=_number(xmp, "CalibratedOpticalCenterY", label),
        distortion=_distortion(xmp, label),
        rtk_flag=_integer(xmp, "RtkFlag", label),
        gps_status=xmp.get("GpsStatus"),
        altitude_type=xmp.get("AltitudeType"),
        position_quality=quality,
        horizontal_std_m=horizontal,
        vertical_std_m=vertical,
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip("\x00 ").strip()
    return text or None


def _rational(value: Any) -> float | None:
    """A number from an EXIF value: a rational, a plain number, or a 1-tuple of either."""
    if value is None:
        return None
    if isinstance(value, tuple):
        if len(value) != 1:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _degrees(value: Any) -> float | None:
    """Degrees from an EXIF GPS coordinate: (deg, min, sec) rationals or one decimal value."""
    if isinstance(value, tuple) and len(value) == 3:
        parts = [_rational(part) for part in value]
        if any(part is None for part in parts):
            return None
        d, m, s = (float(part) for part in parts if part is not None)
        return d + m / 60.0 + s / 3600.0
    return _rational(value)


def _position(gps: dict[int, Any], xmp: dict[str, str], label: str) -> tuple[float, float]:
    lat = _degrees(gps.get(GPS_LAT))
    lon = _degrees(gps.get(GPS_LON))
    if lat is not None and _text(gps.get(GPS_LAT_REF)) == "S":
        lat = -lat
    if lon is not None and _text(gps.get(GPS_LON_REF)) == "W":
        lon = -lon
    if lat is None:
        lat = _number(xmp, "GpsLatitude", label) if "GpsLatitude" in xmp else None
    if lon is None:
        for key in ("GpsLongitude", "GpsLongtitude"):  # DJI writes the second, misspelled
            if key in xmp:
                lon = _number(xmp, key, label)
                break
    if lat is None and lon is None:
        raise FrameMetadataError(
            label,
            "has no position: neither EXIF GPSLatitude/GPSLongitude nor drone-dji:GpsLatitude/"
            "GpsLongtitude is present; the frame cannot be placed",
            tag="GPSLatitude",
        )
    if lat is None:
        raise FrameMetadataError(
            label, "lacks EXIF GPSLatitude (and drone-dji:GpsLatitude)", "GPSLatitude"
        )
    if lon is None:
        raise FrameMetadataError(
            label, "lacks EXIF GPSLongitude (and drone-dji:GpsLongtitude)", "GPSLongitude"
        )
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise FrameMetadataError(
            label, f"position ({lat}, {lon}) is outside valid latitude/longitude", "GPSLatitude"
        )
    if abs(lat) < 1e-9 and abs(lon) < 1e-9:
        raise FrameMetadataError(
            label,
            "position is 0,0: the receiver had no fix when the frame was taken",
            "GPSLatitude",
        )
    return lat, lon


def _gps_altitude(gps: dict[int, Any]) -> float | None:
    altitude = _rational(gps.get(GPS_ALT))
    if altitude is None:
        return None
    reference = gps.get(GPS_ALT_REF)
    if isinstance(reference, bytes):
        reference = reference[:1] == b"\x01"
    return -altitude if reference in (1, True) else altitude


def _captured_at(exif_ifd: dict[int, Any]) -> datetime | None:
    text = _text(exif_ifd.get(TAG_DATETIME_ORIGINAL))
    if text is None:
        return None
    try:
        moment = datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = _text(exif_ifd.get(TAG_OFFSET_TIME_ORIGINAL))
    if offset and len(offset) == 6 and offset[0] in "+-" and offset[3] == ":":
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        moment = moment.replace(tzinfo=timezone(sign * delta))
    return moment


def _quality(xmp: dict[str, str], label: str) -> PositionQuality:
    flag = _integer(xmp, "RtkFlag", label)
    if flag is not None:
        return RTK_FLAGS.get(flag, PositionQuality.UNKNOWN)
    status = (xmp.get("GpsStatus") or "").strip().lower()
    if status == "rtk":
        return PositionQuality.RTK_FLOAT  # RTK without a flag: do not assume it was fixed
    if status in ("normal", "gps"):
        return PositionQuality.SINGLE
    return PositionQuality.UNKNOWN


def _number(xmp: dict[str, str], key: str, label: str) -> float | None:
    text = xmp.get(key)
    if text is None or not text.strip():
        return None
    try:
        number = float(text.strip())
    except ValueError:
        raise FrameMetadataError(label, f"drone-dji:{key}={text!r} is not a number", key) from None
    if not math.isfinite(number):
        raise FrameMetadataError(label, f"drone-dji:{key}={text!r} is not a finite number", key)
    return number


def _integer(xmp: dict[str, str], key: str, label: str) -> int | None:
    number = _number(xmp, key, label)
    return None if number is None else int(number)


def _distortion(xmp: dict[str, str], label: str) -> tuple[float, ...]:
    """Brown coefficients (k1, k2, p1, p2, k3) from ``DewarpData`` ("date;fx,fy,cx,cy,k1,k2,
    p1,p2,k3"), unless ``DewarpFlag`` says the camera already removed the distortion."""
    raw = xmp.get("DewarpData")
    if raw is None or _integer(xmp, "DewarpFlag", label) == 1:
        return ()
    try:
        values = [float(v) for v in raw.split(";", 1)[-1].split(",")]
    except ValueError:
        raise FrameMetadataError(
            label, f"DewarpData {raw!r} is not 'date;fx,fy,cx,cy,k1,k2,p1,p2,k3'", "DewarpData"
        ) from None
    if len(values) != 9 or not all(math.isfinite(v) for v in values):
        raise FrameMetadataError(
            label, f"DewarpData {raw!r} does not hold 9 numbers after the date", "DewarpData"
        )
    return tuple(values[4:9])


def _xmp_values(
    app1: Any, exif_packet: Any, source: str | Path | bytes, label: str
) -> dict[str, str]:
    """The ``drone-dji:`` values wherever the file keeps them: the XMP APP1 segment (as the
    camera writes it), EXIF tag 0x02BC XMLPacket (after some desktop tools), and an XMP
    sidecar beside a file (``DJI_0001.xmp`` or ``DJI_0001.JPG.xmp``). Where several say the
    same tag, the APP1 segment wins, then 0x02BC, then the sidecar."""
    values: dict[str, str] = {}
    if isinstance(source, str | Path):
        path = Path(source)
        for sidecar in (path.with_suffix(".xmp"), path.with_suffix(".XMP"), Path(f"{path}.xmp")):
            if sidecar.is_file():
                values.update(_dji_xmp(sidecar.read_bytes()[:1_000_000], f"{sidecar}"))
                break
    values.update(_dji_xmp(exif_packet, label))
    values.update(_dji_xmp(app1, label))
    return values


def _dji_xmp(raw: Any, label: str) -> dict[str, str]:
    """``drone-dji:`` values from an XMP packet, whether written as attributes or elements."""
    if raw is None:
        return {}
    data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
    start = data.find(b"<x:xmpmeta")
    end = data.rfind(b"</x:xmpmeta>")
    if start < 0 or end < 0:
        return {}
    try:
        root: Element = SafeElementTree.fromstring(data[start : end + len(b"</x:xmpmeta>")])
    except (SafeElementTree.ParseError, DefusedXmlException) as exc:
        raise FrameMetadataError(
            label, f"XMP packet is not well-formed XML ({exc})", "XMP"
        ) from None
    values: dict[str, str] = {}
    for element in root.iter():
        for key, value in element.attrib.items():
            if key.startswith("{") and DJI_NAMESPACE_MARK in key:
                values[key.split("}", 1)[1]] = value
        tag = element.tag
        is_dji = isinstance(tag, str) and tag.startswith("{") and DJI_NAMESPACE_MARK in tag
        if is_dji and element.text and element.text.strip():
            values[tag.split("}", 1)[1]] = element.text.strip()
    return values
