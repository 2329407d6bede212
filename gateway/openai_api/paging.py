"""OpenAI's cursor pages, `{"object": "list", "data", "has_more"}`: `after` is the id of the last item of the previous
page, `limit` how many come next."""

from __future__ import annotations

from typing import Any

from fastapi import Query

from gateway.openai_api.errors import invalid_request

MAX_LIMIT = 100
LimitParam = Query(ge=1, le=MAX_LIMIT, description="items on the page (OpenAI's default 20, at most 100)")
AfterParam = Query(max_length=200, description="the id of the last item of the previous page")


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


def page_after(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """A page of `items` (in list order) after the one whose id is `after`; 400 naming `after` for an id not there."""
    start = 0
    if after:
        position = next((i for i, item in enumerate(items) if item["id"] == after), None)
        if position is None:
            raise invalid_request(f"after: {after!r} is not an id of this list", "after")
        start = position + 1
    chunk = items[start:start + limit]
    return list_page(chunk, start + limit < len(items))
