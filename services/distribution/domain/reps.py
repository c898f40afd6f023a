"""Reps and teams: who gets a copy, and the fields their copies are personalised with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.shared.errors import InvalidArgument
from services.shared.ids import version_etag
from services.shared.text import check_text

LIMITS = {"display_name": 40, "signature": 120, "store": 60, "region": 60}


@dataclass(frozen=True)
class Team:
    id: str
    display_name: str
    create_time: datetime

    @property
    def name(self) -> str:
        return f"teams/{self.id}"


@dataclass(frozen=True)
class Rep:
    id: str
    display_name: str
    signature: str
    store: str
    region: str
    team_id: str | None
    contact_qr_asset: str
    user_id: str | None
    create_time: datetime
    update_time: datetime
    version: int = 1

    @property
    def name(self) -> str:
        return f"reps/{self.id}"

    @property
    def etag(self) -> str:
        return version_etag(self.id, self.version)


def validate_rep_fields(display_name: str, signature: str, store: str, region: str, prefix: str = "rep") -> None:
    for field, value in (("display_name", display_name), ("signature", signature), ("store", store),
                         ("region", region)):
        check_text(value, f"{prefix}.{field}", max_len=LIMITS[field], min_len=1 if field == "display_name" else 0)
    if not display_name.strip():
        raise InvalidArgument(f"{prefix}.display_name", "required")


def validate_team_name(display_name: str) -> str:
    check_text(display_name, "team.display_name", min_len=1, max_len=60)
    if not display_name.strip():
        raise InvalidArgument("team.display_name", "required")
    return display_name.strip()
