"""The page token of the task list: where the previous page ended (its last task's created_at and id, the list's
order), so the next page starts right after it whatever was added or removed meanwhile (keyset paging)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_TOKEN_CHARS = 200


class BadPageToken(ValueError):
    def __init__(self) -> None:
        super().__init__("page_token: not a token this list gave out (pass next_page_token back unchanged)")


@dataclass(frozen=True)
class ListCursor:
    created_at: datetime  # UTC
    task_id: str

    def token(self) -> str:
        stamp = self.created_at if self.created_at.tzinfo else self.created_at.replace(tzinfo=UTC)
        raw = json.dumps([stamp.astimezone(UTC).isoformat(), self.task_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, token: str) -> "ListCursor":
        if len(token) > MAX_TOKEN_CHARS:
            raise BadPageToken()
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            stamp, task_id = json.loads(raw)
            created_at = datetime.fromisoformat(stamp)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise BadPageToken() from None
        if not isinstance(task_id, str) or created_at.tzinfo is None:
            raise BadPageToken()
        return cls(created_at.astimezone(UTC), task_id)
