"""Identity tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import declarative_base

Base = declarative_base("identity")


class UserRow(Base):
    __tablename__ = "identity_users"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(16))
    rep: Mapped[str] = mapped_column(String(64), default="")
    team: Mapped[str] = mapped_column(String(72), default="")  # a sales manager's team: "teams/{team}"
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TokenRow(Base):
    __tablename__ = "identity_tokens"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("identity_users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoke_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

