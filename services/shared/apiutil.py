"""Request validation helpers shared by the servicers (AIP conventions).

Every helper raises ``InvalidArgument(field, problem)`` naming the request field,
so callers learn exactly what to fix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2

from .errors import InvalidArgument
from .text import check_text

__all__ = ["check_text"]  # re-exported: servicers validate text fields with it too

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)  # AIP-158: larger values are coerced down


class PageTokens:
    """Opaque, tamper-proof page tokens bound to the query that made them.

    A token is ``base64url(json) . hmac``; the JSON holds the keyset position and
    a fingerprint of the filters, so a token reused with other filters, edited or
    forged is refused instead of silently returning the wrong page.
    """

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"page-token:" + secret).digest()

    def _sign(self, body: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()[:16]).decode().rstrip("=")

    def encode(self, position: Any, query: Any) -> str:
        body = json.dumps({"p": position, "q": _fingerprint(query)}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + self._sign(body)

    def decode(self, token: str, query: Any, field: str = "page_token") -> Any:
        if not token:
            return None
        try:
            encoded, _, signature = token.partition(".")
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            # Bytes, not str: compare_digest raises TypeError on non-ASCII str.
            valid = hmac.compare_digest(signature.encode(), self._sign(body).encode())
            data = json.loads(body) if valid else None
        except (ValueError, UnicodeError):
            data = None
        if not isinstance(data, dict) or "p" not in data:
            raise InvalidArgument(field, "not a page token issued by this service")
        if data.get("q") != _fingerprint(query):
            raise InvalidArgument(field, "was issued for a different query; start again without it")
        return data["p"]


    def page(self, size: int, token: str, query: Any, fetch: Callable[[Any, int], list[T]],
             key: Callable[[T], Any], kind: type = str) -> tuple[list[T], str]:
        """One page of a keyset listing: ``fetch(position, limit)`` returns items after ``position``."""
        limit = page_size(size)
        position = self.decode(token, query)
        if position is not None and (not isinstance(position, kind) or isinstance(position, bool)):
            raise InvalidArgument("page_token", "not a page token issued by this service")
        items = fetch(position, limit + 1)
        more = len(items) > limit
        items = items[:limit]
        return items, (self.encode(key(items[-1]), query) if more else "")


def _fingerprint(query: Any) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_name(value: str, collection: str, field: str = "name") -> str:
    """``"posts/abc"`` -> ``"abc"`` for collection ``posts``."""
    prefix = collection + "/"
    if not value:
        raise InvalidArgument(field, f"required, e.g. '{collection}/<id>'")
    if not value.startswith(prefix) or not _ID.fullmatch(value[len(prefix):]):  # '$' alone allows a final \n
        raise InvalidArgument(field, f"expected '{collection}/<id>', got {_preview(value)}")
    return value[len(prefix):]


def check_resource_id(value: str, field: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", value):
        raise InvalidArgument(field, "use 1-63 lowercase letters, digits or '-', starting with a letter")
    return value


def check_request_id(value: str, field: str = "request_id") -> str:
    if not value:
        return ""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(field, "must be a UUID") from None


def mask_paths(paths: Iterable[str], allowed: Iterable[str], field: str = "update_mask") -> set[str]:
    allowed_set = set(allowed)
    given = list(paths)
    if not given:
        raise InvalidArgument(field, f"required; name the fields to change ({', '.join(sorted(allowed_set))}) or '*'")
    out: set[str] = set()
    for i, path in enumerate(given):
        if path == "*":
            out |= allowed_set
        elif path in allowed_set:
            out.add(path)
        else:
            raise InvalidArgument(f"{field}.paths[{i}]", f"unknown or immutable field {_preview(path)}")
    return out


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp, field: str) -> datetime:
    # Range of google.protobuf.Timestamp: 0001-01-01 .. 9999-12-31.
    if not (-62135596800 <= ts.seconds <= 253402300799) or not (0 <= ts.nanos < 1_000_000_000):
        raise InvalidArgument(field, "timestamp out of range")
    return ts.ToDatetime(tzinfo=UTC)


def _preview(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")
