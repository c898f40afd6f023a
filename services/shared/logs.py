"""Logging set-up for every process."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Alembic narrates every migration check at INFO; only its problems matter at start-up.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
