"""The blob-store port, on the local folder and on S3 (moto, or MinIO when MINIO_ENDPOINT is set)."""

from __future__ import annotations

import io
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from services.shared.blobstore import BlobNotFound
from services.shared.blobstore.local import LocalBlobStore
from services.shared.blobstore.minio import MinioBlobStore
from services.shared.errors import Unavailable
from services.shared.settings import load_settings

from . import infra


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    s3: infra.S3Server = request.getfixturevalue("s3_server")
    env = {"CONTENTOPS_DATA_DIR": str(tmp_path), **s3.env(f"blobs-{uuid.uuid4().hex[:10]}")}
    return MinioBlobStore.from_settings(load_settings(env))


def test_put_open_exists_delete(store) -> None:  # type: ignore[no-untyped-def]
    data = b"\xff\xd8\xff" + bytes(range(256)) * 1000
    store.put("originals/ab/abc", io.BytesIO(data), len(data), "image/jpeg")
    assert store.exists("originals/ab/abc")
    assert b"".join(store.open("originals/ab/abc", chunk_size=4096)) == data
    assert store.keys("originals/") == ["originals/ab/abc"]
    store.delete("originals/ab/abc")
    store.delete("originals/ab/abc")  # deleting twice is fine
    assert not store.exists("originals/ab/abc")
    with pytest.raises(BlobNotFound):
        store.open("originals/ab/abc")


class Failing(io.BytesIO):
    """A stream that breaks after the first read, like a client vanishing mid-upload."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise ConnectionResetError("client went away")
        return super().read(min(size or 1024, 1024) if size and size > 0 else 1024)


def test_a_failed_put_leaves_nothing(store) -> None:  # type: ignore[no-untyped-def]
    data = b"x" * 10_000
    with pytest.raises((ConnectionResetError, Unavailable)):
        store.put("originals/zz/partial", Failing(data), len(data), "image/jpeg")
    assert not store.exists("originals/zz/partial")
    assert store.keys() == []


def test_presigned_urls_work_without_credentials(store) -> None:  # type: ignore[no-untyped-def]
    store.put("k/v", io.BytesIO(b"hello"), 5, "text/plain")
    url = store.url("k/v", timedelta(minutes=5))
    if isinstance(store, LocalBlobStore):
        assert url == ""
        return
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"hello"


def test_unreachable_s3_is_unavailable(tmp_path: Path) -> None:
    env = {"CONTENTOPS_DATA_DIR": str(tmp_path), "MINIO_ENDPOINT": f"127.0.0.1:{infra.free_port()}",
           "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b"}
    down = MinioBlobStore.from_settings(load_settings(env))
    with pytest.raises(Unavailable):
        down.put("k", io.BytesIO(b"x"), 1, "text/plain")
    with pytest.raises(Unavailable):
        down.exists("k")


def test_keys_cannot_escape_the_local_folder(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    for key in ["../etc/passwd", "/abs", "a/../../b", ""]:
        with pytest.raises(ValueError):
            store.put(key, io.BytesIO(b"x"), 1, "text/plain")
