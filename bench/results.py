"""A benchmark result row and the table/file writers."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True, slots=True)
class BenchResult:
    suite: str
    case: str
    unit: str
    median: float
    minimum: float
    maximum: float
    runs: int
    target: str = ""
    meets_target: bool | None = None
    note: str = ""


def measure(
    suite: str,
    case: str,
    action: Callable[[int], object],
    runs: int,
    *,
    warmup: int = 1,
    target_s: float | None = None,
    note: str = "",
) -> BenchResult:
    """Time ``action(i)`` for i in range(runs) after ``warmup`` untimed calls; seconds."""
    for i in range(warmup):
        action(runs + i)
    seconds = []
    for i in range(runs):
        start = time.perf_counter()
        action(i)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return BenchResult(
        suite=suite,
        case=case,
        unit="s",
        median=median,
        minimum=min(seconds),
        maximum=max(seconds),
        runs=runs,
        target=f"< {target_s:g} s" if target_s is not None else "",
        meets_target=None if target_s is None else median < target_s,
        note=note,
    )


def report(results: Sequence[BenchResult], folder: Path) -> Path:
    """Print the table and write ``results-<time>.json`` and ``latest.md``; return the json."""
    table = Table(title="dustpatrol benchmarks")
    for column in ("suite", "case", "median", "min", "max", "runs", "target", "met", "note"):
        table.add_column(column)
    lines = [
        "| suite | case | median | min | max | runs | target | met | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        met = "" if r.meets_target is None else ("yes" if r.meets_target else "NO")
        cells = [
            r.suite,
            r.case,
            f"{r.median:.3f} {r.unit}",
            f"{r.minimum:.3f}",
            f"{r.maximum:.3f}",
            str(r.runs),
            r.target,
            met,
            r.note,
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    Console(width=160).print(table)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    machine = (
        f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}"
    )
    path = folder / f"results-{stamp}.json"
    path.write_text(
        json.dumps(
            {"time_utc": stamp, "machine": machine, "results": [asdict(r) for r in results]},
            indent=2,
        ),
        encoding="utf-8",
    )
    header = f"# dustpatrol benchmarks\n\n{stamp}, {machine}\n\n"
    (folder / "latest.md").write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    return path
