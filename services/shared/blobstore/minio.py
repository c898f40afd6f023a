"""MinIO/S3 blob store through the ``minio`` client.

- A single PUT with an explicit length: S3 makes it atomic, so a failed upload
  leaves no object (our blobs are at most tens of MiB, far below 5 GiB).
- ``make_bucket`` treats "already owned by you" as success (check-then-create races).
- ``region`` is always passed so presigning never calls the network, and URLs
  are presigned by a second client built on the public endpoint, because the
  host is part of the signature.
- Connection failures become ``Unavailable`` quickly: the HTTP client retries
  twice with short timeouts instead of urllib3's long defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import BinaryIO

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from ..errors import Unavailable
from ..settings import Settings
from . import BlobNotFound

_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound"}


def _http_client() -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=2.0, read=30.0),
        maxsize=32,
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class MinioBlobStore:
    def __init__(self, client: Minio, bucket: str, public_client: Minio | None = None) -> None:
        self.client = client
        self.public_client = public_client or client
        self.bucket = bucket
        self._bucket_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "MinioBlobStore":
        def build(endpoint: str) -> Minio:
            return Minio(
                endpoint,
                access_key=settings.minio_access_key,
                secret_key=settings.minio_secret_key,
                secure=settings.minio_secure,
                region=settings.minio_region,
                http_client=_http_client(),
            )

        public = build(settings.minio_public_endpoint) if settings.minio_public_endpoint else None
        return cls(build(settings.minio_endpoint), settings.minio_bucket, public)

    def ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            self.client.make_bucket(bucket_name=self.bucket)
        except S3Error as err:
            if err.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise Unavailable(f"blob store refused bucket {self.bucket}: {err.code}") from err
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as err:
            raise Unavailable("blob store unavailable, retry later") from err
        self._bucket_ready = True

    def put(self, key: str, data: BinaryIO, length: int, content_type: str) -> None:
        self.ensure_bucket()
        try:
            self.client.put_object(
                bucket_name=self.bucket, object_name=key, data=data, length=length, content_type=content_type
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as err:
            raise Unavailable("blob store unavailable, retry later") from err

    def open(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        try:
            response = self.client.get_object(bucket_name=self.bucket, object_name=key)
        except S3Error as err:
            if err.code in _MISSING:
                raise BlobNotFound(key) from None
            raise Unavailable(f"blob store error: {err.code}") from err
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as err:
            raise Unavailable("blob store unavailable, retry later") from err
        return self._stream(response, chunk_size)

    @staticmethod
    def _stream(response: urllib3.BaseHTTPResponse, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk_size)
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(bucket_name=self.bucket, object_name=key)
            return True
        except S3Error as err:
            if err.code in _MISSING:
                return False
            raise Unavailable(f"blob store error: {err.code}") from err
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as err:
            raise Unavailable("blob store unavailable, retry later") from err

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(bucket_name=self.bucket, object_name=key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as err:
            raise Unavailable("blob store unavailable, retry later") from err

    def url(self, key: str, expires: timedelta) -> str:
        return self.public_client.presigned_get_object(bucket_name=self.bucket, object_name=key, expires=expires)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (tests use it to prove nothing was orphaned)."""
        try:
            return [o.object_name for o in self.client.list_objects(bucket_name=self.bucket, prefix=prefix, recursive=True)]
        except S3Error as err:
            if err.code == "NoSuchBucket":  # nothing was ever stored
                return []
            raise Unavailable(f"blob store error: {err.code}") from err
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as err:
            raise Unavailable("blob store unavailable, retry later") from err
