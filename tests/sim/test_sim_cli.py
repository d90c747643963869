"""`dustpatrol sim world`, `sim shoot`, `sim preview` and `sim compare` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dustpatrol.cli import app
from tests.sim.reference import read_back

runner = CliRunner()


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("district")
    result = runner.invoke(
        app,
        [
            "sim",
            "world",
            "--seed",
            "4",
            "--sites",
            "12",
            "--extent-m",
            "3000",
            "--out",
            str(folder),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "12 sites" in result.output
    return folder


def test_world_writes_registry_truth_and_parameters(world_dir: Path) -> None:
    registry = json.loads((world_dir / "sites.geojson").read_text(encoding="utf-8"))
    assert len(registry["features"]) == 12
    world = json.loads((world_dir / "world.json").read_text(encoding="utf-8"))
    assert world["params"]["seed"] == 4


def test_shoot_over_a_site_writes_jpeg_mask_and_truth(world_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "frame-1"
    result = runner.invoke(
        app,
        [
            "sim",
            "shoot",
            "--world",
            str(world_dir),
            "--site",
            "S0002",
            "--scale",
            "0.1",
            "--gnss",
            "rtk_float",
            "--yaw",
            "30",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    jpeg = (tmp_path / "frame-1.jpg").read_bytes()
    assert read_back(jpeg).xmp["RtkFlag"] == "34"
    truth = json.loads((tmp_path / "frame-1.truth.json").read_text(encoding="utf-8"))
    assert truth["true_pose"]["gimbal_yaw_deg"] == 30.0
    assert truth["pose_error"]["gnss_mode"] == "rtk_float"
    assert (tmp_path / "frame-1.mask.png").stat().st_size > 0


def test_shoot_at_a_position(world_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "sim",
            "shoot",
            "--world",
            str(world_dir),
            "--lat",
            "36.48",
            "--lon",
            "115.45",
            "--alt",
            "80",
            "--pitch",
            "-45",
            "--scale",
            "0.1",
            "--out",
            str(tmp_path / "f"),
        ],
    )
    assert result.exit_code == 0, result.output


def test_shoot_above_the_legal_height_is_refused(world_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "sim",
            "shoot",
            "--world",
            str(world_dir),
            "--site",
            "S0001",
            "--alt",
            "150",
            "--out",
            str(tmp_path / "f"),
        ],
    )
    assert result.exit_code == 1
    assert "120 m" in result.output


def test_shoot_without_a_position_says_what_to_give(world_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["sim", "shoot", "--world", str(world_dir), "--out", str(tmp_path / "f")]
    )
    assert result.exit_code == 1
    assert "--site" in result.output and "--lat" in result.output


def test_shoot_at_an_unknown_site_names_it(world_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "sim",
            "shoot",
            "--world",
            str(world_dir),
            "--site",
            "S9999",
            "--out",
            str(tmp_path / "f"),
        ],
    )
    assert result.exit_code == 1
    assert "S9999" in result.output


def test_shoot_from_a_folder_without_a_world(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["sim", "shoot", "--world", str(tmp_path), "--site", "S0001", "--out", str(tmp_path / "f")],
    )
    assert result.exit_code == 1
    assert "dustpatrol sim world" in result.output


def test_world_with_too_few_sites_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sim", "world", "--sites", "3", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "n_sites must be between 10 and 200" in result.output


def test_preview_writes_nadir_and_oblique_pngs(world_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "sim",
            "preview",
            "--world",
            str(world_dir),
            "--out",
            str(tmp_path),
            "--count",
            "1",
            "--scale",
            "0.1",
        ],
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(names) == 2
    assert names[0].endswith("-nadir.png") and names[1].endswith("-oblique.png")


REAL = Path(__file__).resolve().parents[1] / "vision" / "data" / "real_reference"


def test_compare_over_several_districts_prints_their_median(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["sim", "compare", str(REAL), "--seeds", "78-79", "--count", "1", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "median over 2 districts (seeds 78, 79), 1 renders each" in result.output
    assert (tmp_path / "statistics.json").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give either --world FOLDER or --seeds A-B"),
        (["--seeds", "1-2", "--world", "x"], "give either --world FOLDER or --seeds A-B"),
        (["--seeds", "9-1"], "runs backwards"),
    ],
)
def test_compare_needs_one_source_of_renders(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = runner.invoke(app, ["sim", "compare", str(REAL), "--out", str(tmp_path), *arguments])
    assert result.exit_code == 1
    assert message in result.output
