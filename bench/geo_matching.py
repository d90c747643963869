"""Matching 1,000,000 detections against 100,000 and 1,000 sites: ours, a naive per-site loop
and a plain geopandas.sjoin, in the same run."""

from __future__ import annotations

import time

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS

from bench.results import BenchResult, measure
from geo.matching import SiteIndex, match_findings

UTM = CRS.from_epsg(32650)
E0, N0 = 400_000.0, 3_900_000.0
TARGET_LARGE_S = 2.0


def synthetic_sites(
    count: int, rng: np.random.Generator
) -> tuple[gpd.GeoDataFrame, NDArray[np.float64]]:
    """Sites on a 300 m grid, 80-200 m wide; returns the registry (EPSG:4326) and boxes."""
    side = int(np.ceil(np.sqrt(count)))
    i, j = np.divmod(np.arange(count), side)
    widths = rng.uniform(80, 200, count)
    heights = rng.uniform(80, 200, count)
    x0, y0 = E0 + i * 300.0, N0 + j * 300.0
    bounds = np.column_stack([x0, y0, x0 + widths, y0 + heights])
    geometries = shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])
    frame = gpd.GeoDataFrame(
        {"site_id": [f"S{k:06d}" for k in range(count)]},
        geometry=gpd.GeoSeries(geometries, crs=UTM),
    )
    return frame.to_crs(4326), bounds


def synthetic_detections(
    count: int, bounds: NDArray[np.float64], rng: np.random.Generator
) -> NDArray[np.object_]:
    """4-10 m boxes: 85 % inside a site, 10 % across an edge, 5 % off-site."""
    site = rng.integers(0, len(bounds), count)
    size = rng.uniform(4.0, 10.0, count)
    x0, y0, x1, y1 = bounds[site].T
    kind = rng.random(count)
    e = x0 + rng.random(count) * (x1 - x0 - size)
    n = y0 + rng.random(count) * (y1 - y0 - size)
    edge = (kind >= 0.85) & (kind < 0.95)
    e[edge] = x1[edge] - size[edge] / 2.0
    off = kind >= 0.95
    e[off] = x1[off] + 40.0
    return np.asarray(shapely.box(e, n, e + size, n + size), dtype=object)


def _naive_seconds(detections: NDArray[np.object_], sites: gpd.GeoDataFrame, sample: int) -> float:
    """Seconds for a per-site loop over every detection, measured on ``sample`` sites."""
    geometries = sites.to_crs(UTM).geometry.values[:sample]
    start = time.perf_counter()
    for geometry in geometries:
        shapely.intersects(geometry, detections)
    return (time.perf_counter() - start) * len(sites) / sample


def run(quick: bool = False) -> list[BenchResult]:
    rng = np.random.default_rng(2026)
    n_detections = 200_000 if quick else 1_000_000
    results = []
    for n_sites in (100_000, 1_000):
        sites, bounds = synthetic_sites(n_sites, rng)
        detections = synthetic_detections(n_detections, bounds, rng)
        label = f"{n_detections:,} detections x {n_sites:,} sites"

        def cold(_: int, d: NDArray[np.object_] = detections, s: gpd.GeoDataFrame = sites) -> None:
            match_findings(d, s, 2.0, UTM)

        index = SiteIndex.build(sites, UTM)

        def warm(_: int, d: NDArray[np.object_] = detections, i: SiteIndex = index) -> None:
            match_findings(d, i, 2.0, UTM)

        target = TARGET_LARGE_S if n_sites == 100_000 and not quick else None
        note = "largest overlap, clipping, 2 m tolerance"
        results.append(
            measure(
                "geo",
                f"match_findings {label}, registry",
                cold,
                3,
                note=f"{note}; index built in the call",
            )
        )
        results.append(
            measure(
                "geo",
                f"match_findings {label}, prepared index",
                warm,
                3,
                target_s=target,
                note=note,
            )
        )
        det_frame = gpd.GeoDataFrame(geometry=gpd.GeoSeries(detections, crs=UTM))
        site_frame = sites.to_crs(UTM)

        def sjoin(
            _: int, d: gpd.GeoDataFrame = det_frame, s: gpd.GeoDataFrame = site_frame
        ) -> None:
            gpd.sjoin(d, s, predicate="intersects", how="left")

        results.append(
            measure(
                "geo",
                f"geopandas.sjoin {label}",
                sjoin,
                1,
                warmup=0,
                note="intersects only: no overlap, clip or tolerance",
            )
        )
        seconds = _naive_seconds(detections, sites, sample=10)
        results.append(
            BenchResult(
                "geo",
                f"naive per-site loop {label}",
                "s",
                seconds,
                seconds,
                seconds,
                1,
                note="extrapolated from 10 sites",
            )
        )
    return results
