"""Scaled out: the service's frame jobs on Celery workers over a real redis-server.

- frames/s of the service's pipeline (metadata + detection jobs) on the same uploaded frames
  with 1 and with 2 worker processes, and the ratio (2 cores: the ceiling is about 2);
- queue latency under a burst of 1,000 uploaded frames (small ones): frame uploaded (its job
  made) -> its job started on a worker, p50 / p99 / max, with 2 workers.

Everything runs as processes on 127.0.0.1 (`dustpatrol serve`, `dustpatrol worker`,
redis-server) against one SQLite database and local files, and is stopped at the end.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from sqlalchemy import create_engine, func, select

from api.models.flights import Job
from bench.results import BenchResult
from sim.camera import PoseNoise, camera_preset
from sim.export import write_district
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot
from sim.world import District, Site, generate_district

PASSWORD = "bench-password-123"
REPO = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Service:
    """redis-server, `dustpatrol serve` in queue mode and any number of workers."""

    def __init__(
        self, folder: Path, queue: bool = True, extra: dict[str, str] | None = None
    ) -> None:
        self.folder = folder
        self.database = f"sqlite:///{folder / 'dustpatrol.db'}"
        self.port = _free_port()
        redis_port = _free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        if queue:
            binary = shutil.which("redis-server") or "/usr/bin/redis-server"
            self._spawn(
                "redis",
                [binary, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                 "--appendonly", "no", "--dir", str(folder)],
            )  # fmt: skip
        self.environment = {
            **os.environ,
            "DUSTPATROL_DATABASE__URL": self.database,
            "DUSTPATROL_PATHS__DATA_DIR": str(folder / "var"),
            "DUSTPATROL_PATHS__FRAMES_DIR": str(folder / "var" / "frames"),
            "DUSTPATROL_SERVER__ADMIN_PASSWORD": PASSWORD,
            "DUSTPATROL_SERVER__ACCESS_LOG": "false",
            "DUSTPATROL_LOG__LEVEL": "WARNING",
            **(extra or {}),
        }
        if queue:  # else the service runs its jobs itself (the embedded default)
            self.environment["DUSTPATROL_QUEUE__URL"] = f"redis://127.0.0.1:{redis_port}/0"
        self._spawn("api", self._dustpatrol("serve", "--port", str(self.port)))
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((folder / "api.log").read_text()[-3000:])
            time.sleep(0.3)
        self.client = httpx.Client(base_url=self.base, timeout=60)
        token = self.client.post("/auth/token", data={"username": "admin", "password": PASSWORD})
        self.client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        self.engine = create_engine(self.database)

    def _dustpatrol(self, *arguments: str) -> list[str]:
        return [sys.executable, "-m", "dustpatrol", *arguments]

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.folder / f"{name}.log").open("ab")
        self.processes.append(
            subprocess.Popen(
                command,
                env=getattr(self, "environment", None),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def worker(self, number: int, threads: int) -> None:
        """A worker of the frames queue whose detector runs ``threads`` ONNX threads."""
        self.environment["DUSTPATROL_DETECTION__THREADS"] = str(threads)
        self._spawn(f"worker-{number}", self._dustpatrol("worker", "--queues", "frames"))

    def import_sites(self, world: Path) -> None:
        with (world / "sites.geojson").open("rb") as file:
            answer = self.client.post("/sites/import", files={"file": ("sites.geojson", file)})
        answer.raise_for_status()

    def send_frame(self, flight: int, name: str, data: bytes) -> None:
        answer = self.client.post(
            f"/flights/{flight}/frames", files={"file": (name, io.BytesIO(data), "image/jpeg")}
        )
        answer.raise_for_status()

    def upload(self, frames: list[tuple[str, bytes]], clients: int = 4) -> int:
        flight = int(self.client.post("/flights", json={"name": "bench"}).json()["id"])
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda item: self.send_frame(flight, *item), frames))
        return flight

    def jobs(self, kind: str) -> list[Any]:
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(Job.state, Job.created_at, Job.started_at, Job.finished_at).where(
                        Job.kind == kind
                    )
                )
            )

    def wait_done(self, kind: str, count: int, timeout_s: float) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            with self.engine.connect() as connection:
                done = connection.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.kind == kind, Job.state.in_(("done", "failed")))
                )
            if (done or 0) >= count:
                return self.jobs(kind)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{done}/{count} {kind} jobs done in {timeout_s:.0f} s")
            time.sleep(0.2)

    def __enter__(self) -> _Service:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.client.close()
        self.engine.dispose()
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _shots(
    district: District, count: int, scale: float, around: Site | None = None
) -> list[tuple[str, bytes]]:
    """``count`` frames at ``scale`` of 20 MP over the district's sites in turn (or all over
    ``around``), each 3 m further east than the one before."""
    sites = [around] if around is not None else district.sites
    frames = []
    for number in range(count):
        centre = sites[number % len(sites)].geometry.centroid
        shot = shoot(
            district,
            pose_at(district, centre.x + 3.0 * number, centre.y, 100.0),
            camera_preset("m3e", scale),
            PoseNoise(GnssMode.RTK_FIXED),
            seed=number,
        )
        frames.append((f"DJI_{number:04d}.JPG", shot.jpeg))
    return frames


def _variants(jpeg: bytes, count: int) -> list[tuple[str, bytes]]:
    """``count`` distinct files of one frame (a JPEG comment differs), EXIF and XMP kept."""
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()
        exif, xmp = image.info["exif"], image.info["xmp"]
        pixels = image.copy()
    frames = []
    for number in range(count):
        data = io.BytesIO()
        pixels.save(data, "JPEG", quality=90, exif=exif, xmp=xmp, comment=f"burst {number}")
        frames.append((f"DJI_{number:04d}.JPG", data.getvalue()))
    return frames


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later.replace(tzinfo=None) - earlier.replace(tzinfo=None)).total_seconds()


def _throughput(world: Path, frames: list[tuple[str, bytes]], workers: int) -> float:
    """Frames/s from the first job started to the last detection finished."""
    with (
        tempfile.TemporaryDirectory(prefix="dp-queue-") as folder,
        _Service(Path(folder)) as service,
    ):
        service.import_sites(world)
        service.upload(frames)
        for number in range(workers):
            service.worker(number, threads=max(1, CORES // workers))
        detected = service.wait_done("frame_detect", len(frames), 1800)
        read = service.jobs("frame_metadata")
    first = min(job.started_at for job in read)
    last = max(job.finished_at for job in detected)
    return len(frames) / _seconds(last, first)


def _burst(world: Path, frames: list[tuple[str, bytes]]) -> list[float]:
    """Upload -> job started, in seconds, for every frame of a burst, 2 workers running."""
    with (
        tempfile.TemporaryDirectory(prefix="dp-queue-") as folder,
        _Service(Path(folder)) as service,
    ):
        service.import_sites(world)
        for number in range(2):
            service.worker(number, threads=max(1, CORES // 2))
        time.sleep(8)  # the workers are up and have loaded the model before the burst
        service.upload(frames)
        jobs = service.wait_done("frame_metadata", len(frames), 1800)
    return sorted(_seconds(job.started_at, job.created_at) for job in jobs)


def run(quick: bool = False) -> list[BenchResult]:
    district = generate_district(3, n_sites=10, extent_m=2000.0)
    results = []
    with tempfile.TemporaryDirectory(prefix="dp-queue-world-") as folder:
        world = Path(folder)
        write_district(district, world)
        count = 8 if quick else 24
        frames = _shots(district, count, 0.5)
        rates = {workers: _throughput(world, frames, workers) for workers in (1, 2)}
        for workers, rate in rates.items():
            results.append(
                BenchResult(
                    suite="queue",
                    case=f"service pipeline, {workers} worker process(es), 5 MP frames",
                    unit="frames/s",
                    median=rate,
                    minimum=rate,
                    maximum=rate,
                    runs=1,
                    note=f"{count} frames: metadata + detection jobs, first start to last end",
                )
            )
        ratio = rates[2] / rates[1]
        results.append(
            BenchResult(
                suite="queue",
                case="2 workers / 1 worker",
                unit="x",
                median=ratio,
                minimum=ratio,
                maximum=ratio,
                runs=1,
                note=f"{CORES} cores; each worker's detector runs cores / workers ONNX threads",
            )
        )
        burst = _burst(world, _variants(_shots(district, 1, 0.1)[0][1], 200 if quick else 1000))
    p99 = burst[min(len(burst) - 1, round(0.99 * (len(burst) - 1)))]
    results.append(
        BenchResult(
            suite="queue",
            case=f"queue latency, burst of {len(burst)} frames, 2 workers",
            unit="s",
            median=statistics.median(burst),
            minimum=burst[0],
            maximum=burst[-1],
            runs=len(burst),
            note=f"upload -> metadata job started; p99 {p99:.2f} s",
        )
    )
    return results
