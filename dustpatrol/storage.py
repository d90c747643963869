"""Where the service keeps its files: one interface, local folders or S3-compatible storage.

Everything stored is addressed by a key such as ``frames/ab/<sha256>.jpg``: frames and
rectification photos by their content hash (so a second upload of the same bytes writes
nothing), evidence crops and map overlays by the hash of what they were made from. A write is
whole or absent: locally a temporary file renamed into place, in S3 a single PUT (an object
appears only once complete). The first part of the key names the kind of file (``frames``,
``photos``, ``crops``, ``overlays``).

The local store keeps today's layout: frames under ``paths.frames_dir``, the rest under
``paths.data_dir``. ``storage.url = "s3://bucket/prefix"`` (with ``endpoint_url`` and
credentials) puts all of it in one bucket, so API processes and workers on several machines
share it. Readers that need a file (image decoders) get a local path: the file itself, or a
temporary download of the object.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dustpatrol.errors import DustpatrolError
from dustpatrol.settings import Settings

KINDS = ("frames", "photos", "crops", "overlays")


class StorageError(DustpatrolError):
    """The store cannot be reached or refused an operation."""


class MissingObjectError(StorageError):
    """Nothing is stored under the key."""


def content_key(kind: str, sha256: str, suffix: str = ".jpg") -> str:
    """The key of content-addressed ``kind`` with hash ``sha256``: ``kind/ab/<hash><suffix>``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of stored file {kind!r}")
    return f"{kind}/{sha256[:2]}/{sha256}{suffix}"


class Storage(ABC):
    """A store of whole files under keys (see the module docstring)."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, whole or not at all (replacing what was there)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes under ``key``; `MissingObjectError` if there are none."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def local_path(self, key: str) -> Path | None:
        """The file holding ``key`` when the store is a local folder, else None."""

    @abstractmethod
    def describe(self) -> str:
        """Where the files go, for logs and `dustpatrol doctor` (no secrets)."""

    def put_once(self, key: str, data: bytes) -> None:
        """Store content-addressed ``data`` unless it is there already."""
        if not self.exists(key):
            self.put(key, data)

    @contextlib.contextmanager
    def as_file(self, key: str) -> Iterator[Path]:
        """A local file with the bytes of ``key`` for as long as the block runs."""
        path = self.local_path(key)
        if path is not None:
            if not path.is_file():
                raise MissingObjectError(f"nothing is stored under {key} ({path})")
            yield path
            return
        data = self.get(key)
        with tempfile.TemporaryDirectory(prefix="dustpatrol-") as folder:
            copy = Path(folder) / Path(key).name
            copy.write_bytes(data)
            yield copy

    def check(self) -> None:
        """Write, read back and remove a probe; `StorageError` saying what failed."""
        key = f"crops/probe/{uuid.uuid4().hex}.txt"
        self.put(key, b"dustpatrol")
        if self.get(key) != b"dustpatrol":
            raise StorageError(f"{self.describe()}: a probe read back different bytes")
        self.delete(key)

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if it is there."""


class LocalStorage(Storage):
    """Files in local folders: ``frames`` under ``frames_dir``, other kinds under
    ``data_dir/<kind>``."""

    def __init__(self, data_dir: Path, frames_dir: Path) -> None:
        self.roots = {kind: data_dir / kind for kind in KINDS} | {"frames": frames_dir}

    def _path(self, key: str) -> Path:
        kind, _, rest = key.partition("/")
        if kind not in self.roots or not rest or ".." in Path(rest).parts:
            raise StorageError(f"{key!r} is not a key of this store")
        return self.roots[kind] / rest

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")
        temporary.write_bytes(data)
        temporary.replace(path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise MissingObjectError(f"nothing is stored under {key}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def describe(self) -> str:
        return f"local folders {self.roots['frames']} (frames) and {self.roots['photos'].parent}"


class S3Storage(Storage):
    """Objects in one bucket of S3-compatible storage (AWS S3, SeaweedFS, MinIO, Ceph)."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise StorageError("S3 storage needs boto3: pip install 'dustpatrol[scale]'") from None
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url, self.endpoint_url = url, endpoint_url
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                s3={"addressing_style": "path"},
            ),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, action: str, key: str, **arguments: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, action)(Bucket=self.bucket, Key=self._key(key), **arguments)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise MissingObjectError(f"nothing is stored under {key} in {self.url}") from None
            credentials = code in ("InvalidAccessKeyId", "AccessDenied") or "Signature" in code
            hint = ": check storage.access_key_id and secret_access_key" if credentials else ""
            message = exc.response.get("Error", {}).get("Message", "")
            raise StorageError(
                f"{self.describe()} refused {action} of {key}: {code} {message}{hint}"
            ) from None
        except BotoCoreError as exc:
            raise StorageError(f"{self.describe()} cannot be reached: {exc}") from None

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", key, Body=data)

    def get(self, key: str) -> bytes:
        body = self._call("get_object", key)["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key)
        except MissingObjectError:
            return False
        return True

    def local_path(self, key: str) -> Path | None:
        return None

    def delete(self, key: str) -> None:
        self._call("delete_object", key)

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"object storage {self.url}{where}"


_stores: dict[tuple[Any, ...], Storage] = {}


def open_storage(settings: Settings) -> Storage:
    """The store the settings name (one per process and settings: S3 clients are reused)."""
    config = settings.storage
    secret = config.secret_access_key.get_secret_value() if config.secret_access_key else None
    key = (config.url, config.endpoint_url, config.region, config.access_key_id, secret,
           settings.paths.data_dir, settings.paths.frames_dir)  # fmt: skip
    if key not in _stores:
        if not config.url:
            _stores[key] = LocalStorage(settings.paths.data_dir, settings.paths.frames_dir)
        else:
            _stores[key] = S3Storage(
                config.url,
                endpoint_url=config.endpoint_url,
                region=config.region,
                access_key_id=config.access_key_id,
                secret_access_key=secret,
            )
    return _stores[key]
