"""Share tokens: signed, tamper-proof, rotatable."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from services.shared.errors import InvalidArgument
from services.shared.settings import ConfigError, load_settings
from services.shared.sharetoken import ShareTokens, parse_keys

OLD = ("k1", b"old-secret-0123456789")
NEW = ("k2", b"new-secret-0123456789")


def test_a_token_carries_post_revision_rep_copy_parent_and_time() -> None:
    tokens = ShareTokens([NEW])
    raw, issued = tokens.issue("p1", 3, "r1", "c1", parent_share_id="s0", now=1_700_000_000)
    got = tokens.verify(raw)
    assert got == issued
    assert (got.post_id, got.revision, got.rep_id, got.copy_id, got.parent_share_id, got.issued_at) == (
        "p1", 3, "r1", "c1", "s0", 1_700_000_000)
    assert got.share_id and got.key_id == "k2"


def test_each_issue_is_a_new_share() -> None:
    tokens = ShareTokens([NEW])
    assert tokens.issue("p", 1, "r", "c")[1].share_id != tokens.issue("p", 1, "r", "c")[1].share_id


def test_altered_or_forged_tokens_are_refused() -> None:
    tokens = ShareTokens([NEW])
    raw, _ = tokens.issue("p1", 1, "r1", "c1")
    payload, sig = raw.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["rep"] = "someone-else"
    altered = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=") + "." + sig
    forged = ShareTokens([("k2", b"attacker-secret-0123456")]).issue("p1", 1, "r1", "c1")[0]
    for bad in [altered, forged, raw + "x", "", "a.b", "no-dot", raw.replace(".", "..")]:
        with pytest.raises(InvalidArgument) as err:
            tokens.verify(bad)
        assert err.value.field == "share_token"


def test_rotation_accepts_old_keys_until_they_are_dropped() -> None:
    old_token, _ = ShareTokens([OLD]).issue("p", 1, "r", "c")
    rotating = ShareTokens([NEW, OLD])
    assert rotating.verify(old_token).key_id == "k1"
    assert rotating.verify(rotating.issue("p", 1, "r", "c")[0]).key_id == "k2"
    with pytest.raises(InvalidArgument):
        ShareTokens([NEW]).verify(old_token)


def test_keys_come_from_settings(tmp_path: Path) -> None:
    s = load_settings({"CONTENTOPS_DATA_DIR": str(tmp_path), "SHARE_TOKEN_KEYS": "k2:new-secret-0123456789,k1:old-secret-0123456789"})
    assert [k for k, _ in s.share_token_keys] == ["k2", "k1"]
    derived = load_settings({"CONTENTOPS_DATA_DIR": str(tmp_path), "CONTENTOPS_SECRET_KEY": "x"}).share_token_keys
    assert len(derived) == 1 and derived[0][1] != b"x"
    with pytest.raises(ConfigError):
        load_settings({"CONTENTOPS_DATA_DIR": str(tmp_path), "SHARE_TOKEN_KEYS": "nokey"})
    with pytest.raises(ValueError):
        parse_keys("k:short")
