"""Training data from simulated districts: rendered frames, cropped at the analysis ground
resolution, labelled from the per-pixel truth, degraded by domain randomisation.

Validation districts are never training districts: every ``val_every``-th seed goes to the
validation split whole. Everything is a pure function of the seeds, so a dataset can be
rebuilt exactly from the command in its ``dataset.json``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dustpatrol.errors import DustpatrolError
from sim.camera import PoseNoise, camera_preset
from sim.errors import SimError
from sim.kinds import GnssMode, GroundTruthClass, SurfaceKind
from sim.shots import pose_at, shoot
from sim.world import LAYER_SITE_BASE, District, Site, generate_district
from sim.world import parse_seeds as district_seeds
from vision.augment import WARMTH, randomise
from vision.labels import dataset_folders, mask_instances, write_data_yaml, yolo_label_lines

# Label class ids in the order of `GroundTruthClass` (background is not a class).
LABEL_CLASSES = (
    GroundTruthClass.EXPOSED_SOIL,
    GroundTruthClass.ROAD_DUST,
    GroundTruthClass.COVERED_SOIL,
)
CLASS_NAMES = tuple(cls.label for cls in LABEL_CLASSES)
MASK_TO_LABEL = {int(cls): index for index, cls in enumerate(LABEL_CLASSES)}
SKY = 255


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """What a simulated training set is made of."""

    seeds: tuple[int, ...]
    out: Path
    frames_per_district: int = 24
    crops_per_frame: int = 2
    imgsz: int = 384
    gsd_m: float = 0.1  # the analysis ground resolution; frames vary around it
    gsd_spread: float = 0.3  # +-30 %: the scale augmentation of the renders
    val_every: int = 7
    sites_per_district: int = 12
    district_extent_m: float = 3_000.0
    oblique_share: float = 0.25
    randomise: bool = True
    # How much likelier a compliant site is than a violating one as a frame's centre: above 1
    # the set holds more of the hard negatives of compliant sites (gravel, stained concrete,
    # rubble under no notice), which the end-to-end false alarms come from.
    compliant_weight: float = 1.0
    # How much likelier a site on open ground (graded earth or weeds, not gravel or paving:
    # an unkempt construction site at the earthworks stage, grown over, or on a former field)
    # is as a frame's centre: the look of the real reference photos, where the shipped model
    # leaves the pale haul roads across such ground unfound.
    open_ground_weight: float = 1.0
    # How far the randomisation's white balance strays along the warm-cool axis (the log of
    # the red and blue gains drawn within +-warmth; `vision.augment.WARMTH`).
    warmth: float = WARMTH

    def validate(self) -> None:
        if not self.seeds:
            raise DustpatrolError("no seeds given: pass a range such as --seeds 1-60")
        if any(seed < 0 for seed in self.seeds):
            raise DustpatrolError("seeds must be non-negative")
        if not 64 <= self.imgsz <= 2048 or self.imgsz % 32:
            raise DustpatrolError(
                f"image size must be a multiple of 32 in 64..2048, got {self.imgsz}"
            )
        if not 0.01 <= self.gsd_m <= 0.5:
            raise DustpatrolError(f"ground resolution {self.gsd_m} m/px is outside 0.01..0.5")
        if self.frames_per_district < 1 or self.crops_per_frame < 1:
            raise DustpatrolError("frames per district and crops per frame must be at least 1")
        for what, weight in (
            ("compliant-site", self.compliant_weight),
            ("open-ground site", self.open_ground_weight),
        ):
            if not 0.1 <= weight <= 10.0:
                raise DustpatrolError(
                    f"{what} weight {weight} is outside 0.1..10 (1 picks every site alike)"
                )
        if not 0.0 <= self.warmth <= 0.3:
            raise DustpatrolError(
                f"white-balance warmth {self.warmth} is outside 0..0.3 (0.12: red over blue "
                "0.79-1.27; 0: no cast along the warm-cool axis)"
            )

    def split_of(self, seed: int) -> str:
        return "val" if seed % self.val_every == 0 else "train"


@dataclass(slots=True)
class DistrictResult:
    seed: int
    split: str
    images: int = 0
    instances: Counter[str] = field(default_factory=Counter)
    pixels: Counter[str] = field(default_factory=Counter)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1-60"``, ``"3,5,9"`` or a mix (``"1-10,20"``) as a tuple of seeds
    (`sim.world.parse_seeds`, its errors as ours)."""
    try:
        return district_seeds(text)
    except SimError as error:
        raise DustpatrolError(str(error)) from None


def open_ground_sites(district: District) -> frozenset[str]:
    """The sites whose base is open ground (bare earth or weeds) rather than gravel or paving."""
    return frozenset(
        surface.site_id
        for surface in district.fixed_surfaces
        if surface.layer == LAYER_SITE_BASE
        and surface.site_id is not None
        and surface.kind in (SurfaceKind.BARE_SOIL, SurfaceKind.GROUND)
    )


def pick_site(
    sites: Sequence[Site],
    rng: np.random.Generator,
    compliant_weight: float,
    open_ground: frozenset[str] = frozenset(),
    open_ground_weight: float = 1.0,
) -> Site:
    """A site to centre a frame on; compliant ones ``compliant_weight`` times as likely, those
    in ``open_ground`` ``open_ground_weight`` times (the two multiply). With both weights 1 it
    draws exactly as sets rendered before the weights existed did."""
    if compliant_weight == 1.0 and open_ground_weight == 1.0:
        return sites[int(rng.integers(len(sites)))]
    weights = np.array(
        [
            (compliant_weight if site.compliant else 1.0)
            * (open_ground_weight if site.site_id in open_ground else 1.0)
            for site in sites
        ]
    )
    return sites[int(rng.choice(len(sites), p=weights / weights.sum()))]


def _frame_pose(
    district: District, rng: np.random.Generator, spec: DatasetSpec, open_ground: frozenset[str]
) -> tuple[float, float, float, float, float]:
    """(east, north, altitude, yaw, pitch) of one training frame."""
    if rng.random() < 0.8:
        site = pick_site(
            district.sites, rng, spec.compliant_weight, open_ground, spec.open_ground_weight
        )
        centre = site.geometry.centroid
        east = centre.x + rng.normal(0.0, 40.0)
        north = centre.y + rng.normal(0.0, 40.0)
    else:  # countryside, villages and their look-alikes
        min_e, min_n, max_e, max_n = district.bounds
        east = rng.uniform(min_e + 200, max_e - 200)
        north = rng.uniform(min_n + 200, max_n - 200)
    altitude = float(rng.uniform(60.0, 120.0))
    yaw = float(rng.uniform(0.0, 360.0))
    if rng.random() < spec.oblique_share:
        pitch = float(rng.uniform(-75.0, -40.0))
        back = altitude / math.tan(math.radians(-pitch)) * 0.8
        east -= back * math.sin(math.radians(yaw))
        north -= back * math.cos(math.radians(yaw))
    else:
        pitch = float(np.clip(rng.normal(-90.0, 1.5), -90.0, -85.0))
    return float(east), float(north), altitude, yaw, pitch


def _crop_origins(
    mask: np.ndarray, size: int, count: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Top-left corners of ``count`` crops: half centred on labelled pixels (rarer classes
    first), the rest anywhere; crops that are mostly sky are skipped."""
    height, width = mask.shape
    origins: list[tuple[int, int]] = []
    # Where each class is, on a 4x coarser grid: found once per frame, not per crop.
    # Road dust is rare and thin: aim at it first when the frame has any.
    coarse = mask[::4, ::4]
    located = [
        np.nonzero(coarse == int(cls))
        for cls in (
            GroundTruthClass.ROAD_DUST,
            GroundTruthClass.EXPOSED_SOIL,
            GroundTruthClass.COVERED_SOIL,
        )
    ]
    for index in range(count * 3):
        if len(origins) >= count:
            break
        labelled = index % 2 == 0
        if labelled:
            for ys, xs in located:
                if len(xs) and rng.random() < 0.7:
                    pick = int(rng.integers(len(xs)))
                    cx, cy = int(xs[pick]) * 4, int(ys[pick]) * 4
                    break
            else:
                cx, cy = int(rng.integers(width)), int(rng.integers(height))
        else:
            cx, cy = int(rng.integers(width)), int(rng.integers(height))
        x0 = int(np.clip(cx - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, width - size))
        y0 = int(
            np.clip(cy - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, height - size)
        )
        window = mask[y0 : y0 + size, x0 : x0 + size]
        if (window == SKY).mean() > 0.5:
            continue
        origins.append((x0, y0))
    return origins


def render_district(seed: int, spec: DatasetSpec) -> DistrictResult:
    """Render, crop, label and write the training images of one district."""
    district = generate_district(
        seed, n_sites=spec.sites_per_district, extent_m=spec.district_extent_m
    )
    split = spec.split_of(seed)
    folders = dataset_folders(spec.out)
    result = DistrictResult(seed, split)
    rng = np.random.default_rng([seed, 0xDA7A])
    base = camera_preset("m3e")
    open_ground = open_ground_sites(district) if spec.open_ground_weight != 1.0 else frozenset()
    for frame in range(spec.frames_per_district):
        east, north, altitude, yaw, pitch = _frame_pose(district, rng, spec, open_ground)
        gsd = spec.gsd_m * float(rng.uniform(1.0 - spec.gsd_spread, 1.0 + spec.gsd_spread))
        scale = float(np.clip(base.gsd_m(altitude) / gsd, 0.05, 1.0))
        camera = camera_preset("m3e", scale)
        if min(camera.width_px, camera.height_px) < spec.imgsz:
            continue
        shot = shoot(
            district,
            pose_at(district, east, north, altitude, gimbal_yaw_deg=yaw, gimbal_pitch_deg=pitch),
            camera,
            PoseNoise(GnssMode.PERFECT),
            seed=int(rng.integers(0, 2**31)),
        )
        decoded = cv2.imdecode(np.frombuffer(shot.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise DustpatrolError(f"district {seed}: a rendered frame did not decode")
        image = np.asarray(decoded, dtype=np.uint8)
        for crop, (x0, y0) in enumerate(
            _crop_origins(shot.class_mask, spec.imgsz, spec.crops_per_frame, rng)
        ):
            window = np.ascontiguousarray(
                shot.class_mask[y0 : y0 + spec.imgsz, x0 : x0 + spec.imgsz]
            )
            pixels = np.ascontiguousarray(image[y0 : y0 + spec.imgsz, x0 : x0 + spec.imgsz])
            if spec.randomise:
                pixels = randomise(pixels, rng, warmth=spec.warmth)
            instances = mask_instances(window, MASK_TO_LABEL)
            name = f"d{seed:05d}_f{frame:03d}_c{crop}"
            image_path = folders[("images", split)] / f"{name}.jpg"
            if not cv2.imwrite(str(image_path), pixels, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise DustpatrolError(f"could not write {image_path}")
            lines = yolo_label_lines(instances, spec.imgsz, spec.imgsz)
            label_path = folders[("labels", split)] / f"{name}.txt"
            label_path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
            result.images += 1
            for instance in instances:
                result.instances[CLASS_NAMES[instance.class_id]] += 1
            for value, index in MASK_TO_LABEL.items():
                result.pixels[CLASS_NAMES[index]] += int((window == value).sum())
    return result


def _render_task(args: tuple[int, DatasetSpec]) -> DistrictResult:
    seed, spec = args
    return render_district(seed, spec)


def build_dataset(
    spec: DatasetSpec,
    *,
    workers: int = 2,
    command: Sequence[str] = (),
    on_district: Callable[[DistrictResult], object] = lambda result: None,
) -> Path:
    """Write a YOLO-seg dataset for ``spec`` and return its ``data.yaml``."""
    spec.validate()
    if not any(spec.split_of(seed) == "val" for seed in spec.seeds):
        raise DustpatrolError(
            f"no validation district among the seeds: every {spec.val_every}th seed is one; "
            f"give a range that includes a multiple of {spec.val_every}"
        )
    if not any(spec.split_of(seed) == "train" for seed in spec.seeds):
        raise DustpatrolError("every seed given is a validation district: give more seeds")
    spec.out.mkdir(parents=True, exist_ok=True)
    dataset_folders(spec.out)
    results: list[DistrictResult] = []
    tasks = [(seed, spec) for seed in spec.seeds]
    if workers > 1 and len(tasks) > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers) as pool:
            for result in pool.imap_unordered(_render_task, tasks):
                results.append(result)
                on_district(result)
    else:
        for task in tasks:
            result = _render_task(task)
            results.append(result)
            on_district(result)
    data_yaml = write_data_yaml(spec.out, CLASS_NAMES)
    summary: dict[str, object] = {
        "command": list(command),
        "spec": {**asdict(spec), "out": str(spec.out), "seeds": list(spec.seeds)},
        "classes": list(CLASS_NAMES),
        "splits": {},
    }
    for split in ("train", "val"):
        chosen = [r for r in results if r.split == split]
        instances: Counter[str] = Counter()
        pixels: Counter[str] = Counter()
        for r in chosen:
            instances.update(r.instances)
            pixels.update(r.pixels)
        summary["splits"][split] = {  # type: ignore[index]
            "districts": sorted(r.seed for r in chosen),
            "images": sum(r.images for r in chosen),
            "instances": dict(instances),
            "pixels": dict(pixels),
        }
    (spec.out / "dataset.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return data_yaml
