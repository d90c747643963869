"""``python -m bench [--quick]``: run every benchmark suite and report."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import (
    api_load,
    geo_matching,
    live_notices,
    missions_planning,
    pipeline,
    queue_scale,
    sim_render,
    vision_detect,
)
from bench.results import BenchResult, report

SUITES = {
    "api": api_load.run,
    "geo": geo_matching.run,
    "live": live_notices.run,
    "missions": missions_planning.run,
    "pipeline": pipeline.run,
    "queue": queue_scale.run,
    "sim": sim_render.run,
    "vision": vision_detect.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description="dustpatrol benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer runs per case")
    parser.add_argument("--suite", choices=sorted(SUITES), action="append", help="only these")
    parser.add_argument("--out", type=Path, default=Path("var/bench"), help="results folder")
    args = parser.parse_args()
    results: list[BenchResult] = []
    for name in args.suite or sorted(SUITES):
        results.extend(SUITES[name](quick=args.quick))
    path = report(results, args.out)
    print(f"written: {path} and {args.out / 'latest.md'}")


if __name__ == "__main__":
    main()
