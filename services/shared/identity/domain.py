"""Roles, principals and the bearer-token format. Pure: no SQL, no gRPC.

A token reads ``co_<token id>_<secret>``. Only ``sha256(secret)`` is stored: the
secret is 32 random bytes, so a fast hash is as safe as a slow one and keeps
verification cheap on every RPC.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from ..errors import Unauthenticated


class Role(enum.Enum):
    ADMIN = "admin"
    EDITOR = "editor"
    REP = "rep"
    SALES = "sales"
    SERVICE = "service"  # machines, e.g. the web edge recording customers' views


@dataclass(frozen=True)
class Principal:
    id: str
    display_name: str
    role: Role
    rep: str = ""  # a rep user's rep profile: "reps/{rep}"
    team: str = ""  # a sales manager's team: "teams/{team}" (they see its reps' contacts)

    @property
    def name(self) -> str:
        return f"users/{self.id}"


SYSTEM = Principal(id="system", display_name="scheduler", role=Role.ADMIN)

_TOKEN = re.compile(r"^co_([0-9a-z]{26})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class IssuedToken:
    token_id: str
    secret: str  # the full bearer credential, shown once
    secret_hash: str


def issue_token(token_id: str) -> IssuedToken:
    raw = secrets.token_urlsafe(32)
    return IssuedToken(token_id, f"co_{token_id}_{raw}", hash_secret(raw))


def hash_secret(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def parse_bearer(header: str) -> tuple[str, str]:
    """Split ``Bearer co_<id>_<secret>`` into (token id, raw secret)."""
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential:
        raise Unauthenticated("authorization: expected 'Bearer <token>'")
    match = _TOKEN.match(credential.strip())
    if not match:
        raise Unauthenticated("authorization: malformed token")
    return match.group(1), match.group(2)


def secret_matches(raw: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(raw), stored_hash)
