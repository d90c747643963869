"""Evaluation per position mode: the same pictures tagged per GNSS mode, surveys scored per
mode and combined over districts, the command's refusals."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import shapely
from shapely.geometry import Point, shape
from typer.testing import CliRunner

from dustpatrol.cli import app
from dustpatrol.errors import DustpatrolError
from dustpatrol.findings_eval import combine_reports
from dustpatrol.pipeline import shared_detector
from dustpatrol.settings import DetectionSettings, Settings
from dustpatrol.survey_eval import SurveyEvalSpec, evaluate_surveys, parse_modes
from geo.frames import PositionQuality, read_frame_meta
from sim.camera import PoseNoise, camera_preset
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot, shoot_tagged
from sim.world import generate_district


def metres_between(a: Point, b: Point) -> float:
    """Distance of two lon/lat points in metres (locally flat)."""
    north = (a.y - b.y) * 111_320.0
    east = (a.x - b.x) * 111_320.0 * math.cos(math.radians(a.y))
    return math.hypot(east, north)


ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "dustpatrol-seg.onnx"
runner = CliRunner()


def _pixels(jpeg: bytes) -> bytes:
    """The JPEG from its first quantisation table on: the picture without its metadata."""
    return jpeg[jpeg.index(b"\xff\xdb") :]


def test_tagged_shots_are_one_picture_with_each_modes_position(tmp_path: Path) -> None:
    district = generate_district(9001, n_sites=10, extent_m=2_000.0)
    site = district.sites[0].geometry.centroid
    pose = pose_at(district, site.x, site.y, 100.0)
    camera = camera_preset("m3e", 0.05)
    modes = (GnssMode.RTK_FIXED, GnssMode.RTK_FLOAT, GnssMode.SINGLE)
    shots = shoot_tagged(district, pose, camera, [PoseNoise(m) for m in modes], seed=3)
    for mode, shot in zip(modes, shots, strict=True):
        # each is exactly what `shoot` makes for that mode
        assert shot.jpeg == shoot(district, pose, camera, PoseNoise(mode), seed=3).jpeg
        path = tmp_path / f"{mode.value}.jpg"
        path.write_bytes(shot.jpeg)
        assert read_frame_meta(path).position_quality is PositionQuality(mode.value)
    assert len({_pixels(s.jpeg) for s in shots}) == 1, "the modes must share one picture"
    assert len({s.reported_pose.lat_deg for s in shots}) == 3
    errors = [abs(s.error.east_m) + abs(s.error.north_m) for s in shots]
    assert errors[0] < 0.2 < errors[2]  # RTK fixed centimetres, single point metres


def _report(
    found: list[str], missed: list[str], alarms: list[str], ious: list[float]
) -> dict[str, Any]:
    return {
        "sites": {
            "evaluated": 5,
            "found": found,
            "missed": missed,
            "false_alarms": alarms,
        },
        "off_site_problem_findings": 1,
        "patches": [
            {
                "site": f"S{i:04d}",
                "class": "exposed_soil",
                "true_m2": 10.0,
                "found_m2": 9.0,
                "iou": iou,
                "area_error": 0.1,
                "position_error_m": 0.2,
            }
            for i, iou in enumerate(ious)
        ],
    }


def test_districts_combine_without_merging_their_sites() -> None:
    """S0001 of one district and S0001 of another are two sites."""
    combined = combine_reports(
        {
            "a": _report(["S0001"], ["S0002"], [], [0.5, 0.7]),
            "b": _report(["S0001", "S0003"], [], ["S0004"], [0.9]),
        }
    )
    sites = combined["sites"]
    assert (sites["evaluated"], sites["violating"], sites["true_positive"]) == (10, 4, 3)
    assert (sites["false_positive"], sites["false_negative"]) == (1, 1)
    assert sites["recall"] == pytest.approx(0.75) and sites["precision"] == pytest.approx(0.75)
    assert sites["missed"] == ["a/S0002"] and sites["false_alarms"] == ["b/S0004"]
    assert combined["classes"]["exposed_soil"]["median_iou"] == pytest.approx(0.7)
    assert combined["off_site_problem_findings"] == 2


def test_a_survey_is_scored_per_mode_with_plots(tmp_path: Path) -> None:
    """One small district, two modes: the same frames analysed twice; single-point positions
    put the found patches farther from the truth than RTK fixed."""
    settings = Settings()
    # coarse frames analysed at a coarse resolution: one tile a frame keeps this test short
    detection = DetectionSettings(model_path=MODEL, target_gsd_m=0.45)
    settings = settings.model_copy(update={"detection": detection})
    spec = SurveyEvalSpec(
        seeds=(9002,),
        out=tmp_path / "modes",
        modes=(GnssMode.RTK_FIXED, GnssMode.SINGLE),
        n_sites=10,
        render_scale=0.08,
    )
    result = evaluate_surveys(spec, settings, shared_detector(detection))
    frames = result["frames"]["district-9002"]
    assert frames > 20
    for mode in ("rtk_fixed", "single"):
        folder = spec.out / "district-9002" / mode
        assert len(list((folder / "frames").glob("*.jpg"))) == frames
        assert json.loads((folder / "findings.geojson").read_text())["type"] == "FeatureCollection"
        report = result["modes"][mode]
        assert report["sites"]["evaluated"] == 10
        assert set(result["targets"][mode]) >= {"site_recall", "median_iou"}
    assert "median_position_error" in result["targets"]["single"]
    assert "median_position_error" not in result["targets"].get("rtk_float", {})

    # The same pictures, placed by each mode's positions: single-point findings sit metres
    # away from where the RTK-fixed frames put the same detections.
    def centres(mode: str) -> dict[tuple[str, str], Any]:
        collection = json.loads(
            (spec.out / "district-9002" / mode / "findings.geojson").read_text()
        )
        parts: dict[tuple[str, str], list[Any]] = {}
        for feature in collection["features"]:
            key = (feature["properties"]["site_id"], feature["properties"]["class"])
            parts.setdefault(key, []).append(shape(feature["geometry"]))
        return {key: shapely.union_all(shapes).centroid for key, shapes in parts.items()}

    fixed, single = centres("rtk_fixed"), centres("single")
    shared = set(fixed) & set(single)
    assert shared, "the model found nothing in either mode"
    shifts = [metres_between(fixed[key], single[key]) for key in shared]
    assert statistics.median(shifts) > 0.5, shifts
    for name in ("report.json", "report.md", "errors.png", "sites.png"):
        assert (spec.out / name).stat().st_size > 0
    markdown = (spec.out / "report.md").read_text()
    assert "| rtk_fixed |" in markdown and "| single |" in markdown


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DustpatrolError, match="unknown position mode 'rtk'"):
        parse_modes("rtk_fixed,rtk")
    assert parse_modes("all") == (GnssMode.RTK_FIXED, GnssMode.RTK_FLOAT, GnssMode.SINGLE)
    with pytest.raises(DustpatrolError, match="sites per district"):
        SurveyEvalSpec(seeds=(1,), out=tmp_path, n_sites=3).validate()
    cases = [
        (["evaluate"], "give FINDINGS and --world"),
        (["evaluate", "x.geojson"], "give FINDINGS and --world"),
        (["evaluate", "x.geojson", "--seeds", "9001"], "not both"),
        (["evaluate", "--seeds", "9001", "--modes", "float"], "unknown position mode"),
        (["evaluate", "--seeds", "9-1"], "runs backwards"),
    ]
    for arguments, message in cases:
        outcome = runner.invoke(app, arguments)
        assert outcome.exit_code != 0, arguments
        assert message in outcome.output, (arguments, outcome.output)
    assert not (tmp_path / "modes").exists()
