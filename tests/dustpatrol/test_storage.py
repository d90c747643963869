"""The storage interface on local folders and on a real S3-compatible server (SeaweedFS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from dustpatrol.doctor import CheckStatus, check_storage
from dustpatrol.settings import Settings, StorageSettings
from dustpatrol.storage import (
    LocalStorage,
    MissingObjectError,
    S3Storage,
    Storage,
    StorageError,
    content_key,
    open_storage,
)
from tests.conftest import S3Server


def s3_settings(server: S3Server, prefix: str, secret: str | None = None) -> StorageSettings:
    return StorageSettings(
        url=f"s3://{server.bucket}/{prefix}",
        endpoint_url=server.endpoint_url,
        access_key_id=server.access_key_id,
        secret_access_key=SecretStr(secret or server.secret_access_key),
    )


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "var", tmp_path / "frames")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    settings = Settings(storage=s3_settings(server, server.new_prefix()))
    yield open_storage(settings)


def test_whole_files_under_keys(storage: Storage) -> None:
    key = content_key("frames", "ab" + "0" * 62)
    assert key == f"frames/ab/ab{'0' * 62}.jpg"
    assert not storage.exists(key)
    with pytest.raises(MissingObjectError, match="nothing is stored under frames/ab"):
        storage.get(key)
    storage.put(key, b"\xff\xd8 first")
    assert storage.exists(key) and storage.get(key) == b"\xff\xd8 first"
    storage.put_once(key, b"other bytes")  # content-addressed: never rewritten
    assert storage.get(key) == b"\xff\xd8 first"
    with storage.as_file(key) as path:
        assert path.read_bytes() == b"\xff\xd8 first"
        assert path.name.endswith(".jpg")  # decoders look at the suffix
    storage.put(key, b"replaced")
    assert storage.get(key) == b"replaced"
    storage.delete(key)
    storage.delete(key)  # gone already: no error
    assert not storage.exists(key)
    with pytest.raises(MissingObjectError), storage.as_file(key):
        pass
    storage.check()


def test_local_layout_is_kept_and_keys_cannot_escape(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "var", tmp_path / "frames")
    storage.put("frames/ab/x.jpg", b"1")
    storage.put("photos/cd/y.jpg", b"2")
    assert (tmp_path / "frames" / "ab" / "x.jpg").read_bytes() == b"1"
    assert (tmp_path / "var" / "photos" / "cd" / "y.jpg").read_bytes() == b"2"
    assert not list(tmp_path.rglob("*.part"))  # no temporary file left behind
    for bad in ("frames/../../etc/passwd", "secrets/x", "frames"):
        with pytest.raises(StorageError, match="not a key of this store"):
            storage.get(bad)


def test_two_prefixes_in_one_bucket_do_not_see_each_other(s3_server: S3Server) -> None:
    first = open_storage(Settings(storage=s3_settings(s3_server, s3_server.new_prefix())))
    second = open_storage(Settings(storage=s3_settings(s3_server, s3_server.new_prefix())))
    first.put("crops/aa/one.jpg", b"a")
    assert first.exists("crops/aa/one.jpg") and not second.exists("crops/aa/one.jpg")


def test_refusals_say_what_to_fix(s3_server: S3Server) -> None:
    wrong = S3Storage(
        f"s3://{s3_server.bucket}",
        endpoint_url=s3_server.endpoint_url,
        access_key_id=s3_server.access_key_id,
        secret_access_key="not-the-secret",
    )
    with pytest.raises(StorageError, match=r"check storage\.access_key_id and secret_access_key"):
        wrong.put("frames/aa/x.jpg", b"x")
    closed = S3Storage(
        "s3://nowhere",
        endpoint_url="http://127.0.0.1:9",  # nothing listens on the discard port
        access_key_id="k",
        secret_access_key="s",
    )
    with pytest.raises(StorageError, match="cannot be reached"):
        closed.get("frames/aa/x.jpg")
    refused = check_storage(
        Settings(storage=s3_settings(s3_server, s3_server.new_prefix(), secret="wrong"))
    )
    assert refused.status is CheckStatus.FAIL and "credentials" in refused.fix
    healthy = check_storage(Settings(storage=s3_settings(s3_server, s3_server.new_prefix())))
    assert healthy.status is CheckStatus.OK and "write, read, delete" in healthy.detail
    local = check_storage(Settings())
    assert local.status is CheckStatus.OK and "local folders" in local.detail


def test_storage_urls_are_checked() -> None:
    assert StorageSettings(url="s3://frames-bucket/county/").url == "s3://frames-bucket/county"
    for bad in ("s3://", "s3://UPPER/x", "ftp://bucket", "frames-bucket", "s3://a"):
        with pytest.raises(ValueError, match="is not a storage URL"):
            StorageSettings(url=bad)
