"""The web edge's own ROLE_SERVICE token for local runs: made once, kept owner-only in a file, reused.

Production sets WEB_SERVICE_TOKEN from a secret (``contentops admin create-user
--role service``); ``make run`` has no secret store, so the edge (or the
one-process runner) keeps its token in the data folder instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from services.shared.errors import ServiceError
from services.shared.identity.domain import Role, parse_bearer
from services.shared.identity.store import IdentityStore

log = logging.getLogger(__name__)

FILE_NAME = "web-service.token"


def stored_service_token(identity: IdentityStore, path: Path) -> str:
    """The token in ``path`` if it still authenticates as a service; else a new service user's, written there."""
    if path.exists():
        token = path.read_text().strip()
        try:
            if identity.authenticate(*parse_bearer(f"Bearer {token}")).role is Role.SERVICE:
                return token
        except ServiceError:  # revoked, or made for another database
            log.info("the stored web service token no longer works; making a new one")
    _, _, token = identity.create_user("web edge", Role.SERVICE)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token
