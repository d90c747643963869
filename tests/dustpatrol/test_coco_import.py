"""COCO segmentation exports (as CVAT and Label Studio write them) become YOLO-seg datasets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as coco_mask
import pytest

from dustpatrol.coco import decode_rle, import_coco
from dustpatrol.errors import DustpatrolError
from vision.labels import rasterise_instances, read_yolo_labels


def _photo(folder: Path, name: str, size: tuple[int, int] = (320, 240)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = np.full((size[1], size[0], 3), 110, dtype=np.uint8)
    path = folder / name
    cv2.imwrite(str(path), image)
    return path


def _coco(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    images = tmp_path / "photos"
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"):
        _photo(images, name)
    soil = np.zeros((240, 320), dtype=np.uint8)
    cv2.circle(soil, (100, 120), 50, 1, -1)
    rle = coco_mask.encode(np.asfortranarray(soil))
    document = {
        "images": [
            {"id": i + 1, "file_name": n, "width": 320, "height": 240}
            for i, n in enumerate(("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"))
        ],
        "categories": [
            {"id": 1, "name": "exposed_soil"},
            {"id": 2, "name": "covered_soil"},
            {"id": 3, "name": "car"},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 1,
                "segmentation": {"size": [240, 320], "counts": rle["counts"].decode()},
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": [[200.0, 20.0, 300.0, 20.0, 300.0, 100.0, 200.0, 100.0]],
            },
            {
                "id": 3,
                "image_id": 2,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": [[10.0, 10.0, 50.0, 10.0, 50.0, 50.0]],
            },
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(document))
    return path, images, soil


def test_compressed_rle_decodes_as_pycocotools_encodes_it() -> None:
    mask = np.zeros((37, 53), dtype=np.uint8)
    cv2.circle(mask, (20, 18), 11, 1, -1)
    mask[30:35, 40:50] = 1
    encoded = coco_mask.encode(np.asfortranarray(mask))
    assert np.array_equal(decode_rle(encoded["counts"].decode(), 37, 53), mask)


def test_coco_export_becomes_a_yolo_dataset(tmp_path: Path) -> None:
    annotations, images, soil = _coco(tmp_path)
    data_yaml, counts = import_coco(annotations, images, tmp_path / "dataset", val_share=0.3)
    assert data_yaml.is_file()
    assert counts == {"images": 5, "instances": 2, "negatives": 4, "skipped": 1}
    labels = sorted((tmp_path / "dataset" / "labels").rglob("a-*.txt"))
    assert len(labels) == 1
    drawn = rasterise_instances(read_yolo_labels(labels[0], 320, 240), 320, 240)
    iou = ((drawn == 0) & (soil == 1)).sum() / ((drawn == 0) | (soil == 1)).sum()
    assert iou > 0.97
    box = drawn == 2
    assert box.sum() == pytest.approx(100 * 80, rel=0.03)
    assert "names:" in data_yaml.read_text() and "covered_soil" in data_yaml.read_text()


def test_categories_unknown_to_the_detector_are_named_in_the_error(tmp_path: Path) -> None:
    annotations, images, _ = _coco(tmp_path)
    document = json.loads(annotations.read_text())
    document["categories"] = [{"id": 1, "name": "dirt"}, {"id": 2, "name": "net"}]
    annotations.write_text(json.dumps(document))
    with pytest.raises(DustpatrolError, match="dirt, net"):
        import_coco(annotations, images, tmp_path / "out")


def test_a_file_that_is_not_coco_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"images": [{"id": "one"}], "annotations": [], "categories": []}))
    with pytest.raises(DustpatrolError, match=r"images\.0\.id"):
        import_coco(path, tmp_path, tmp_path / "out")


def test_a_missing_photo_is_named(tmp_path: Path) -> None:
    annotations, images, _ = _coco(tmp_path)
    (images / "c.jpg").unlink()
    with pytest.raises(DustpatrolError, match=r"c\.jpg"):
        import_coco(annotations, images, tmp_path / "out")
