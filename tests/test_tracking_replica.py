"""Sales reads on a read replica (DATABASE_REPLICA_URL): profiles, leads and analytics read it, everything else the primary.

No streaming replica runs here; a database cloned from the primary at one moment
stands for a replica that lags behind it by everything written since.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.shared.db import Database
from services.shared.ids import new_id
from services.shared.sharetoken import ShareTokens
from services.tracking.app import TrackingApp
from services.tracking.models import ViewRow

from . import infra
from .conftest import make_settings

UA = "Mozilla/5.0 (iPhone) MicroMessenger/8.0"


def read_post(app: TrackingApp, token: str, readers: range, t0_ms: int) -> None:
    for i in readers:
        app.ingest.start_view(token, f"visitor-{i:04d}", UA, "", "", now_ms=t0_ms + i)
    assert app.wait_applied(30), "the in-process consumer did not apply the views"


def test_profiles_leads_and_analytics_read_the_replica_while_writes_go_to_the_primary(pg_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, DATABASE_URL=pg_url)
    token, _ = ShareTokens(list(settings.share_token_keys)).issue(post := new_id(), 1, new_id(), new_id(), team_id="t1")
    t0_ms = 1_790_000_000_000
    app = TrackingApp.build(settings, consume_in_process=True)
    try:
        read_post(app, token, range(3), t0_ms)
    finally:
        app.close()
    with infra.pg_database(template=pg_url.rsplit("/", 1)[1]) as replica_url:  # the replica, as of now: 3 views
        lagging = TrackingApp.build(make_settings(tmp_path, DATABASE_URL=pg_url, DATABASE_REPLICA_URL=replica_url),
                                    consume_in_process=True)
        try:
            read_post(lagging, token, range(3, 8), t0_ms)  # 5 more, applied to the primary
            with lagging.db.read() as s:
                assert s.query(ViewRow).filter(ViewRow.post_id == post).count() == 8
            assert lagging.service.post_analytics(post)[0].views == 3
        finally:
            lagging.close()
    primary_only = TrackingApp.build(settings, consume_in_process=True)
    try:
        assert primary_only.service.post_analytics(post)[0].views == 8
    finally:
        primary_only.close()


def test_a_replica_needs_a_server_database() -> None:
    with pytest.raises(ValueError, match="replica"):
        Database("sqlite:///:memory:", replica_url="postgresql+psycopg://postgres@127.0.0.1/test")
