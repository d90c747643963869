"""YOLO-seg labels from class masks, and decoding frames at the analysis scale."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from vision.augment import randomise, white_balance
from vision.detect import Detector, decode_at_scale
from vision.errors import VisionError
from vision.labels import mask_instances, rasterise_instances, read_yolo_labels, yolo_label_lines


def _mask() -> np.ndarray:
    mask = np.zeros((300, 400), dtype=np.uint8)
    cv2.rectangle(mask, (20, 30), (220, 200), 3, -1)  # covered soil
    cv2.circle(mask, (120, 110), 35, 1, -1)  # a torn hole showing soil
    cv2.ellipse(mask, (320, 220), (60, 25), 30, 0, 360, 2, -1)  # road dust
    mask[0:40, 360:400] = 255  # sky is not a class
    return mask


def test_labels_round_trip_through_the_yolo_format(tmp_path: Path) -> None:
    mask = _mask()
    to_label = {1: 0, 2: 1, 3: 2}
    instances = mask_instances(mask, to_label)
    assert sorted(i.class_id for i in instances) == [0, 1, 2]
    path = tmp_path / "frame.txt"
    path.write_text("\n".join(yolo_label_lines(instances, 400, 300)) + "\n")
    back = rasterise_instances(read_yolo_labels(path, 400, 300), 400, 300)
    for value, class_id in to_label.items():
        truth, drawn = mask == value, back == class_id
        iou = (truth & drawn).sum() / (truth | drawn).sum()
        assert iou > 0.97, (value, iou)
    assert not np.any(back[0:40, 360:400] != 255)


def test_specks_below_the_minimum_area_are_not_labelled() -> None:
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[10, 10] = 1
    mask[50:60, 50:60] = 1
    assert len(mask_instances(mask, {1: 0}, min_area_px=12)) == 1


def test_a_broken_label_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("0 0.1 0.1 0.2 0.2 0.3 0.3\n1 0.5 0.5\n")
    with pytest.raises(VisionError, match=r"bad.txt:2"):
        read_yolo_labels(path, 100, 100)


def test_domain_randomisation_keeps_size_and_changes_pixels() -> None:
    image = np.full((64, 64, 3), 120, dtype=np.uint8)
    image[16:48, 16:48] = (60, 90, 150)
    rng = np.random.default_rng(3)
    changed = randomise(image, rng)
    assert changed.shape == image.shape and changed.dtype == np.uint8
    assert np.abs(changed.astype(int) - image).mean() > 1.0


def _chroma_and_fine_contrast(image: NDArray[np.uint8]) -> tuple[float, float]:
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    chroma = float(np.hypot(lab[:, :, 1], lab[:, :, 2]).mean())
    gradient = np.hypot(*np.gradient(lab[:, :, 0]))
    return chroma, float(np.percentile(gradient, 90))


def test_domain_randomisation_is_not_biased_to_grey_or_soft_pictures() -> None:
    """Over many draws the median picture keeps the colour and the fine contrast it had:
    the randomisation spreads them both ways. Before, 40 % dull pictures with their
    saturation cut to 0.25-0.8 and blur in 30 % left the median with two thirds of the colour
    and half the fine contrast, on renders already muted by their picture style."""
    rng = np.random.default_rng(5)
    soil = np.empty((96, 96, 3), dtype=np.uint8)
    soil[:] = (92, 121, 146)  # loess, BGR
    soil = np.clip(soil + rng.normal(0, 12, size=(96, 96, 1)), 0, 255).astype(np.uint8)
    chroma, contrast = _chroma_and_fine_contrast(soil)
    draws = [_chroma_and_fine_contrast(randomise(soil, rng)) for _ in range(200)]
    assert float(np.median([c for c, _ in draws])) / chroma >= 0.9
    assert float(np.median([g for _, g in draws])) / contrast >= 0.8  # JPEG takes some


def test_white_balance_strays_both_ways_along_the_warm_cool_axis() -> None:
    """Pictures as warm as a real photo made 10 % redder and 10 % less blue, and as cool the
    other way, are both common in training (before, 5 % per channel: a fifth as common), and
    the green-magenta tint stays slight."""
    rng = np.random.default_rng(7)
    gains = np.array([white_balance(rng) for _ in range(1000)])
    red_over_blue = gains[:, 2] / gains[:, 0]
    assert np.mean(red_over_blue >= 1.1) >= 0.2 and np.mean(red_over_blue <= 1 / 1.1) >= 0.2
    assert red_over_blue.min() >= 0.72 and red_over_blue.max() <= 1.4
    green = gains[:, 1] / np.sqrt(gains[:, 0] * gains[:, 2])
    assert np.all(np.abs(np.log(green)) < 0.15)


@pytest.mark.parametrize("warmth", [0.0, 0.06])
def test_a_narrower_white_balance_stays_within_its_range(warmth: float) -> None:
    """`train dataset --warmth W`: red over blue within exp(+-2W) (a little more for each
    channel's own 1 % wobble)."""
    rng = np.random.default_rng(3)
    gains = np.array([white_balance(rng, warmth) for _ in range(1000)])
    log_ratio = np.log(gains[:, 2] / gains[:, 0])
    assert np.all(np.abs(log_ratio) <= 2 * warmth + 0.06)
    if warmth:
        assert np.abs(log_ratio).max() >= 1.5 * warmth  # the range is used, not a fixed cast


def _jpeg(path: Path, size: tuple[int, int] = (1600, 1200), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, quality=90)
    return path


def test_a_frame_is_decoded_once_at_the_scale_asked_for(tmp_path: Path) -> None:
    frame = decode_at_scale(_jpeg(tmp_path / "f.jpg"), 0.3)
    assert frame.bgr.shape == (360, 480, 3)
    assert frame.to_full_frame == pytest.approx(1600 / 480)
    assert (frame.full_width_px, frame.full_height_px) == (1600, 1200)


def test_a_grayscale_frame_comes_out_in_colour(tmp_path: Path) -> None:
    frame = decode_at_scale(_jpeg(tmp_path / "g.jpg", mode="L"), 0.5)
    assert frame.bgr.shape == (600, 800, 3)


def test_a_truncated_frame_is_refused_at_the_door(tmp_path: Path) -> None:
    whole = _jpeg(tmp_path / "whole.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(VisionError, match="truncated or corrupt"):
        decode_at_scale(cut, 0.5)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not an image at all", "not an image"), (None, "does not exist")],
)
def test_unreadable_frames_say_what_is_wrong(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "frame.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VisionError, match=message):
        decode_at_scale(path, 0.5)


def test_a_tiny_frame_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VisionError, match="too small"):
        decode_at_scale(_jpeg(tmp_path / "tiny.jpg", size=(20, 16)), 1.0)


def test_a_missing_model_file_says_where_the_shipped_one_is(tmp_path: Path) -> None:
    with pytest.raises(VisionError, match="does not exist"):
        Detector(tmp_path / "nothing.onnx")


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(VisionError, match="not a usable ONNX model"):
        Detector(path)


def test_the_training_adapter_leaves_pillow_as_it_was(tmp_path: Path) -> None:
    """ultralytics patches PIL.Image.open on import; a non-image must still be refused with
    our error, not a failed attempt to install a HEIF plugin."""
    pytest.importorskip("ultralytics")
    from vision.training import _import_yolo

    _import_yolo(threads=1)
    path = tmp_path / "frame.jpg"
    path.write_bytes(b"not an image at all")
    with pytest.raises(VisionError, match="not an image"):
        decode_at_scale(path, 0.5)
