"""ReadyCopies: live campaigns' ready copies in memory (services/distribution/ready.py), without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.distribution.app import DistributionApp
from services.distribution.ready import ReadyCopies, ReadyCopy

from .conftest import make_settings

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def copies(*reps: str) -> list[ReadyCopy]:
    return [ReadyCopy(rep, f"text of {rep}", [{"key": f"k/{rep}"}], f"token-{rep}", NOW) for rep in reps]


def test_a_campaign_is_loaded_once_per_reload_interval_until_nothing_is_pending() -> None:
    ready = ReadyCopies(reload_seconds=3600)
    assert ready.due("c1", "p1", 2)
    assert not ready.due("c1", "p1", 2)  # loading, or loaded within the interval
    ready.add("c1", copies("a", "b"), complete=False)
    assert ready.get("c1", "a") == ("p1", 2, copies("a")[0]) and ready.get("c1", "z") is None
    assert ready.known("c1") == {"a", "b"} and ready.size == 2
    ready.reload_seconds = 0
    assert ready.due("c1", "p1", 2)  # still rendering: loaded again
    ready.add("c1", copies("b", "c"), complete=True)
    assert ready.size == 3 and ready.known("c1") == {"a", "b", "c"}
    assert not ready.due("c1", "p1", 2)  # complete: never again


def test_the_budget_drops_the_campaign_loaded_longest_ago_and_never_the_one_loading() -> None:
    ready = ReadyCopies(budget=5, reload_seconds=0)
    for campaign in ("old", "mid", "new"):
        assert ready.due(campaign, f"post-{campaign}", 1)
    ready.add("old", copies("a", "b"), complete=True)
    ready.add("mid", copies("a", "b"), complete=True)
    ready.add("new", copies("a", "b", "c"), complete=True)  # its second copy needs room: "old" goes
    assert (ready.known("old"), ready.known("mid"), ready.known("new"), ready.size) == (set(), {"a", "b"}, {"a", "b", "c"}, 5)
    ready.add("new", copies("d", "e", "f", "g"), complete=True)  # "mid" goes; then "new" alone fills the budget
    assert (ready.known("mid"), ready.known("new"), ready.size) == (set(), {"a", "b", "c", "d", "e"}, 5)
    assert ready.get("new", "f") is None  # read from the database instead


def test_campaigns_holding_nothing_do_not_let_the_budget_overflow() -> None:
    ready = ReadyCopies(budget=2, reload_seconds=0)
    for campaign in ("quiet-1", "quiet-2", "busy"):  # the quiet ones got traffic, nothing was ready yet
        assert ready.due(campaign, f"post-{campaign}", 1)
    ready.add("busy", copies("a", "b", "c"), complete=True)
    assert ready.size == 2 and ready.known("busy") == {"a", "b"}



def test_each_distribution_process_holds_as_many_as_ready_copies_says(tmp_path: Path) -> None:
    app = DistributionApp.build(make_settings(tmp_path, READY_COPIES="7"), migrate=True)
    try:
        assert app.service.ready.budget == 7
    finally:
        app.close()
