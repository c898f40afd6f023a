"""Topics: the taxonomy editors tag posts with and tracking scores interest by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.shared.errors import InvalidArgument
from services.shared.ids import version_etag
from services.shared.text import check_text

MAX_DISPLAY_NAME = 40
MAX_DESCRIPTION = 500


@dataclass(frozen=True)
class Topic:
    id: str
    display_name: str
    description: str
    create_time: datetime
    update_time: datetime
    version: int = 1

    @property
    def name(self) -> str:
        return f"topics/{self.id}"

    @property
    def etag(self) -> str:
        return version_etag(self.id, self.version)


def validate_topic_fields(display_name: str, description: str) -> tuple[str, str]:
    check_text(display_name, "topic.display_name", min_len=1, max_len=MAX_DISPLAY_NAME)
    if not display_name.strip():
        raise InvalidArgument("topic.display_name", "required")
    check_text(description, "topic.description", max_len=MAX_DESCRIPTION, multiline=True)
    return display_name.strip(), description
