"""geo.mrk: DJI RTK timestamp files place the frames they name; the others are reported."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from geo.frames import FrameMeta, PositionQuality, read_frame_meta
from geo.mrk import MrkError, MrkPositions, frame_sequence, read_mrk
from tests.geo.frame_fixtures import make_jpeg, standard_gps, xmp_attributes

LINE = (
    "{index}\t282401.669089\t[2404]\t   101,N\t   107,E\t   129,V\t"
    "{lat:.8f},Lat\t{lon:.8f},Lon\t139.231,Ellh\t0.002967, 0.003104, 0.007622\t{q},Q\n"
)


def mrk_text(shots: list[tuple[int, float, float, int]]) -> str:
    return "".join(LINE.format(index=i, lat=lat, lon=lon, q=q) for i, lat, lon, q in shots)


def test_a_line_gives_the_camera_position_time_and_quality(tmp_path: Path) -> None:
    path = tmp_path / "DJI_202403011030_001_Timestamp.MRK"
    path.write_text(mrk_text([(1, 36.48, 115.45, 50), (2, 36.4801, 115.4502, 16)]))
    shots = read_mrk(path)
    first = shots[1]
    # The antenna-to-sensor offset (101 mm north, 107 mm east) is applied.
    assert (first.lat_deg - 36.48) * 111_320 == pytest.approx(0.101, abs=0.002)
    east_m = (first.lon_deg - 115.45) * 111_320 * math.cos(math.radians(36.48))
    assert east_m == pytest.approx(0.107, abs=0.002)
    assert first.ellipsoidal_height_m == pytest.approx(139.36)
    assert first.quality is PositionQuality.RTK_FIXED
    assert shots[2].quality is PositionQuality.SINGLE
    # GPS week 2404 began on Sunday 2026-02-01; 282401.67 s is 3 d 06:26:41.67; less the
    # 18 leap seconds: 2026-02-04 06:26:23.67 UTC
    assert first.time.isoformat().startswith("2026-02-04T06:26:23.6")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1\t282401.6\t[2404]\tgarbage\n", "line 1: not a DJI MRK line"),
        (
            LINE.format(index=1, lat=36.48, lon=115.45, q=50) * 2,
            "line 2: shot 1 is listed twice",
        ),
        (LINE.format(index=1, lat=0.0, lon=0.0, q=50), "position"),
        ("\n\n", "no shots"),
    ],
)
def test_a_bad_mrk_is_an_error_naming_the_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "x.MRK"
    path.write_text(text)
    with pytest.raises(MrkError, match=problem):
        read_mrk(path)


@pytest.mark.parametrize(
    ("name", "sequence"),
    [
        ("DJI_20240301103015_0042_D.JPG", 42),
        ("DJI_0042.JPG", 42),
        ("DJI_20240301103015_0007_V.jpg", 7),
        ("IMG_1234.png", None),
        ("photo.jpg", None),
    ],
)
def test_the_shot_number_comes_from_the_dji_file_name(name: str, sequence: int | None) -> None:
    assert frame_sequence(name) == sequence


def test_frames_named_by_the_mrk_take_its_position_the_others_are_reported(
    tmp_path: Path,
) -> None:
    xmp = xmp_attributes({"RelativeAltitude": "+100", "GpsStatus": "Normal"})
    for n in (1, 2, 3):
        (tmp_path / f"DJI_20240301103015_000{n}_D.JPG").write_bytes(
            make_jpeg(gps=standard_gps(), xmp=xmp)
        )
    (tmp_path / "DJI_202403011030_001_Timestamp.MRK").write_text(
        mrk_text([(1, 36.4815, 115.4525, 50), (2, 36.4816, 115.4526, 50)])
    )
    positions = MrkPositions.for_folder(tmp_path)
    assert positions.problems == ()
    named: list[tuple[str, FrameMeta]] = []
    unnamed: list[tuple[str, FrameMeta]] = []
    for path in sorted(tmp_path.glob("*.JPG")):
        meta, by_mrk = positions.position(read_frame_meta(path), path.name)
        (named if by_mrk else unnamed).append((path.name, meta))
    assert [n for n, _ in unnamed] == ["DJI_20240301103015_0003_D.JPG"]
    first = named[0][1]
    assert first.lat_deg == pytest.approx(36.4815, abs=1e-5)
    assert first.position_quality is PositionQuality.RTK_FIXED and first.rtk_flag == 50
    assert first.horizontal_std_m == pytest.approx(0.00304, abs=1e-4)
    assert unnamed[0][1].position_quality is PositionQuality.SINGLE  # from its own XMP


def test_two_flights_mrk_files_in_one_folder_are_not_guessed_between(tmp_path: Path) -> None:
    (tmp_path / "a_Timestamp.MRK").write_text(mrk_text([(1, 36.48, 115.45, 50)]))
    (tmp_path / "b_Timestamp.MRK").write_text(
        mrk_text([(1, 36.49, 115.46, 50), (2, 36.49, 115.46, 50)])
    )
    (tmp_path / "c_Timestamp.MRK").write_text("not an mrk\n")
    positions = MrkPositions.for_folder(tmp_path)
    assert set(positions.shots) == {2}
    assert any("numbers shots another MRK" in p for p in positions.problems)
    assert any("c_Timestamp.MRK, line 1" in p for p in positions.problems)
