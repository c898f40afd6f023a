"""Token verification when the database is down (PostgreSQL; the outage is a database nobody listens on).

- A token verified within AUTH_STALE_SECONDS is still accepted while the database is
  unreachable: the ingest path appends to Redis and keeps recording through an outage.
- Only that token with its own secret: a wrong secret, an unknown token or one verified
  too long ago gets UNAVAILABLE, never access.
- A token the database refused since it was cached (revoked elsewhere) is never
  accepted from the cache again, outage or not; a caller guessing at its secret
  cannot evict it.
- With AUTH_STALE_SECONDS=0, or past it, an outage is UNAVAILABLE for everyone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update

from services.shared.db import Database
from services.shared.errors import Unauthenticated, Unavailable
from services.shared.identity.domain import Role, parse_bearer
from services.shared.identity.models import TokenRow
from services.shared.identity.store import IdentityStore

from . import infra


@pytest.fixture
def up(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    yield db
    db.dispose()


@pytest.fixture
def down() -> Iterator[Database]:
    db = Database(f"postgresql+psycopg://127.0.0.1:{infra.free_port()}/test", pool_size=1)
    yield db
    db.dispose()


def stale_accepted() -> float:
    return REGISTRY.get_sample_value("contentops_auth_stale_total", {"role": Role.SERVICE.value}) or 0.0


def creds(secret: str) -> tuple[str, str]:
    return parse_bearer(f"Bearer {secret}")


def test_a_recently_verified_token_outlives_an_outage(up: Database, down: Database) -> None:
    store = IdentityStore(up, cache_seconds=0, stale_seconds=600)
    edge, _, secret = store.create_user("web edge", Role.SERVICE)
    other, _, other_secret = store.create_user("never seen", Role.SERVICE)
    assert store.authenticate(*creds(secret)) == edge
    before = stale_accepted()

    store.db = down
    assert store.authenticate(*creds(secret)) == edge  # cache_seconds=0: this asked the database, which is down
    assert stale_accepted() == before + 1
    token_id, _ = creds(secret)
    with pytest.raises(Unavailable):
        store.authenticate(token_id, "not-the-secret")  # the cache vouches for a secret, not a token id
    with pytest.raises(Unavailable):
        store.authenticate(*creds(other_secret))  # never verified here
    store.db = up
    with pytest.raises(Unauthenticated):
        store.authenticate(token_id, "not-the-secret")  # refused by the database: the cached entry stays
    store.db = down
    assert store.authenticate(*creds(secret)) == edge
    store.db = up
    assert store.authenticate(*creds(other_secret)) == other  # and when it is back, everything is asked again


@pytest.mark.parametrize("stale_seconds", [0.0, 0.05], ids=["no-window", "expired"])
def test_past_the_stale_window_an_outage_is_unavailable(up: Database, down: Database, stale_seconds: float) -> None:
    store = IdentityStore(up, cache_seconds=0, stale_seconds=stale_seconds)
    _, _, secret = store.create_user("web edge", Role.SERVICE)
    store.authenticate(*creds(secret))
    store.db = down
    time.sleep(stale_seconds + 0.01)
    with pytest.raises(Unavailable):
        store.authenticate(*creds(secret))


def test_a_token_refused_since_is_not_brought_back_by_an_outage(up: Database, down: Database) -> None:
    store = IdentityStore(up, cache_seconds=0, stale_seconds=600)
    _, token, secret = store.create_user("web edge", Role.SERVICE)
    store.authenticate(*creds(secret))
    with up.write() as s:  # revoked by another process: this one's cache still holds the token
        s.execute(update(TokenRow).where(TokenRow.id == token.id).values(revoke_time=token.create_time))
    with pytest.raises(Unauthenticated):
        store.authenticate(*creds(secret))
    store.db = down
    with pytest.raises(Unavailable):
        store.authenticate(*creds(secret))
