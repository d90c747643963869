"""``dustpatrol train``: a dataset from the simulated district and a one-epoch training run,
through the command line as a user runs them (offline: no font, weights or pip downloads)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from dustpatrol.cli import app
from dustpatrol.errors import DustpatrolError
from dustpatrol.evaluation import SWEEP_CONFIDENCES
from dustpatrol.training import DatasetSpec, open_ground_sites, parse_seeds, pick_site
from sim.kinds import SurfaceKind
from sim.world import LAYER_SITE_BASE, generate_district

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def test_seed_ranges_and_lists_are_read() -> None:
    assert parse_seeds("1-3,7, 9") == (1, 2, 3, 7, 9)
    with pytest.raises(DustpatrolError, match="runs backwards"):
        parse_seeds("9-3")
    with pytest.raises(DustpatrolError, match="cannot read seeds"):
        parse_seeds("one-two")


def test_a_dataset_needs_a_validation_district(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "dataset", "--seeds", "1-3", "--frames", "1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "no validation district" in result.output


def test_validation_districts_are_never_training_districts() -> None:
    spec = DatasetSpec(seeds=parse_seeds("1-30"), out=Path("unused"))
    val = {s for s in spec.seeds if spec.split_of(s) == "val"}
    assert val == {7, 14, 21, 28}


def test_compliant_sites_can_be_favoured_as_frame_centres() -> None:
    sites = generate_district(3, n_sites=20, extent_m=2_500.0).sites
    compliant = sum(site.compliant for site in sites) / len(sites)
    assert 0.1 < compliant < 0.9

    def share(weight: float, rng: np.random.Generator) -> float:
        picks = [pick_site(sites, rng, weight).compliant for _ in range(4_000)]
        return sum(picks) / len(picks)

    # weight 1 draws exactly what sets made before the weight did (they stay reproducible)
    plain, weighted = np.random.default_rng(5), np.random.default_rng(5)
    before = [sites[int(plain.integers(len(sites)))].site_id for _ in range(50)]
    assert [pick_site(sites, weighted, 1.0).site_id for _ in range(50)] == before
    # weight 3: compliant sites three times as likely as violating ones
    expected = 3 * compliant / (3 * compliant + (1 - compliant))
    assert share(3.0, np.random.default_rng(1)) == pytest.approx(expected, abs=0.03)
    assert share(1.0, np.random.default_rng(1)) == pytest.approx(compliant, abs=0.03)


def test_sites_on_open_ground_can_be_favoured_as_frame_centres() -> None:
    district = generate_district(3, n_sites=12, extent_m=3_000.0)
    sites = district.sites
    open_ground = open_ground_sites(district)
    # the construction sites on graded earth or weeds, and nothing else
    assert 0 < len(open_ground) < len(sites)
    for site in sites:
        base = [
            s.kind
            for s in district.fixed_surfaces
            if s.site_id == site.site_id and s.layer == LAYER_SITE_BASE
        ]
        assert (site.site_id in open_ground) == (
            base[0] in (SurfaceKind.BARE_SOIL, SurfaceKind.GROUND)
        )
    share = len(open_ground) / len(sites)

    def drawn(weight: float, compliant_weight: float = 1.0) -> float:
        rng = np.random.default_rng(2)
        picks = [
            pick_site(sites, rng, compliant_weight, open_ground, weight).site_id in open_ground
            for _ in range(4_000)
        ]
        return sum(picks) / len(picks)

    assert drawn(1.0) == pytest.approx(share, abs=0.03)
    assert drawn(3.0) == pytest.approx(3 * share / (3 * share + 1 - share), abs=0.03)
    # the weights multiply: a compliant site on open ground is six times as likely at 3 and 2
    rng = np.random.default_rng(4)
    weights = [
        (2.0 if s.compliant else 1.0) * (3.0 if s.site_id in open_ground else 1.0) for s in sites
    ]
    counts = Counter(pick_site(sites, rng, 2.0, open_ground, 3.0).site_id for _ in range(6_000))
    for site, weight in zip(sites, weights, strict=True):
        assert counts[site.site_id] / 6_000 == pytest.approx(weight / sum(weights), abs=0.02)


def test_an_open_ground_weight_out_of_range_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "dataset",
            "--seeds",
            "1-7",
            "--open-ground-weight",
            "20",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1
    assert "open-ground site weight 20.0 is outside 0.1..10" in result.output
    assert not any(tmp_path.iterdir())


def test_a_compliant_weight_out_of_range_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["train", "dataset", "--seeds", "1-7", "--compliant-weight", "0", "--out", str(tmp_path)],
    )
    assert result.exit_code == 1
    assert "compliant-site weight 0.0 is outside 0.1..10" in result.output
    assert not any(tmp_path.iterdir()), "nothing is written for a refused set"


def test_a_white_balance_range_out_of_bounds_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "dataset", "--seeds", "1-7", "--warmth", "0.5", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "white-balance warmth 0.5 is outside 0..0.3" in result.output
    assert not any(tmp_path.iterdir()), "nothing is written for a refused set"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dataset")
    result = runner.invoke(
        app,
        [
            "train",
            "dataset",
            "--seeds",
            "6-7",
            "--frames",
            "3",
            "--imgsz",
            "256",
            "--out",
            str(out),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_dataset_is_split_by_district_with_labels_for_every_image(dataset: Path) -> None:
    summary = json.loads((dataset / "dataset.json").read_text())
    assert summary["splits"]["train"]["districts"] == [6]
    assert summary["splits"]["val"]["districts"] == [7]
    for split in ("train", "val"):
        images = sorted((dataset / "images" / split).glob("*.jpg"))
        labels = sorted((dataset / "labels" / split).glob("*.txt"))
        assert images and [p.stem for p in images] == [p.stem for p in labels]
    assert summary["command"][:3] == ["dustpatrol", "train", "dataset"]


def test_one_epoch_of_training_runs_offline_and_keeps_its_command(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ultralytics")
    monkeypatch.setenv("DUSTPATROL_PATHS__DATA_DIR", str(tmp_path / "var"))
    # Any attempt to reach the network fails at once instead of hanging.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "model",
            "--data",
            str(dataset / "data.yaml"),
            "--epochs",
            "1",
            "--imgsz",
            "256",
            "--batch",
            "4",
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (run / "weights" / "best.pt").is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["command"][:3] == ["dustpatrol", "train", "model"]
    assert (tmp_path / "var" / "ultralytics" / "Arial.ttf").is_file()
    assert os.environ["YOLO_OFFLINE"] == "1"
    # A finished run has nothing to resume, and a folder without last.pt is no run at all.
    finished = runner.invoke(app, ["train", "resume", "--run", str(run)])
    assert finished.exit_code == 1 and "cannot be resumed" in finished.output, finished.output
    nothing = runner.invoke(app, ["train", "resume", "--run", str(tmp_path / "no-run")])
    assert nothing.exit_code == 1 and "is not a run folder" in nothing.output


def test_training_without_a_dataset_says_how_to_make_one(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "model", "--data", str(tmp_path / "none.yaml"), "--epochs", "1"]
    )
    assert result.exit_code == 1
    assert "dustpatrol train dataset" in result.output


def test_fine_tuning_starts_from_the_given_weights(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ultralytics drops the loaded weights when told pretrained=False, and its warm-up
    starts the biases at a rate of 0.1: a fine-tune at a vanishing learning rate, warm-up
    included, must end where it started, biases too, not at a fresh initialisation."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("DUSTPATROL_PATHS__DATA_DIR", str(tmp_path / "var"))
    start = Path(__file__).resolve().parents[2] / "models" / "dustpatrol-seg.pt"
    run = tmp_path / "tuned"
    result = runner.invoke(
        app,
        [
            "train", "model", "--data", str(dataset / "data.yaml"), "--epochs", "2",
            "--warmup", "1", "--imgsz", "256", "--batch", "4", "--nominal-batch", "4",
            "--lr0", "1e-9", "--weights", str(start), "--out", str(run),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    def weights(path: Path) -> dict[str, Any]:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        model = checkpoint.get("ema") or checkpoint["model"]
        return {k: v.float() for k, v in model.state_dict().items() if "running" not in k}

    before, after = weights(start), weights(run / "weights" / "last.pt")
    moved = sum(float((after[k] - v).norm() ** 2) for k, v in before.items())
    size = sum(float(v.norm() ** 2) for v in before.values())
    assert (moved / size) ** 0.5 < 0.01, f"the weights moved by {(moved / size) ** 0.5:.2f}"
    biases = [k for k in before if k.endswith(".bias")]
    assert biases
    shift = max(float((after[k] - before[k]).abs().max()) for k in biases)
    assert shift < 1e-3, f"a bias moved by {shift:.3f} in the warm-up"


def test_averaged_weights_sit_between_their_sources_and_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model soup of the shipped weights and a shifted copy lies where the shares put it,
    keeps where it came from, and exports like a trained checkpoint."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("DUSTPATROL_PATHS__DATA_DIR", str(tmp_path / "var"))
    start = Path(__file__).resolve().parents[2] / "models" / "dustpatrol-seg.pt"
    checkpoint = torch.load(start, map_location="cpu", weights_only=False)
    model = (checkpoint.get("ema") or checkpoint["model"]).float()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5)
    shifted = tmp_path / "shifted.pt"
    torch.save({**checkpoint, "model": model.half(), "ema": None}, shifted)
    soup = tmp_path / "soup.pt"
    result = runner.invoke(
        app,
        [
            "train", "average", "--weights", str(start), "--weights", str(shifted),
            "--share", "0.75", "--share", "0.25", "--out", str(soup),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    def parameters(path: Path) -> dict[str, Any]:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
        return {k: v.float() for k, v in (loaded.get("ema") or loaded["model"]).named_parameters()}

    a, b, mixed = parameters(start), parameters(shifted), parameters(soup)
    for key, value in a.items():
        assert torch.allclose(mixed[key], 0.75 * value + 0.25 * b[key], atol=2e-3), key
    saved = torch.load(soup, map_location="cpu", weights_only=False)
    assert [s["share"] for s in saved["dustpatrol_average"]] == [0.75, 0.25]
    exported = runner.invoke(
        app, ["train", "export", "--weights", str(soup), "--out", str(tmp_path / "soup.onnx"),
              "--no-dynamic"],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "soup.onnx").stat().st_size > 1_000_000


def test_averaging_refuses_what_cannot_be_averaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("DUSTPATROL_PATHS__DATA_DIR", str(tmp_path / "var"))
    start = Path(__file__).resolve().parents[2] / "models" / "dustpatrol-seg.pt"
    other = tmp_path / "other.pt"
    torch.save({"model": torch.nn.Linear(2, 2), "ema": None}, other)
    out = tmp_path / "soup.pt"

    def average(*args: str) -> str:
        result = runner.invoke(app, ["train", "average", *args, "--out", str(out)])
        assert result.exit_code == 1, result.output
        return result.output

    assert "not the same architecture" in average("--weights", str(start), "--weights", str(other))
    assert "at least two" in average("--weights", str(start))
    assert "do not exist" in average("--weights", str(start), "--weights", str(tmp_path / "x.pt"))
    shares = average(
        "--weights", str(start), "--weights", str(start), "--share", "0.5", "--share", "0.7"
    )
    assert "add up to 1" in shares
    assert not out.exists()


def test_calibration_writes_the_best_threshold_of_each_class_into_the_model(
    tmp_path: Path,
) -> None:
    from vision.detect import Detector

    model = tmp_path / "model.onnx"
    model.write_bytes((ROOT / "models" / "dustpatrol-seg-int8.onnx").read_bytes())
    result = runner.invoke(
        app, ["train", "calibrate", "--model", str(model), "--seeds", "9004", "--frames", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "| road_dust IoU |" in result.output
    chosen = Detector(model).conf
    assert isinstance(chosen, tuple) and len(chosen) == 3
    for name, threshold in zip(Detector(model).class_names, chosen, strict=True):
        row = next(line for line in result.output.splitlines() if line.startswith(f"| {name} "))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        ious = [float(cell) for cell in cells[1:-1]]
        assert float(cells[-1]) == threshold
        # best together with its neighbours in the sweep (the printed IoUs are rounded)
        near = [sum(ious[max(0, i - 1) : i + 2]) / len(ious[max(0, i - 1) : i + 2])
                for i in range(len(ious))]  # fmt: skip
        assert near[SWEEP_CONFIDENCES.index(threshold)] == pytest.approx(max(near), abs=1e-3)


def test_calibration_without_every_class_in_view_leaves_the_model_as_it_was(
    tmp_path: Path,
) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes((ROOT / "models" / "dustpatrol-seg-int8.onnx").read_bytes())
    before = model.read_bytes()
    result = runner.invoke(
        app, ["train", "calibrate", "--model", str(model), "--seeds", "9001", "--frames", "1"]
    )
    assert result.exit_code != 0
    assert "hold no exposed_soil" in result.output and "more frames" in result.output
    assert model.read_bytes() == before
