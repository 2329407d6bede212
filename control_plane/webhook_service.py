"""Webhook endpoints as a user manages them: checked inputs, one user's endpoints at a time.

Transport-free: the gRPC servicer (control_plane.webhook_rpcs) maps these domain errors onto status codes.
"""

from __future__ import annotations

from control_plane.db_calls import in_db_thread
from control_plane.models import WebhookEndpoint
from control_plane.webhook_events import EVENT_TYPES
from control_plane.webhook_store import DeliveryLog, WebhookStore
from control_plane.webhook_urls import UrlRefused, parse_url, resolve

MAX_DESCRIPTION_CHARS = 500
MAX_ENDPOINTS_PER_USER = 20
DEFAULT_DELIVERIES = 50
MAX_DELIVERIES = 200


class WebhookRefused(Exception):
    """Bad input: `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class TooManyWebhooks(Exception):
    pass


def checked_events(events: list[str]) -> list[str]:
    """The subscribed event types, in their canonical order; none given means all."""
    wanted = [event.strip() for event in events]
    unknown = [event for event in wanted if event not in EVENT_TYPES]
    if unknown:
        raise WebhookRefused("events", f"events: unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}")
    return [event for event in EVENT_TYPES if event in wanted] if wanted else list(EVENT_TYPES)


def checked_description(description: str) -> str:
    text = description.strip()
    if len(text) > MAX_DESCRIPTION_CHARS or not text.isprintable():
        raise WebhookRefused("description", f"description: at most {MAX_DESCRIPTION_CHARS} printable characters")
    return text


def checked_limit(limit: int) -> int:
    if limit == 0:
        return DEFAULT_DELIVERIES
    if not 1 <= limit <= MAX_DELIVERIES:
        raise WebhookRefused("limit", f"limit: give 1-{MAX_DELIVERIES} (got {limit})")
    return limit


class WebhookService:
    def __init__(self, store: WebhookStore, *, allow_private_urls: bool) -> None:
        self._store = store
        self._allow_private = allow_private_urls

    async def create(self, owner: str, url: str, events: list[str], description: str) -> WebhookEndpoint:
        """A new endpoint (its secret set: shown to the caller this once). The URL must be http(s) and resolve to
        public addresses only (unless private ones are allowed)."""
        subscribed = checked_events(events)
        text = checked_description(description)
        try:
            parsed = parse_url(url)
            await resolve(parsed, allow_private=self._allow_private)
        except UrlRefused as exc:
            raise WebhookRefused("url", str(exc)) from None
        if await in_db_thread(self._store.count, owner) >= MAX_ENDPOINTS_PER_USER:
            raise TooManyWebhooks(f"you have {MAX_ENDPOINTS_PER_USER} webhooks already, the most a user may have; "
                                  "delete one first")
        return await in_db_thread(self._store.create, owner, str(parsed), subscribed, text)

    async def list(self, owner: str) -> list[WebhookEndpoint]:
        return await in_db_thread(self._store.list, owner)

    async def delete(self, webhook_id: str, owner: str) -> None:
        await in_db_thread(self._store.delete, webhook_id, owner)

    async def deliveries(self, webhook_id: str, owner: str, limit: int) -> list[DeliveryLog]:
        return await in_db_thread(self._store.deliveries, webhook_id, owner, checked_limit(limit))
