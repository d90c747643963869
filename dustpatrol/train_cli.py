"""``dustpatrol train``: datasets from the simulated district or from labelled photos, training,
export to ONNX, and evaluation of a model on held-out districts and real photos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dustpatrol.coco import import_coco
from dustpatrol.errors import DustpatrolError
from dustpatrol.evaluation import (
    SWEEP_CONFIDENCES,
    choose_confidences,
    evaluate_real,
    evaluate_simulated,
    write_report,
)
from dustpatrol.progress import progress_bar
from dustpatrol.training import DatasetSpec, build_dataset, parse_seeds
from vision.augment import WARMTH

train_app = typer.Typer(
    help="Datasets, training, export and evaluation of the detector.", no_args_is_help=True
)


def _config_dir(ctx: typer.Context) -> Path:
    from dustpatrol.cli import cli_state

    return cli_state(ctx).settings.paths.data_dir / "ultralytics"


@train_app.command("dataset")
def dataset_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    seeds: Annotated[
        str, typer.Option(help="District seeds, e.g. 1-84; every 7th is a validation district.")
    ] = "1-84",
    frames: Annotated[int, typer.Option(help="Frames rendered per district.")] = 10,
    crops: Annotated[int, typer.Option(help="Training images cut from each frame.")] = 2,
    imgsz: Annotated[int, typer.Option(help="Square image size in pixels.")] = 384,
    gsd: Annotated[float, typer.Option(help="Analysis ground resolution, m/px.")] = 0.1,
    workers: Annotated[int, typer.Option(help="Rendering processes.")] = 2,
    randomise: Annotated[
        bool, typer.Option(help="Domain randomisation (colour, blur, noise, JPEG).")
    ] = True,
    compliant_weight: Annotated[
        float,
        typer.Option(
            help="How much likelier a compliant site is as a frame's centre (hard negatives)."
        ),
    ] = 1.0,
    open_ground_weight: Annotated[
        float,
        typer.Option(
            help="How much likelier a site on bare earth or weeds is as a frame's centre "
            "(the look of an unkempt site at the earthworks stage)."
        ),
    ] = 1.0,
    warmth: Annotated[
        float,
        typer.Option(
            help="White-balance range of the randomisation along the warm-cool axis: the log "
            "of the red and blue gains within +-this (0.12: red over blue 0.79-1.27)."
        ),
    ] = WARMTH,
) -> None:
    """Render a YOLO-seg dataset from simulated districts (split by district)."""
    spec = DatasetSpec(
        seeds=parse_seeds(seeds),
        out=out,
        frames_per_district=frames,
        crops_per_frame=crops,
        imgsz=imgsz,
        gsd_m=gsd,
        randomise=randomise,
        compliant_weight=compliant_weight,
        open_ground_weight=open_ground_weight,
        warmth=warmth,
    )
    console = Console(stderr=True)
    with progress_bar(console) as progress:
        task = progress.add_task("rendering districts", total=len(spec.seeds))
        data_yaml = build_dataset(
            spec,
            workers=workers,
            command=[
                "dustpatrol",
                "train",
                "dataset",
                "--seeds",
                seeds,
                "--frames",
                str(frames),
                "--crops",
                str(crops),
                "--imgsz",
                str(imgsz),
                "--gsd",
                str(gsd),
                "--randomise" if randomise else "--no-randomise",
                "--compliant-weight",
                str(compliant_weight),
                "--open-ground-weight",
                str(open_ground_weight),
                "--warmth",
                str(warmth),
                "--out",
                str(out),
            ],
            on_district=lambda _: progress.advance(task),
        )
    summary = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    for split, figures in summary["splits"].items():
        typer.echo(
            f"{split}: {figures['images']} images from {len(figures['districts'])} districts, "
            f"instances {figures['instances']}"
        )
    typer.echo(f"dataset: {data_yaml}")


@train_app.command("model")
def model_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="data.yaml of a YOLO-seg dataset.")],
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 20,
    out: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("var/runs/train"),
    weights: Annotated[
        Path | None, typer.Option(help="Fine-tune from these weights (.pt) instead of scratch.")
    ] = None,
    imgsz: Annotated[int, typer.Option(help="Training image size.")] = 384,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 16,
    seed: Annotated[int, typer.Option(help="Random seed (training is deterministic).")] = 0,
    threads: Annotated[int, typer.Option(help="Torch threads (the cores to use).")] = 2,
    lr0: Annotated[float, typer.Option(help="Initial learning rate (AdamW).")] = 0.001,
    warmup: Annotated[float, typer.Option(help="Warm-up epochs.")] = 1.0,
    nominal_batch: Annotated[
        int, typer.Option(help="Images per optimiser step (gradients accumulated).")
    ] = 64,
    close_mosaic: Annotated[int, typer.Option(help="Train the last N epochs without mosaic.")] = 5,
) -> None:
    """Train a nano YOLO segmentation model (or fine-tune one) on the CPU, offline."""
    from vision.training import TrainSpec, train

    spec = TrainSpec(
        data_yaml=data,
        epochs=epochs,
        run_dir=out,
        imgsz=imgsz,
        batch=batch,
        weights=weights,
        seed=seed,
        threads=threads,
        lr0=lr0,
        warmup_epochs=warmup,
        nominal_batch=nominal_batch,
        close_mosaic=close_mosaic,
    )
    command = [
        "dustpatrol",
        "train",
        "model",
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--imgsz",
        str(imgsz),
        "--batch",
        str(batch),
        "--seed",
        str(seed),
        "--threads",
        str(threads),
        "--lr0",
        str(lr0),
        "--warmup",
        str(warmup),
        "--close-mosaic",
        str(close_mosaic),
        "--nominal-batch",
        str(nominal_batch),
        "--out",
        str(out),
    ]
    if weights is not None:
        command += ["--weights", str(weights)]
    best = train(spec, _config_dir(ctx), command=command)
    typer.echo(f"best weights: {best}")


@train_app.command("export-reviewed")
def export_reviewed_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    imgsz: Annotated[int, typer.Option(help="Square crop size in pixels.")] = 384,
    gsd: Annotated[
        float | None, typer.Option(help="Crop ground resolution, m/px (default: settings).")
    ] = None,
    val_share: Annotated[float, typer.Option(help="Share of the sites kept for validation.")] = 0.2,
    frames_per_finding: Annotated[
        int, typer.Option(help="Evidence frames used per finding, at most.")
    ] = 3,
) -> None:
    """Turn the findings analysts confirmed (labels) or rejected (hard negatives) in the
    notice service's database into a YOLO-seg dataset for fine-tuning."""
    from api.db import make_engine, session_factory
    from dustpatrol.cli import cli_state
    from dustpatrol.reviewed import export_reviewed

    settings = cli_state(ctx).settings
    command = ["dustpatrol", "train", "export-reviewed", "--out", str(out), "--imgsz",
               str(imgsz), "--val-share", str(val_share), "--frames-per-finding",
               str(frames_per_finding)] + (["--gsd", str(gsd)] if gsd else [])  # fmt: skip
    engine = make_engine(settings.database.url)
    try:
        with session_factory(engine)() as session:
            result = export_reviewed(
                session, settings, out, imgsz=imgsz, gsd_m=gsd, val_share=val_share,
                frames_per_finding=frames_per_finding, command=command,
            )  # fmt: skip
    finally:
        engine.dispose()
    console = Console(stderr=True, highlight=False)
    for reason in result.skipped:
        console.print(f"[yellow]left out[/] {reason}")
    typer.echo(
        f"train: {result.images['train']} images, val: {result.images['val']} images; "
        f"{result.labels} confirmed outlines, {result.negatives} hard negatives"
    )
    if not result.images["val"]:
        console.print(
            "[yellow]no validation images[/] (too few sites reviewed): list this dataset's "
            "images/train beside a simulated dataset in one data.yaml, or review more sites"
        )
    typer.echo(f"dataset: {result.data_yaml}")


@train_app.command("resume")
def resume_command(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option("--run", help="Run folder of a stopped training.")],
    threads: Annotated[int, typer.Option(help="Torch threads (the cores to use).")] = 2,
) -> None:
    """Go on with a stopped training run where it stopped (its last.pt)."""
    from vision.training import resume

    best = resume(run, _config_dir(ctx), threads=threads)
    typer.echo(f"best weights: {best}")


@train_app.command("average")
def average_command(
    ctx: typer.Context,
    weights: Annotated[
        list[Path], typer.Option("--weights", help="A checkpoint (.pt); give two or more.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Averaged checkpoint to write (.pt).")],
    share: Annotated[
        list[float] | None,
        typer.Option(help="Weight of each checkpoint in its order (default equal; sum 1)."),
    ] = None,
) -> None:
    """Average fine-tunes of one model into one checkpoint (a model soup)."""
    from vision.training import average_weights

    path = average_weights(weights, out, _config_dir(ctx), share or ())
    typer.echo(f"averaged {len(weights)} checkpoints into {path}")


@train_app.command("export")
def export_command(
    ctx: typer.Context,
    weights: Annotated[Path, typer.Option("--weights", help="Trained weights (.pt).")],
    out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")] = Path(
        "models/dustpatrol-seg.onnx"
    ),
    imgsz: Annotated[int, typer.Option(help="Training size (tile size of large frames).")] = 384,
    gsd: Annotated[float, typer.Option(help="Ground resolution it was trained at, m/px.")] = 0.1,
    dynamic: Annotated[
        bool,
        typer.Option(help="Any input size (whole frames in one pass); --static: imgsz only."),
    ] = True,
) -> None:
    """Export weights to ONNX with the training resolution in its metadata."""
    from vision.training import export_onnx

    path = export_onnx(
        weights,
        imgsz,
        out,
        _config_dir(ctx),
        metadata={"dustpatrol_gsd_m": str(gsd)},
        dynamic=dynamic,
    )
    typer.echo(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)")


@train_app.command("quantize")
def quantize_command(
    model: Annotated[Path, typer.Option("--model", help="A static ONNX export (float).")],
    images: Annotated[
        Path, typer.Option("--images", help="Calibration images: a dataset's images folder.")
    ],
    out: Annotated[Path, typer.Option("--out", help="INT8 ONNX file to write.")] = Path(
        "models/dustpatrol-seg-int8.onnx"
    ),
    count: Annotated[int, typer.Option(min=8, max=5000, help="Calibration images used.")] = 120,
) -> None:
    """INT8 version of a model for CPUs (about twice as fast here, same accuracy within
    noise); calibrate on the images it was trained on."""
    from vision.quantize import calibration_images, quantize_model

    path = quantize_model(model, out, calibration_images(images, count))
    typer.echo(f"quantized {path} ({path.stat().st_size / 1e6:.1f} MB)")


@train_app.command("calibrate")
def calibrate_command(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option("--model", help="ONNX model to calibrate.")],
    seeds: Annotated[
        str,
        typer.Option(help="Validation district seeds: neither trained on nor reported."),
    ] = "9011-9030",
    frames: Annotated[int, typer.Option(min=1, help="Frames per district.")] = 2,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the calibrated model here (default: in place)."),
    ] = None,
) -> None:
    """Choose the model's confidence threshold per class on validation districts (the best
    IoU of each class over a sweep, averaged with its neighbours') and write them into the
    model: detection then uses them unless `detection.min_confidence` sets one for all."""
    from dustpatrol.cli import cli_state
    from vision.detect import Detector
    from vision.onnx_model import confidence_metadata, write_metadata

    settings = cli_state(ctx).settings
    detector = Detector(model, threads=settings.detection.threads, conf=0.25)
    parsed = parse_seeds(seeds)
    console = Console(stderr=True)
    with progress_bar(console) as progress:
        task = progress.add_task("validation frames", total=len(parsed) * frames)
        simulated = evaluate_simulated(
            detector, parsed, frames, on_frame=lambda: progress.advance(task)
        )
    chosen = choose_confidences(simulated, detector.class_names)
    header = "| class | " + " | ".join(f"{c:g}" for c in SWEEP_CONFIDENCES) + " | chosen |"
    lines = [header, "|---|" + "---:|" * (len(SWEEP_CONFIDENCES) + 1)]
    for name, threshold in zip(detector.class_names, chosen, strict=True):
        ious = [simulated.extra[f"{name} IoU at confidence {c:g}"] for c in SWEEP_CONFIDENCES]
        cells = " | ".join("–" if iou is None else f"{iou:.3f}" for iou in ious)
        lines.append(f"| {name} IoU | {cells} | {threshold:g} |")
    typer.echo("\n".join(lines))
    path = write_metadata(model, confidence_metadata(detector.class_names, chosen), out)
    typer.echo(f"calibrated {path} on seeds {seeds} ({simulated.frames} frames)")


@train_app.command("evaluate")
def evaluate_command(
    ctx: typer.Context,
    model: Annotated[Path | None, typer.Option(help="ONNX model (default: settings).")] = None,
    seeds: Annotated[
        str, typer.Option(help="Held-out district seeds (never used in training).")
    ] = "9001-9010",
    frames: Annotated[int, typer.Option(help="Frames per held-out district.")] = 4,
    real: Annotated[
        Path | None, typer.Option(help="Folder of real photos with regions.json.")
    ] = Path("tests/vision/data/real_reference"),
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("var/evaluation"),
    map_data: Annotated[
        Path | None,
        typer.Option(help="data.yaml of held-out districts for ultralytics' mask mAP50."),
    ] = None,
) -> None:
    """Measure a model on held-out simulated districts and on real photos; write a report."""
    from dustpatrol.cli import cli_state
    from vision.detect import Detector

    settings = cli_state(ctx).settings
    detector = Detector(
        model or settings.detection.model_path,
        threads=settings.detection.threads,
        conf=settings.detection.min_confidence,
        overlap=settings.detection.tile_overlap,
    )
    parsed = parse_seeds(seeds)
    console = Console(stderr=True)
    with progress_bar(console) as progress:
        task = progress.add_task("held-out frames", total=len(parsed) * frames)
        simulated = evaluate_simulated(
            detector, parsed, frames, out, on_frame=lambda: progress.advance(task)
        )
    report: dict[str, object] = {"model": str(model or settings.detection.model_path)}
    report["simulated"] = {"seeds": list(parsed), **simulated.summary()}
    if map_data is not None:
        from vision.training import validate

        report["map"] = validate(
            model or settings.detection.model_path,
            map_data,
            detector.model.imgsz,
            _config_dir(ctx),
        )
    if real is not None:
        if not real.is_dir():
            raise DustpatrolError(f"{real} is not a folder of real photos with regions.json")
        report["real"] = evaluate_real(detector, real, out).summary()
    write_report(out / "report.json", report)
    typer.echo(json.dumps(report, indent=2))


@train_app.command("import-coco")
def import_coco_command(
    annotations: Annotated[
        Path, typer.Argument(help="COCO segmentation JSON (CVAT, Label Studio).")
    ],
    images: Annotated[Path, typer.Option("--images", help="Folder the file names refer to.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the YOLO-seg dataset into.")],
    val_share: Annotated[float, typer.Option(help="Share of images for validation.")] = 0.2,
) -> None:
    """Turn a COCO segmentation export of your own labelled photos into a YOLO-seg dataset
    whose classes are named as the shipped model's (map yours with the category names)."""
    data_yaml, counts = import_coco(annotations, images, out, val_share=val_share)
    typer.echo(f"imported {counts['images']} images, {counts['instances']} instances: {data_yaml}")
