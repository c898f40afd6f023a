"""Share tokens: the signed, tamper-proof identity of a shared rep copy.

Agreed between distribution (which issues them with every rep copy) and
tracking (which verifies them when a customer opens the link). A token is
``<base64url(JSON payload)>.<base64url(HMAC-SHA256(key, payload)[:16])>``; the
payload carries

    v    format version (1)
    k    id of the signing key (for rotation)
    p    post id            r   revision number
    rep  rep id             c   copy id
    ps   parent share id: "" for a rep's own link, else the share the viewer
         came from (a forward)
    s    this share's id (random; forwards point at it)
    t    issue time, unix seconds
    tm   the rep's team id (only when the rep has one): tracking scopes a sales
         manager's view of contacts by it
    ct   contact id (only in a per-contact link): whoever opens it is that
         contact of the rep from then on

Key rotation: ``SHARE_TOKEN_KEYS`` lists ``id:secret`` pairs, newest first. New
tokens are signed with the first; every listed key still verifies, so during a
rotation window old links keep working. Drop the old key to end the window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from .errors import InvalidArgument

VERSION = 1
MAX_TOKEN_CHARS = 1024


@dataclass(frozen=True)
class ShareToken:
    post_id: str
    revision: int
    rep_id: str
    copy_id: str
    share_id: str
    parent_share_id: str = ""
    issued_at: int = 0
    key_id: str = ""
    team_id: str = ""
    contact_id: str = ""


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """``"k2:secret2,k1:secret1"`` -> [(k2, secret2), (k1, secret1)], newest first."""
    keys = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        key_id, sep, secret = part.partition(":")
        if not sep or not key_id or len(secret) < 16:
            raise ValueError("SHARE_TOKEN_KEYS: expected 'id:secret' pairs with secrets of at least 16 characters")
        keys.append((key_id, secret.encode()))
    if not keys:
        raise ValueError("SHARE_TOKEN_KEYS: no keys")
    return keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ShareTokens:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one share-token key is needed")
        self._current = keys[0]
        self._keys = dict(keys)

    def issue(self, post_id: str, revision: int, rep_id: str, copy_id: str, parent_share_id: str = "",
              now: float | None = None, *, team_id: str = "", contact_id: str = "") -> tuple[str, ShareToken]:
        key_id, key = self._current
        token = ShareToken(post_id, revision, rep_id, copy_id, secrets.token_urlsafe(9), parent_share_id,
                           int(time.time() if now is None else now), key_id, team_id, contact_id)
        fields: dict[str, object] = {"v": VERSION, "k": key_id, "p": post_id, "r": revision, "rep": rep_id,
                                     "c": copy_id, "ps": parent_share_id, "s": token.share_id, "t": token.issued_at}
        if team_id:
            fields["tm"] = team_id
        if contact_id:
            fields["ct"] = contact_id
        payload = json.dumps(fields, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._sign(key, payload))}", token

    def child(self, parent: ShareToken, *, contact_id: str = "", now: float | None = None) -> tuple[str, ShareToken]:
        """A token for a forward of ``parent`` (or a per-contact link from it): same copy, parent = its share.

        A forward never inherits the parent's contact: whoever a contact forwards the page to is someone else.
        """
        return self.issue(parent.post_id, parent.revision, parent.rep_id, parent.copy_id, parent.share_id, now,
                          team_id=parent.team_id, contact_id=contact_id)

    @staticmethod
    def _sign(key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:16]

    def verify(self, token: str, field: str = "share_token") -> ShareToken:
        """The token's contents, or InvalidArgument for anything forged, altered or unreadable."""
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise InvalidArgument(field, "not a share token")
        encoded, signature = token.split(".")
        try:
            payload = _unb64(encoded)
            data = json.loads(payload)
            key = self._keys.get(str(data.get("k"))) if isinstance(data, dict) else None
            valid = key is not None and hmac.compare_digest(_unb64(signature), self._sign(key, payload))
        except (ValueError, UnicodeError):
            valid = False
        if not valid:
            raise InvalidArgument(field, "signature does not match (forged, altered or signed with a retired key)")
        try:
            if data["v"] != VERSION:
                raise InvalidArgument(field, f"unsupported version {data['v']}")
            return ShareToken(str(data["p"]), int(data["r"]), str(data["rep"]), str(data["c"]), str(data["s"]),
                              str(data["ps"]), int(data["t"]), str(data["k"]), str(data.get("tm", "")),
                              str(data.get("ct", "")))
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument(field, "token payload is incomplete") from None
