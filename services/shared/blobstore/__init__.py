"""Blob store: one port, a local-folder adapter (embedded default) and a MinIO adapter.

Callers choose the keys (an asset's original is at :func:`original_key`). ``put`` is
atomic on both adapters: a reader never sees a partial blob, and a failed put
leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import BinaryIO, Protocol

from ..settings import Settings


def original_key(asset_id: str) -> str:
    """Where an uploaded asset's bytes live. The content service writes them there; the
    distribution service reads them (originals to vary, a rep's contact QR)."""
    return f"originals/{asset_id}"


class BlobStore(Protocol):
    def put(self, key: str, data: BinaryIO, length: int, content_type: str) -> None:
        """Store ``length`` bytes read from ``data`` under ``key``, atomically."""

    def open(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        """Yield the blob's bytes; raises ``BlobNotFound``."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    def url(self, key: str, expires: timedelta) -> str:
        """A time-limited download URL, or "" where the store has none (local)."""

    def keys(self, prefix: str = "") -> list[str]:
        """Every stored key under ``prefix`` (for audits and tests)."""


class BlobNotFound(KeyError):
    pass


def blob_store_from_settings(settings: Settings) -> BlobStore:
    if settings.minio_endpoint:
        from .minio import MinioBlobStore

        return MinioBlobStore.from_settings(settings)
    from .local import LocalBlobStore

    return LocalBlobStore(settings.data_dir / "blobs")


__all__ = ["BlobNotFound", "BlobStore", "blob_store_from_settings"]
