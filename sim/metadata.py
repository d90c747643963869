"""EXIF and DJI-style XMP for simulated frames, written the way DJI enterprise drones write them.

EXIF: Make/Model, DateTimeOriginal, FocalLength, FocalLengthIn35mmFilm, image size, and the
GPS IFD (latitude/longitude as degree-minute-second rationals with N/S/E/W references,
altitude with reference 0 = above the reference surface). XMP: an ``rdf:Description`` with
``drone-dji:`` *attributes* (as DJI cameras write them; exiftool rewrites them as elements),
signed decimal strings such as ``"+100.000"``, and DJI's own spelling ``GpsLongtitude``.
"""

from __future__ import annotations

from fractions import Fraction
from xml.sax.saxutils import quoteattr

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from sim.camera import CameraModel, Pose, PoseError
from sim.errors import SimError
from sim.kinds import GnssMode

XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
EXIF_HEADER = b"Exif\x00\x00"
DJI_NAMESPACE = "http://www.dji.com/drone-dji/1.0/"

TAG_MAKE, TAG_MODEL, TAG_SOFTWARE = 0x010F, 0x0110, 0x0131
TAG_EXIF_IFD, TAG_GPS_IFD = 0x8769, 0x8825
TAG_DATETIME_ORIGINAL, TAG_FOCAL_LENGTH, TAG_FOCAL_35MM = 0x9003, 0x920A, 0xA405
TAG_OFFSET_TIME_ORIGINAL = 0x9011
TAG_PIXEL_X, TAG_PIXEL_Y = 0xA002, 0xA003


def _dms(value_deg: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    """Degrees as (deg, min, sec) rationals; seconds to 1e-6 (3e-5 m)."""
    value = abs(value_deg)
    degrees = int(value)
    minutes_float = (value - degrees) * 60.0
    minutes = int(minutes_float)
    micro_seconds = round((minutes_float - minutes) * 60.0 * 1_000_000)
    if micro_seconds >= 60_000_000:  # rounding carried into the next minute
        micro_seconds -= 60_000_000
        minutes += 1
    if minutes >= 60:
        minutes -= 60
        degrees += 1
    return (
        IFDRational(degrees, 1),
        IFDRational(minutes, 1),
        IFDRational(micro_seconds, 1_000_000),
    )


def exif_bytes(camera: CameraModel, pose: Pose) -> bytes:
    """The EXIF APP1 payload (starting with ``Exif\\0\\0``) for a frame."""
    exif = Image.Exif()
    exif[TAG_MAKE] = camera.make
    exif[TAG_MODEL] = camera.model
    exif[TAG_SOFTWARE] = "dustpatrol-sim"
    focal = Fraction(camera.focal_length_mm).limit_denominator(1000)
    exif[TAG_EXIF_IFD] = {
        TAG_DATETIME_ORIGINAL: pose.time_utc.strftime("%Y:%m:%d %H:%M:%S"),
        TAG_OFFSET_TIME_ORIGINAL: "+00:00",
        TAG_FOCAL_LENGTH: IFDRational(focal.numerator, focal.denominator),
        TAG_FOCAL_35MM: camera.focal_length_35mm,
        TAG_PIXEL_X: camera.width_px,
        TAG_PIXEL_Y: camera.height_px,
    }
    altitude = Fraction(round(abs(pose.altitude_ellipsoid_m) * 1000), 1000)
    exif[TAG_GPS_IFD] = {
        0: b"\x02\x03\x00\x00",  # GPSVersionID 2.3.0.0
        1: "N" if pose.lat_deg >= 0 else "S",
        2: _dms(pose.lat_deg),
        3: "E" if pose.lon_deg >= 0 else "W",
        4: _dms(pose.lon_deg),
        5: 0 if pose.altitude_ellipsoid_m >= 0 else 1,
        6: IFDRational(altitude.numerator, altitude.denominator),
    }
    payload = exif.tobytes()
    return payload if payload.startswith(EXIF_HEADER) else EXIF_HEADER + payload


def _signed(value: float, decimals: int) -> str:
    return f"{value:+.{decimals}f}"


def xmp_packet(camera: CameraModel, pose: Pose, error: PoseError) -> bytes:
    """The XMP APP1 payload with ``drone-dji:`` attributes for a frame."""
    rtk = error.gnss_mode is not GnssMode.SINGLE
    attributes = {
        "tiff:Make": camera.make,
        "tiff:Model": camera.model,
        "dc:format": "image/jpeg",
        "xmp:CreateDate": pose.time_utc.strftime("%Y-%m-%dT%H:%M:%S"),
        "drone-dji:Version": "1.0",
        "drone-dji:ImageSource": "WideCamera",
        "drone-dji:GpsStatus": "RTK" if rtk else "Normal",
        "drone-dji:AltitudeType": "RtkAlt" if rtk else "GpsFusionAlt",
        "drone-dji:GpsLatitude": _signed(pose.lat_deg, 9),
        "drone-dji:GpsLongtitude": _signed(pose.lon_deg, 9),  # sic: DJI's spelling
        "drone-dji:AbsoluteAltitude": _signed(pose.altitude_ellipsoid_m, 3),
        "drone-dji:RelativeAltitude": _signed(pose.relative_altitude_m, 3),
        "drone-dji:GimbalRollDegree": _signed(pose.gimbal_roll_deg, 4),
        "drone-dji:GimbalYawDegree": _signed(pose.gimbal_yaw_deg, 4),
        "drone-dji:GimbalPitchDegree": _signed(pose.gimbal_pitch_deg, 4),
        "drone-dji:FlightRollDegree": _signed(pose.flight_roll_deg, 4),
        "drone-dji:FlightYawDegree": _signed(pose.flight_yaw_deg, 4),
        "drone-dji:FlightPitchDegree": _signed(pose.flight_pitch_deg, 4),
        "drone-dji:CamReverse": "0",
        "drone-dji:GimbalReverse": "0",
        "drone-dji:CalibratedFocalLength": f"{camera.focal_px:.6f}",
        "drone-dji:CalibratedOpticalCenterX": f"{camera.cx_px:.6f}",
        "drone-dji:CalibratedOpticalCenterY": f"{camera.cy_px:.6f}",
        "drone-dji:RtkFlag": str(error.gnss_mode.rtk_flag),
        "drone-dji:RtkStdLon": f"{error.std_lon_m:.5f}",
        "drone-dji:RtkStdLat": f"{error.std_lat_m:.5f}",
        "drone-dji:RtkStdHgt": f"{error.std_hgt_m:.5f}",
        "drone-dji:DewarpFlag": "0",
    }
    if camera.has_distortion:
        # DJI: "date;fx,fy,cx,cy,k1,k2,p1,p2,k3", the principal point as an offset from the
        # image centre; the frame itself is not dewarped (DewarpFlag 0).
        k1, k2, p1, p2, k3 = camera.distortion
        centre_x, centre_y = (camera.width_px - 1) / 2.0, (camera.height_px - 1) / 2.0
        attributes["drone-dji:DewarpData"] = (
            f"2026-11-01;{camera.focal_px:.6f},{camera.focal_px:.6f},"
            f"{camera.cx_px - centre_x:.6f},{camera.cy_px - centre_y:.6f},"
            f"{k1:.9f},{k2:.9f},{p1:.9f},{p2:.9f},{k3:.9f}"
        )
    rendered = "\n   ".join(f"{key}={quoteattr(value)}" for key, value in attributes.items())
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about="DJI Meta Data"\n'
        '   xmlns:tiff="http://ns.adobe.com/tiff/1.0/"\n'
        '   xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        '   xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        f'   xmlns:drone-dji="{DJI_NAMESPACE}"\n'
        f"   {rendered}>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
    return XMP_HEADER + packet.encode("utf-8")


def insert_app1_segments(jpeg: bytes, payloads: list[bytes]) -> bytes:
    """Put APP1 segments right after SOI, dropping a JFIF APP0 (EXIF must come first)."""
    if not jpeg.startswith(b"\xff\xd8"):
        raise SimError("not a JPEG stream: missing SOI marker")
    segments = []
    for payload in payloads:
        length = len(payload) + 2
        if length > 0xFFFF:
            raise SimError(f"APP1 payload of {len(payload)} bytes is too large for one segment")
        segments.append(b"\xff\xe1" + length.to_bytes(2, "big") + payload)
    body = jpeg[2:]
    if body.startswith(b"\xff\xe0"):
        body = body[2 + int.from_bytes(body[2:4], "big") :]
    return b"\xff\xd8" + b"".join(segments) + body
