"""Planning time for 50 and 500 sites with 8 drones, and the route quality of the default
5 s budget against a long (60 s) search on the same input: the ratio of total flight time
(target: at most 1.05 for 500 sites within 5 s)."""

from __future__ import annotations

import time

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS

from bench.results import BenchResult
from geo.crs import WGS84, transformer
from missions.model import DroneProfile, LaunchPoint
from missions.planner import plan_patrol

UTM = CRS.from_epsg(32650)
E0, N0 = 420_000.0, 4_030_000.0


def _sites(count: int, rng: np.random.Generator) -> gpd.GeoDataFrame:
    extent = 1000.0 * np.sqrt(count)
    x = rng.uniform(0, extent, count)
    y = rng.uniform(0, extent, count)
    w = rng.uniform(40, 250, count)
    h = rng.uniform(40, 200, count)
    boxes = shapely.box(E0 + x, N0 + y, E0 + x + w, N0 + y + h)
    frame = gpd.GeoDataFrame(
        {"site_id": [f"S{i:04d}" for i in range(count)]}, geometry=gpd.GeoSeries(boxes, crs=UTM)
    )
    return frame.to_crs(4326)


def _launches(count: int, extent: float) -> list[LaunchPoint]:
    to_wgs84 = transformer(UTM, WGS84)
    points = []
    for i in range(count):
        lon, lat = to_wgs84.transform(
            E0 + extent * (0.25 + 0.5 * (i % 2)), N0 + extent * (0.25 + 0.5 * (i // 2))
        )
        points.append(LaunchPoint(float(lat), float(lon)))
    return points


def run(quick: bool = False) -> list[BenchResult]:
    rng = np.random.default_rng(7)
    fleet = [DroneProfile()] * 8
    results = []
    for count in (50, 500):
        sites = _sites(count, rng)
        launches = _launches(4, 1000.0 * np.sqrt(count))
        timings = {}
        for budget in (5.0, 10.0 if quick else 60.0):
            start = time.perf_counter()
            plan = plan_patrol(sites, launches, fleet, solver_time_s=budget)
            timings[budget] = (time.perf_counter() - start, plan)
        (short_s, short_plan), (long_s, long_plan) = timings.values()
        ratio = short_plan.total_duration_s / long_plan.total_duration_s
        hours = short_plan.total_duration_s / 3600
        long_hours = long_plan.total_duration_s / 3600
        note = (
            f"{len(short_plan.sorties)} sorties, {hours:.2f} h flight; "
            f"{max(timings):g} s search: {long_hours:.2f} h; ratio {ratio:.3f} (target <= 1.05); "
            f"dropped {len(short_plan.dropped)}/{len(long_plan.dropped)}"
        )
        results.append(
            BenchResult(
                "missions",
                f"plan {count} sites, 8 drones (5 s budget)",
                "s",
                short_s,
                short_s,
                short_s,
                1,
                note=note,
            )
        )
        results.append(
            BenchResult(
                "missions",
                f"flight time {count} sites: 5 s plan / {max(timings):g} s plan",
                "ratio",
                ratio,
                ratio,
                ratio,
                1,
                target="<= 1.05 in <= 5 s" if count == 500 else "",
                meets_target=(ratio <= 1.05 and short_s <= 5.0) if count == 500 else None,
            )
        )
        results.append(
            BenchResult(
                "missions",
                f"plan {count} sites, 8 drones ({max(timings):g} s budget)",
                "s",
                long_s,
                long_s,
                long_s,
                1,
            )
        )
    return results
