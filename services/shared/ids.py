"""Identifiers: time-ordered, URL-safe, unguessable.

Keyset pagination orders by id, so ids sort by creation time (48-bit
millisecond prefix, like ULID/UUIDv7) followed by 80 random bits.
"""

from __future__ import annotations

import hashlib
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def version_etag(resource_id: str, version: int) -> str:
    """An opaque etag that changes with every write of a resource (its version counter)."""
    return hashlib.sha256(f"{resource_id}:{version}".encode()).hexdigest()[:16]


def new_id() -> str:
    """A 26-character id that sorts by creation time."""
    millis = time.time_ns() // 1_000_000
    return _b32(millis, 10) + _b32(secrets.randbits(80), 16)
