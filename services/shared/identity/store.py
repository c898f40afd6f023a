"""Persistence of users and tokens, and token verification with a short cache.

A verified token is trusted for ``cache_seconds`` without asking the database
again. While the database cannot be reached, a token verified within
``stale_seconds`` is still accepted: a revocation cannot be written during an
outage either, and the ingest path (events appended to Redis, applied once the
database is back) then keeps recording what customers read. A token the
database has refused since is dropped from the cache at once, so an outage never
brings a revoked token back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..db import Database, as_utc
from ..errors import NotFound, Unauthenticated, Unavailable
from ..ids import new_id
from ..logs import Throttle
from ..metrics import STALE_AUTH
from .domain import IssuedToken, Principal, Role, issue_token, secret_matches
from .models import TokenRow, UserRow

if TYPE_CHECKING:
    from ..settings import Settings


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user_id: str
    create_time: datetime
    revoke_time: datetime | None


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Verified:
    at: float  # time.monotonic() of the database's answer
    secret_hash: str
    principal: Principal


def _principal(row: UserRow) -> Principal:
    return Principal(id=row.id, display_name=row.display_name, role=Role(row.role), rep=row.rep, team=row.team or "")


def _token(row: TokenRow) -> TokenInfo:
    return TokenInfo(row.id, row.user_id, as_utc(row.create_time), as_utc(row.revoke_time) if row.revoke_time else None)


class IdentityStore:
    def __init__(self, db: Database, cache_seconds: float = 2.0, stale_seconds: float = 0.0) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self.stale_seconds = stale_seconds
        self._cache: dict[str, _Verified] = {}
        self._lock = threading.Lock()
        self._stale_warning = Throttle(10.0)  # every call during an outage is stale: the metric counts them

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> IdentityStore:
        """A service's token check: AUTH_CACHE_SECONDS and AUTH_STALE_SECONDS."""
        return cls(db, settings.auth_cache_seconds, settings.auth_stale_seconds)

    def create_user(self, display_name: str, role: Role, rep: str = "", team: str = "") -> tuple[Principal, TokenInfo, str]:
        now = datetime.now(UTC)
        user = UserRow(id=new_id(), display_name=display_name, role=role.value, rep=rep, team=team, create_time=now)
        issued = issue_token(new_id())
        with self.db.write() as s:
            s.add(user)
            s.flush()
            token = TokenRow(id=issued.token_id, user_id=user.id, secret_hash=issued.secret_hash, create_time=now)
            s.add(token)
            s.flush()
            return _principal(user), _token(token), issued.secret

    def create_token(self, user_id: str) -> tuple[TokenInfo, str]:
        issued: IssuedToken = issue_token(new_id())
        with self.db.write() as s:
            if s.get(UserRow, user_id) is None:
                raise NotFound(f"users/{user_id} not found")
            row = TokenRow(
                id=issued.token_id, user_id=user_id, secret_hash=issued.secret_hash, create_time=datetime.now(UTC)
            )
            s.add(row)
            s.flush()
            return _token(row), issued.secret

    def revoke_token(self, user_id: str, token_id: str) -> TokenInfo:
        with self.db.write() as s:
            row = s.get(TokenRow, token_id)
            if row is None or row.user_id != user_id:
                raise NotFound(f"users/{user_id}/tokens/{token_id} not found")
            if row.revoke_time is None:
                row.revoke_time = datetime.now(UTC)
            s.flush()
            info = _token(row)
        with self._lock:
            self._cache.pop(token_id, None)
        return info

    def get_user(self, user_id: str) -> Principal:
        with self.db.read() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"users/{user_id} not found")
            return _principal(row)

    def list_users(self, after_id: str | None, limit: int) -> Sequence[tuple[Principal, datetime]]:
        with self.db.read() as s:
            q = select(UserRow).order_by(UserRow.id).limit(limit)
            if after_id:
                q = q.where(UserRow.id > after_id)
            return [(_principal(r), as_utc(r.create_time)) for r in s.scalars(q)]

    def user_create_time(self, user_id: str) -> datetime:
        with self.db.read() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"users/{user_id} not found")
            return as_utc(row.create_time)

    def link_rep(self, user_id: str, rep: str) -> None:
        with self.db.write() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"users/{user_id} not found")
            row.rep = rep

    def authenticate(self, token_id: str, raw_secret: str) -> Principal:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token_id)
        if hit and not secret_matches(raw_secret, hit.secret_hash):
            hit = None
        if hit and now - hit.at < self.cache_seconds:
            return hit.principal
        try:
            principal, stored_hash = self._verify(token_id, raw_secret)
        except Unauthenticated:
            if hit is not None:  # the very secret the cache vouched for, refused now (revoked): never from the cache again
                with self._lock:
                    self._cache.pop(token_id, None)
            raise
        except Unavailable:
            if hit and now - hit.at < self.stale_seconds:
                STALE_AUTH.labels(hit.principal.role.value).inc()
                if self._stale_warning.due():
                    log.warning("database unavailable: accepting tokens verified up to %.0f s ago (token %s: %.0f s)",
                                self.stale_seconds, token_id, now - hit.at)
                return hit.principal
            raise
        if self.cache_seconds > 0 or self.stale_seconds > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[token_id] = _Verified(now, stored_hash, principal)
        return principal

    def _verify(self, token_id: str, raw_secret: str) -> tuple[Principal, str]:
        with self.db.read() as s:
            row = s.execute(
                select(TokenRow, UserRow).join(UserRow, UserRow.id == TokenRow.user_id).where(TokenRow.id == token_id)
            ).first()
            if row is None:
                raise Unauthenticated("authorization: unknown token")
            token, user = row
            if token.revoke_time is not None:
                raise Unauthenticated("authorization: token revoked")
            if not secret_matches(raw_secret, token.secret_hash):
                raise Unauthenticated("authorization: unknown token")
            return _principal(user), token.secret_hash
