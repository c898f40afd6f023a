"""Local-folder blob store for the embedded default.

Writes go to a temporary file in the same folder and are renamed into place,
so a put is atomic and an interrupted one leaves nothing under the key.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from ..errors import Unavailable
from . import BlobNotFound

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,511}$")


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"bad blob key {key!r}")
        return self.root / key

    def put(self, key: str, data: BinaryIO, length: int, content_type: str) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-")
        except OSError as err:
            raise Unavailable(f"blob store unavailable: {err.strerror}") from err
        try:
            with os.fdopen(fd, "wb") as out:
                remaining = length
                while remaining > 0:
                    chunk = data.read(min(remaining, 1024 * 1024))
                    if not chunk:
                        raise ValueError(f"blob {key}: stream ended {remaining} bytes short")
                    out.write(chunk)
                    remaining -= len(chunk)
            os.replace(tmp, path)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(err, OSError):
                raise Unavailable(f"blob store unavailable: {err.strerror}") from err
            raise

    def open(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        path = self._path(key)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return _read_chunks(f, chunk_size)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def url(self, key: str, expires: timedelta) -> str:
        return ""

    def keys(self, prefix: str = "") -> list[str]:
        """Every file under ``prefix``, unfinished temporaries included (tests use
        it to prove a failed operation left nothing behind)."""
        found = (str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in found if k.startswith(prefix))




def _read_chunks(f: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with f:
        while chunk := f.read(chunk_size):
            yield chunk
