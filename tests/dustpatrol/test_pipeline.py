"""`dustpatrol analyze`: simulated frames and their registry in, findings matched to sites out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from typer.testing import CliRunner

from dustpatrol.cli import app
from dustpatrol.pipeline import FlightAnalysis, analyze_frames, frame_gsd_m
from geo.sites import load_sites
from sim.camera import PoseNoise, camera_preset
from sim.export import write_district
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot
from sim.world import generate_district
from vision.detect import Detector
from vision.tiling import TileMasks

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "dustpatrol-seg.onnx"
runner = CliRunner()


@pytest.fixture(scope="module")
def flight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("flight")
    district = generate_district(9001, n_sites=12, extent_m=3_000.0)
    write_district(district, folder / "world")
    frames = folder / "frames"
    frames.mkdir()
    camera = camera_preset("m3e", 0.4)
    soil: dict[str, float] = {}
    for patch in district.patches:
        soil[patch.site_id] = soil.get(patch.site_id, 0.0) + patch.area_m2
    problem = sorted(district.sites, key=lambda s: -soil.get(s.site_id, 0.0))[:3]
    for number, site in enumerate(problem):
        centre = site.geometry.centroid
        shot = shoot(
            district,
            pose_at(district, centre.x, centre.y, 100.0, gimbal_yaw_deg=30.0 * number),
            camera,
            PoseNoise(GnssMode.RTK_FIXED),
            seed=number,
        )
        (frames / f"DJI_{number:04d}.JPG").write_bytes(shot.jpeg)
    return frames, folder / "world" / "sites.geojson"


def test_findings_lie_in_registered_sites_with_their_evidence(flight: tuple[Path, Path]) -> None:
    frames, sites = flight
    registry = load_sites(sites).sites
    result = analyze_frames(sorted(frames.iterdir()), registry, Detector(MODEL))
    assert result.frames_analysed == 3 and not result.rejected
    assert result.findings, "the model found nothing on three non-compliant sites"
    known = set(registry["site_id"])
    for finding in result.findings:
        assert finding.site_id in known
        assert finding.class_name in ("exposed_soil", "road_dust", "covered_soil")
        assert finding.area_m2 > 0 and 0 < finding.confidence <= 1
        assert finding.evidence and finding.evidence[0].frame_id.startswith("DJI_")
    seen = [c for c in result.coverage if c.seen_m2 > 0]
    assert len(seen) >= 3


def test_a_broken_frame_is_listed_with_its_reason_and_the_rest_go_on(
    flight: tuple[Path, Path], tmp_path: Path
) -> None:
    frames, sites = flight
    copied = tmp_path / "frames"
    copied.mkdir()
    for path in sorted(frames.iterdir())[:2]:
        (copied / path.name).write_bytes(path.read_bytes())
    whole = (frames / "DJI_0002.JPG").read_bytes()  # a third site, cut short
    (copied / "DJI_0009.JPG").write_bytes(whole[: len(whole) // 3])
    (copied / "notes.txt").write_text("not a frame")
    result = runner.invoke(
        app,
        ["analyze", str(copied), "--sites", str(sites), "--out", str(tmp_path / "f.geojson")],
    )
    assert result.exit_code == 0, result.output
    assert "confidence exposed_soil > " in result.output  # the thresholds it detected with
    coverage = json.loads((tmp_path / "f.coverage.json").read_text())
    assert coverage["frames_analysed"] == 2
    assert [r["frame"] for r in coverage["rejected"]] == ["DJI_0009.JPG"]
    assert "truncated" in coverage["rejected"][0]["reason"]
    findings = json.loads((tmp_path / "f.geojson").read_text())
    assert findings["type"] == "FeatureCollection"


def test_a_folder_without_frames_says_so(tmp_path: Path, flight: tuple[Path, Path]) -> None:
    result = runner.invoke(app, ["analyze", str(tmp_path), "--sites", str(flight[1])])
    assert result.exit_code == 1
    assert "holds no JPEG frames" in result.output


def test_oblique_frames_are_analysed_at_their_slant_resolution() -> None:
    from pyproj import CRS

    from geo.georef import CameraIntrinsics, CameraPose

    camera = CameraIntrinsics(5280, 3956, 3713.29, 2639.5, 1977.5)
    nadir = CameraPose(CRS.from_epsg(32650), 0.0, 0.0, 100.0, 0.0, -90.0, 0.0)
    oblique = CameraPose(CRS.from_epsg(32650), 0.0, 0.0, 100.0, 0.0, -30.0, 0.0)
    assert frame_gsd_m(camera, nadir) == pytest.approx(100.0 / 3713.29)
    assert frame_gsd_m(camera, oblique) == pytest.approx(2 * 100.0 / 3713.29)


def test_a_dji_mrk_file_places_the_frames_it_names(
    flight: tuple[Path, Path], tmp_path: Path
) -> None:
    """The MRK's position wins over the EXIF: here it puts DJI_0000 5 km away, where no site
    is, so that frame is kept out of detection as far from every site; DJI_0001, which the
    file does not name, is placed by its own metadata and reported."""
    from geo.frames import read_frame_meta

    frames, sites = flight
    copied = tmp_path / "frames"
    copied.mkdir()
    for path in sorted(frames.iterdir())[:2]:
        (copied / path.name).write_bytes(path.read_bytes())
    meta = read_frame_meta(copied / "DJI_0000.JPG")
    far_lat = meta.lat_deg + 5_000 / 111_320
    (copied / "DJI_202401011200_001_Timestamp.MRK").write_text(
        f"0\t282401.669089\t[2404]\t   0,N\t   0,E\t   0,V\t{far_lat:.8f},Lat\t"
        f"{meta.lon_deg:.8f},Lon\t139.231,Ellh\t0.01, 0.01, 0.02\t50,Q\n"
    )
    result = runner.invoke(
        app,
        ["analyze", str(copied), "--sites", str(sites), "--out", str(tmp_path / "f.geojson")],
    )
    assert result.exit_code == 0, result.output
    coverage = json.loads((tmp_path / "f.coverage.json").read_text())
    assert coverage["placed_by_mrk"] == 1 and coverage["not_in_mrk"] == ["DJI_0001.JPG"]
    assert [r["frame"] for r in coverage["rejected"]] == ["DJI_0000.JPG"]
    assert "1 frames placed by its RTK positions" in result.output
    assert "not in the MRK" in result.output


def test_decoding_ahead_changes_nothing(flight: tuple[Path, Path], tmp_path: Path) -> None:
    """analyze_frames decodes the next frame in a second thread while detecting this one: the
    findings, the rejected frames (a duplicate judged against the frames before it) and the
    progress order are those of one frame after another."""
    from dustpatrol.pipeline import FlightAnalyzer

    frames, sites = flight
    copied = tmp_path / "frames"
    copied.mkdir()
    for path in sorted(frames.iterdir()):
        (copied / path.name).write_bytes(path.read_bytes())
    (copied / "DJI_0001b.JPG").write_bytes((frames / "DJI_0001.JPG").read_bytes())
    paths = sorted(copied.iterdir())
    registry = load_sites(sites).sites
    detector = Detector(MODEL)
    order: list[str] = []
    overlapped = analyze_frames(paths, registry, detector, on_frame=lambda p: order.append(p.name))
    one_by_one = FlightAnalyzer(detector, registry)
    for path in paths:
        one_by_one.add_frame(path)
    sequential = one_by_one.finish()
    assert order == [p.name for p in paths]
    assert [r.frame_id for r in overlapped.rejected] == ["DJI_0001b.JPG"]
    assert overlapped.rejected == sequential.rejected
    assert overlapped.frames_analysed == sequential.frames_analysed == 3
    assert [(f.site_id, f.class_name, round(f.area_m2, 3)) for f in overlapped.findings] == [
        (f.site_id, f.class_name, round(f.area_m2, 3)) for f in sequential.findings
    ]


class CountingDetector(Detector):
    """The detector, counting the tiles it runs the model on."""

    tiles_run = 0

    def _tiles(self, tiles: list[NDArray[np.uint8]]) -> list[TileMasks]:
        self.tiles_run += len(tiles)
        return super()._tiles(tiles)


def test_sites_only_finds_the_same_site_findings_in_fewer_tiles(
    flight: tuple[Path, Path], tmp_path: Path
) -> None:
    """Detecting only near sites changes nothing a site is told, and skips the tiles that
    show nothing but countryside: the flight's frames plus one half off a site's edge."""
    frames, sites = flight
    registry = load_sites(sites).sites
    district = generate_district(9001, n_sites=12, extent_m=3_000.0)
    site = district.site(str(registry["site_id"].iloc[0]))
    _, min_n, max_e, max_n = site.geometry.bounds
    shot = shoot(
        district,
        pose_at(district, max_e + 30.0, (min_n + max_n) / 2, 100.0),
        camera_preset("m3e", 0.4),
        PoseNoise(GnssMode.RTK_FIXED),
        seed=7,
    )
    paths = sorted(frames.iterdir())
    (tmp_path / "DJI_0100.JPG").write_bytes(shot.jpeg)
    paths.append(tmp_path / "DJI_0100.JPG")
    detector = CountingDetector(MODEL)
    whole = analyze_frames(paths, registry, detector)
    whole_tiles, detector.tiles_run = detector.tiles_run, 0
    near = analyze_frames(paths, registry, detector, sites_only=True)
    assert 0 < detector.tiles_run < whole_tiles

    def on_sites(result: FlightAnalysis) -> list[tuple[str | None, str, float]]:
        return sorted(
            (f.site_id, f.class_name, round(f.area_m2, 1)) for f in result.findings if f.site_id
        )

    assert on_sites(near) == on_sites(whole) != []
