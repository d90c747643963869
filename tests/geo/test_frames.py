"""geo.frames: reading real-world metadata quirks and refusing frames without a position."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest
from PIL.TiffImagePlugin import IFDRational

from geo.frames import FrameMetadataError, PositionQuality, read_frame_meta
from sim.camera import PoseNoise, camera_preset
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot
from sim.world import District
from tests.geo.frame_fixtures import make_jpeg, standard_gps, xmp_attributes, xmp_elements

DJI_VALUES = {
    "AbsoluteAltitude": "+135.500",
    "RelativeAltitude": "+100.250",
    "GimbalYawDegree": "-12.30",
    "GimbalPitchDegree": "-90.00",
    "GimbalRollDegree": "+0.00",
    "FlightYawDegree": "-11.90",
    "RtkFlag": "50",
    "RtkStdLon": "0.01234",
    "RtkStdLat": "0.01500",
    "RtkStdHgt": "0.02500",
    "GpsStatus": "RTK",
    "AltitudeType": "RtkAlt",
    "CalibratedFocalLength": "3713.290",
    "CalibratedOpticalCenterX": "2647.12",
    "CalibratedOpticalCenterY": "1969.35",
}


def test_sim_frame_round_trips_every_value(district: District) -> None:
    centre = district.sites[0].geometry.centroid
    shot = shoot(
        district,
        pose_at(district, centre.x, centre.y, 87.5, gimbal_yaw_deg=33.3, gimbal_pitch_deg=-70.0),
        camera_preset("m3e", 0.1),
        PoseNoise(GnssMode.RTK_FLOAT),
        seed=4,
    )
    meta = read_frame_meta(shot.jpeg)
    reported = shot.reported_pose
    assert meta.lat_deg == pytest.approx(reported.lat_deg, abs=1e-9)
    assert meta.lon_deg == pytest.approx(reported.lon_deg, abs=1e-9)
    assert meta.relative_altitude_m == pytest.approx(reported.relative_altitude_m, abs=1e-3)
    assert meta.gps_altitude_m == pytest.approx(reported.altitude_ellipsoid_m, abs=1e-3)
    assert meta.gimbal_yaw_deg == pytest.approx(reported.gimbal_yaw_deg, abs=1e-4)
    assert meta.gimbal_pitch_deg == pytest.approx(reported.gimbal_pitch_deg, abs=1e-4)
    assert meta.position_quality is PositionQuality.RTK_FLOAT
    assert meta.horizontal_std_m == pytest.approx(shot.error.std_lon_m, abs=1e-5)
    assert meta.calibrated_focal_px == pytest.approx(shot.camera.focal_px, abs=1e-5)
    assert (meta.width_px, meta.height_px) == (shot.camera.width_px, shot.camera.height_px)
    assert meta.captured_at is not None and meta.captured_at.tzinfo is not None
    assert meta.captured_at.astimezone(UTC) == reported.time_utc
    assert meta.make == "DJI" and meta.model == "M3E"


@pytest.mark.parametrize("writer", [xmp_attributes, xmp_elements], ids=["attributes", "elements"])
def test_xmp_as_attributes_or_elements_reads_the_same(writer: object) -> None:
    jpeg = make_jpeg(gps=standard_gps(), xmp=writer(DJI_VALUES))  # type: ignore[operator]
    meta = read_frame_meta(jpeg)
    assert meta.relative_altitude_m == 100.25  # signed string "+100.250"
    assert meta.gimbal_yaw_deg == -12.3
    assert meta.rtk_flag == 50
    assert meta.position_quality is PositionQuality.RTK_FIXED
    assert meta.gps_status == "RTK" and meta.altitude_type == "RtkAlt"
    assert meta.optical_center_x_px == 2647.12
    assert meta.horizontal_uncertainty_m == pytest.approx(
        2.4477 * ((0.01234**2 + 0.015**2) / 2) ** 0.5
    )


def test_dms_rationals_and_references_give_signed_degrees() -> None:
    gps = standard_gps()
    gps[1], gps[3] = "S", "W"
    meta = read_frame_meta(make_jpeg(gps=gps))
    assert meta.lat_deg == pytest.approx(-36.481234, abs=1e-8)
    assert meta.lon_deg == pytest.approx(-115.452345, abs=1e-8)


def test_decimal_gps_values_are_accepted() -> None:
    gps = {
        1: "N",
        2: (IFDRational(36481234, 1_000_000),),
        3: "E",
        4: IFDRational(115452345, 1_000_000),
    }
    meta = read_frame_meta(make_jpeg(gps=gps))
    assert meta.lat_deg == pytest.approx(36.481234)
    assert meta.lon_deg == pytest.approx(115.452345)


def test_altitude_below_the_reference_is_negative() -> None:
    gps = standard_gps(altitude=12.5)
    gps[5] = 1
    assert read_frame_meta(make_jpeg(gps=gps)).gps_altitude_m == pytest.approx(-12.5)


def test_position_from_xmp_with_djis_misspelled_longitude() -> None:
    xmp = xmp_attributes({"GpsLatitude": "+36.4812345678", "GpsLongtitude": "+115.4523456789"})
    meta = read_frame_meta(make_jpeg(xmp=xmp))
    assert meta.lat_deg == pytest.approx(36.4812345678)
    assert meta.lon_deg == pytest.approx(115.4523456789)


def test_missing_gimbal_tags_are_none_not_zero() -> None:
    values = {k: v for k, v in DJI_VALUES.items() if not k.startswith("Gimbal")}
    meta = read_frame_meta(make_jpeg(gps=standard_gps(), xmp=xmp_attributes(values)))
    assert meta.gimbal_yaw_deg is None and meta.gimbal_pitch_deg is None
    assert meta.flight_yaw_deg == -11.9


@pytest.mark.parametrize(
    ("values", "quality"),
    [
        ({"RtkFlag": "34"}, PositionQuality.RTK_FLOAT),
        ({"RtkFlag": "16"}, PositionQuality.SINGLE),
        ({"RtkFlag": "0"}, PositionQuality.UNKNOWN),
        ({"GpsStatus": "RTK"}, PositionQuality.RTK_FLOAT),
        ({"GpsStatus": "Normal"}, PositionQuality.SINGLE),
        ({}, PositionQuality.UNKNOWN),
    ],
)
def test_position_quality_from_flags(values: dict[str, str], quality: PositionQuality) -> None:
    meta = read_frame_meta(
        make_jpeg(gps=standard_gps(), xmp=xmp_attributes(values) if values else None)
    )
    assert meta.position_quality is quality
    assert meta.horizontal_std_m > 0


def test_frame_without_any_position_names_the_missing_tags() -> None:
    with pytest.raises(FrameMetadataError) as caught:
        read_frame_meta(
            make_jpeg(xmp=xmp_attributes({"RelativeAltitude": "+100"})), name="DJI_0001.JPG"
        )
    assert caught.value.tag == "GPSLatitude"
    assert "DJI_0001.JPG" in str(caught.value)
    assert "GPSLatitude" in str(caught.value) and "GpsLongtitude" in str(caught.value)


def test_frame_with_latitude_only_names_longitude() -> None:
    gps = standard_gps()
    del gps[4]
    with pytest.raises(FrameMetadataError, match="lacks EXIF GPSLongitude") as caught:
        read_frame_meta(make_jpeg(gps=gps))
    assert caught.value.tag == "GPSLongitude"


def test_zero_zero_position_is_refused() -> None:
    with pytest.raises(FrameMetadataError, match="0,0"):
        read_frame_meta(make_jpeg(gps=standard_gps(lat=0.0, lon=0.0)))


def test_non_numeric_xmp_value_names_the_tag() -> None:
    xmp = xmp_attributes({**DJI_VALUES, "RelativeAltitude": "high"})
    with pytest.raises(FrameMetadataError, match="RelativeAltitude='high' is not a number"):
        read_frame_meta(make_jpeg(gps=standard_gps(), xmp=xmp))


def test_not_a_jpeg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "frame.jpg"
    path.write_bytes(b"GIF89a not a jpeg at all")
    with pytest.raises(FrameMetadataError, match="not a readable image"):
        read_frame_meta(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FrameMetadataError, match="file not found"):
        read_frame_meta(tmp_path / "absent.jpg")


def _jpeg_with_exif_xmp(values: dict[str, str]) -> bytes:
    """XMP only in EXIF tag 0x02BC (XMLPacket), none in APP1: how DJI photos look after
    common desktop tools."""
    import io

    from PIL import Image

    image = Image.new("RGB", (64, 48), (120, 110, 90))
    exif = Image.Exif()
    exif[0x010F] = "DJI"
    exif[0x8825] = standard_gps()
    exif[0x02BC] = xmp_attributes(values)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def test_xmp_inside_exif_xmlpacket_is_read() -> None:
    import io

    from PIL import Image

    data = _jpeg_with_exif_xmp(DJI_VALUES)

    assert Image.open(io.BytesIO(data)).info.get("xmp") is None  # nothing in APP1
    meta = read_frame_meta(data)
    assert meta.relative_altitude_m == pytest.approx(100.25)
    assert meta.gimbal_pitch_deg == pytest.approx(-90.0)
    assert meta.gimbal_yaw_deg == pytest.approx(-12.3)
    assert meta.position_quality is PositionQuality.RTK_FIXED
    assert meta.gps_status == "RTK"


def test_an_xmp_sidecar_fills_what_the_jpeg_lacks(tmp_path: Path) -> None:
    frame = tmp_path / "DJI_0007.JPG"
    frame.write_bytes(make_jpeg(gps=standard_gps()))
    assert read_frame_meta(frame).relative_altitude_m is None
    (tmp_path / "DJI_0007.xmp").write_bytes(xmp_elements(DJI_VALUES))
    meta = read_frame_meta(frame)
    assert meta.relative_altitude_m == pytest.approx(100.25)
    assert meta.position_quality is PositionQuality.RTK_FIXED


def test_the_app1_packet_wins_over_exif_and_sidecar(tmp_path: Path) -> None:
    frame = tmp_path / "DJI_0008.JPG"
    frame.write_bytes(make_jpeg(gps=standard_gps(), xmp=xmp_attributes(DJI_VALUES)))
    (tmp_path / "DJI_0008.xmp").write_bytes(
        xmp_attributes({**DJI_VALUES, "RelativeAltitude": "+50.0"})
    )
    assert read_frame_meta(frame).relative_altitude_m == pytest.approx(100.25)
