"""Training and export through ultralytics: the one module of the project that imports it.

Ultralytics reaches for the network in several places (fonts for plots, pretrained weights,
pip installs of missing packages, hub checks); `prepare_offline` switches all of that off and
must run before ultralytics is imported, which is why the import happens inside the
functions here. It also sets the torch thread count to the cores we were given: on two cores
ultralytics otherwise trains on one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vision.errors import VisionError

ARCHITECTURE = "yolo11n-seg.yaml"


@dataclass(frozen=True, slots=True)
class TrainSpec:
    """One training run."""

    data_yaml: Path
    epochs: int
    run_dir: Path  # the run's own folder: weights, metrics, the command
    imgsz: int = 384
    batch: int = 16
    weights: Path | None = None  # fine-tune from these instead of training from scratch
    seed: int = 0
    threads: int = 2
    workers: int = 2
    patience: int = 100
    mosaic: float = 1.0
    close_mosaic: int = 5
    lr0: float = 0.001  # AdamW's initial learning rate
    warmup_epochs: float = 1.0
    # gradients are accumulated to this many images per optimiser step (ultralytics: 64; on
    # a 2-core CPU that is a step every ~40 s)
    nominal_batch: int = 64
    cache: bool = True

    def validate(self) -> None:
        if not self.data_yaml.is_file():
            raise VisionError(
                f"{self.data_yaml} does not exist: build a dataset with `dustpatrol train "
                "dataset` or import one with `dustpatrol train import-coco`"
            )
        if self.epochs < 1:
            raise VisionError(f"epochs must be at least 1, got {self.epochs}")
        if self.imgsz % 32 or not 64 <= self.imgsz <= 2048:
            raise VisionError(f"image size must be a multiple of 32 in 64..2048, got {self.imgsz}")
        if self.weights is not None and not self.weights.is_file():
            raise VisionError(f"starting weights {self.weights} do not exist")
        if self.threads < 1:
            raise VisionError("threads must be at least 1")
        if self.nominal_batch < self.batch:
            raise VisionError(
                f"the nominal batch ({self.nominal_batch}) cannot be below the batch ({self.batch})"
            )
        if not 0.0 < self.lr0 < 1.0:
            raise VisionError(f"the learning rate must be in (0, 1), got {self.lr0}")


def prepare_offline(config_dir: Path, threads: int) -> None:
    """Make ultralytics work without a network, with its settings under ``config_dir``.

    Must be called before ultralytics is first imported in this process.
    """
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir.resolve())
    os.environ.setdefault("YOLO_VERBOSE", "False")
    font = config_dir / "Arial.ttf"
    if not font.is_file():
        shutil.copyfile(_bundled_font(), font)
    if "ultralytics" in sys.modules:
        _set_threads(threads)


def _bundled_font() -> Path:
    """A TTF that is installed anyway (matplotlib's DejaVu Sans, a dependency of ultralytics)."""
    try:
        import matplotlib
    except ImportError:
        raise VisionError(
            "matplotlib is missing: install the training extra, pip install 'dustpatrol[train]'"
        ) from None
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not font.is_file():
        raise VisionError(f"matplotlib's font {font} is missing; reinstall matplotlib")
    return font


def _set_threads(threads: int) -> None:
    import torch
    import ultralytics.utils as ultralytics_utils
    import ultralytics.utils.torch_utils as torch_utils

    torch.set_num_threads(threads)
    ultralytics_utils.NUM_THREADS = threads
    torch_utils.NUM_THREADS = threads


def _import_yolo(threads: int) -> Any:
    try:
        from ultralytics import YOLO
    except ImportError:
        raise VisionError(
            "training needs torch and ultralytics: pip install 'dustpatrol[train]' "
            "(make install does)"
        ) from None
    _unpatch_pillow()
    _set_threads(threads)
    return YOLO


def _unpatch_pillow() -> None:
    """Undo ultralytics' process-wide patch of ``PIL.Image.open``.

    On import it replaces ``Image.open`` with a wrapper that, for any file Pillow cannot
    identify, tries to pip-install and import a HEIF plugin: everywhere else in the process a
    non-image then raises ModuleNotFoundError instead of Pillow's UnidentifiedImageError.
    Our datasets are JPEG and PNG; Pillow's own open is what the rest of the code expects.
    """
    from PIL import Image
    from ultralytics.utils import patches

    original = getattr(patches, "_image_open", None)
    if original is not None:
        Image.open = original


def train(spec: TrainSpec, config_dir: Path, command: Sequence[str] = ()) -> Path:
    """Train (or fine-tune) a YOLO segmentation model; returns the best weights (.pt).

    The run folder keeps ultralytics' weights and ``results.csv``, and ``run.json`` with the
    exact command, the spec and the wall time.
    """
    spec.validate()
    prepare_offline(config_dir, spec.threads)
    yolo_class = _import_yolo(spec.threads)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    model = yolo_class(str(spec.weights) if spec.weights else ARCHITECTURE, task="segment")
    started = time.monotonic()
    model.train(
        data=str(spec.data_yaml.resolve()),
        epochs=spec.epochs,
        imgsz=spec.imgsz,
        batch=spec.batch,
        device="cpu",
        workers=spec.workers,
        seed=spec.seed,
        deterministic=True,
        # ultralytics reads pretrained=False as "drop the weights the model was loaded with":
        # a fine-tune must say True (no download happens: the weights are already loaded).
        pretrained=spec.weights is not None,
        amp=False,
        plots=False,
        project=str(spec.run_dir.parent.resolve()),
        name=spec.run_dir.name,
        exist_ok=True,
        patience=spec.patience,
        mosaic=spec.mosaic,
        close_mosaic=spec.close_mosaic,
        # AdamW at our own rate: ultralytics' "auto" optimiser ignores lr0.
        optimizer="AdamW",
        lr0=spec.lr0,
        nbs=spec.nominal_batch,
        warmup_epochs=spec.warmup_epochs,
        # Ultralytics' warm-up starts the biases' rate at 0.1 (an SGD default) and lowers it
        # to lr0; with Adam every step then moves each bias by up to that rate, which undoes
        # a fine-tune's starting weights in its first iterations (the shipped model's mask
        # mAP50 0.46 on sim-v10's validation districts fell to 0.39 after the first epoch).
        # Its own AdamW choice starts them at zero; so do we.
        warmup_bias_lr=0.0,
        cache="ram" if spec.cache else False,
        overlap_mask=True,
        degrees=10.0,
        flipud=0.5,
        fliplr=0.5,
        scale=0.3,
        hsv_s=0.6,
        hsv_v=0.4,
        verbose=False,
    )
    best = spec.run_dir / "weights" / "best.pt"
    if not best.is_file():
        raise VisionError(f"training finished without writing {best}")
    record = {
        "command": list(command),
        "spec": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(spec).items()},
        "architecture": ARCHITECTURE if spec.weights is None else str(spec.weights),
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    (spec.run_dir / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return best


def resume(run_dir: Path, config_dir: Path, threads: int = 2) -> Path:
    """Go on with a stopped run from its ``weights/last.pt``: same data, schedule, optimiser
    state and epoch count as when it started; returns the best weights (.pt)."""
    last = run_dir / "weights" / "last.pt"
    if not last.is_file():
        raise VisionError(
            f"{last} does not exist: {run_dir} is not a run folder of `dustpatrol train model`"
        )
    prepare_offline(config_dir, threads)
    yolo_class = _import_yolo(threads)
    import torch

    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    # A run that finished strips its optimiser and marks epoch -1; ultralytics would then
    # fall back to a sample dataset it tries to download.
    if checkpoint.get("epoch", -1) < 0 or checkpoint.get("optimizer") is None:
        raise VisionError(
            f"{run_dir} cannot be resumed: its training finished; to train on, start a new run "
            f"from its weights (`dustpatrol train model --weights {last} ...`)"
        )
    data = Path(str(checkpoint.get("train_args", {}).get("data", "")))
    if not data.is_file():
        raise VisionError(
            f"{run_dir} cannot be resumed: its dataset {data} is gone; rebuild it with the "
            "command in its dataset.json, at the same path"
        )
    started = time.monotonic()
    try:
        yolo_class(str(last), task="segment").train(resume=True)
    except AssertionError as exc:  # ultralytics' way of saying "this run already finished"
        raise VisionError(f"{run_dir} cannot be resumed: {exc}") from None
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        raise VisionError(f"training finished without writing {best}")
    record_path = run_dir / "run.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    record.setdefault("resumed_wall_time_s", []).append(round(time.monotonic() - started, 1))
    record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return best


def average_weights(
    checkpoints: Sequence[Path], out: Path, config_dir: Path, shares: Sequence[float] = ()
) -> Path:
    """Average the weights of checkpoints of one architecture (a "model soup"): typically two
    fine-tunes along one line, whose average often generalises better than either. ``shares``
    weigh them (default equal; they must add up to 1). Writes a checkpoint that exports and
    fine-tunes like any other; the sources and shares are kept in it."""
    if len(checkpoints) < 2:
        raise VisionError("averaging needs at least two checkpoints (--weights A --weights B)")
    shares = list(shares) or [1.0 / len(checkpoints)] * len(checkpoints)
    if len(shares) != len(checkpoints):
        raise VisionError(
            f"{len(shares)} shares for {len(checkpoints)} checkpoints: give one share each"
        )
    if any(share <= 0 for share in shares) or abs(sum(shares) - 1.0) > 1e-6:
        raise VisionError(f"shares {shares} must be positive and add up to 1")
    for path in checkpoints:
        if not path.is_file():
            raise VisionError(f"weights {path} do not exist")
    prepare_offline(config_dir, 1)
    _import_yolo(1)
    import torch

    loaded = [torch.load(path, map_location="cpu", weights_only=False) for path in checkpoints]
    models = [(checkpoint.get("ema") or checkpoint["model"]).float() for checkpoint in loaded]
    states = [model.state_dict() for model in models]
    reference = states[0]
    for path, state in zip(checkpoints[1:], states[1:], strict=True):
        if state.keys() != reference.keys() or any(
            state[key].shape != reference[key].shape for key in reference
        ):
            raise VisionError(
                f"{path} is not the same architecture as {checkpoints[0]}: only checkpoints "
                "of one model (fine-tunes of the same weights) can be averaged"
            )
    averaged = {
        key: sum(share * state[key] for share, state in zip(shares, states, strict=True))
        if value.is_floating_point()
        else states[-1][key]  # counters such as BatchNorm's batches seen
        for key, value in reference.items()
    }
    models[-1].load_state_dict(averaged)
    checkpoint = dict(loaded[-1])
    checkpoint.update(
        model=models[-1].half(),
        ema=None,
        optimizer=None,
        epoch=-1,
        dustpatrol_average=[
            {"weights": str(path), "share": share}
            for path, share in zip(checkpoints, shares, strict=True)
        ],
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    return out


def export_onnx(
    weights: Path,
    imgsz: int,
    out: Path,
    config_dir: Path,
    metadata: dict[str, str] | None = None,
    threads: int = 2,
    dynamic: bool = True,
) -> Path:
    """Export ``weights`` to ONNX, written to ``out``, with ``metadata`` added to the model's
    own (ultralytics writes names, imgsz, stride). ``dynamic``: any input size in multiples of
    32 (whole frames in one pass); else a static ``imgsz`` square input."""
    if not weights.is_file():
        raise VisionError(f"weights {weights} do not exist")
    prepare_offline(config_dir, threads)
    yolo_class = _import_yolo(threads)
    import onnx

    # ultralytics writes <weights>.onnx beside the weights: work on a copy, so exporting
    # models/x.pt never overwrites a models/x.onnx that is not the output.
    with tempfile.TemporaryDirectory(prefix="dustpatrol-export-") as scratch:
        copy = Path(scratch) / weights.name
        shutil.copyfile(weights, copy)
        model = yolo_class(str(copy), task="segment")
        exported = Path(
            model.export(format="onnx", imgsz=imgsz, dynamic=dynamic, simplify=False, opset=17)
        )
        model_proto = onnx.load(str(exported))
    existing = {p.key: p for p in model_proto.metadata_props}
    for key, value in (metadata or {}).items():
        entry = existing.get(key) or model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, str(out))
    return out


def validate(
    model_path: Path, data_yaml: Path, imgsz: int, config_dir: Path, threads: int = 2
) -> dict[str, dict[str, float]]:
    """Ultralytics' validation of a model (.pt or .onnx) on the ``val`` split of a dataset:
    per class and over all, box and mask precision, recall, mAP50 and mAP50-95."""
    if not data_yaml.is_file():
        raise VisionError(f"{data_yaml} does not exist: build one with `dustpatrol train dataset`")
    prepare_offline(config_dir, threads)
    yolo_class = _import_yolo(threads)
    model = yolo_class(str(model_path), task="segment")
    metrics = model.val(
        data=str(data_yaml.resolve()),
        imgsz=imgsz,
        batch=1,
        device="cpu",
        plots=False,
        verbose=False,
        project=str(config_dir.resolve() / "val"),
        exist_ok=True,
    )
    names = metrics.names
    result: dict[str, dict[str, float]] = {
        "all": {
            "mask_precision": float(metrics.seg.mp),
            "mask_recall": float(metrics.seg.mr),
            "mask_map50": float(metrics.seg.map50),
            "mask_map50_95": float(metrics.seg.map),
            "box_map50": float(metrics.box.map50),
        }
    }
    for position, class_index in enumerate(metrics.seg.ap_class_index):
        precision, recall, map50, map50_95 = metrics.seg.class_result(position)
        result[str(names[int(class_index)])] = {
            "mask_precision": float(precision),
            "mask_recall": float(recall),
            "mask_map50": float(map50),
            "mask_map50_95": float(map50_95),
        }
    return result
