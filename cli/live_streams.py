"""The gateway's server-sent event streams, read with httpx-sse and resumed after a drop.

A stream that breaks off (the gateway restarted, the network blinked, a silent connection timed out) is opened again
with `Last-Event-ID` set to the last id seen, so no log line is lost or repeated; the gateway's own `event: error`
of an unavailable control plane is retried the same way. The first connection is not retried (a wrong URL should
fail at once), and a stream that cannot be re-opened for RECONNECT_GIVE_UP_SECONDS is given up.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Callable

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from cli.api import error_from_response, error_from_transport
from cli.errors import EXIT_UNAUTHENTICATED, EXIT_REFUSED, EXIT_UNREACHABLE, CliError

RECONNECT_FIRST_DELAY_SECONDS = 0.5
RECONNECT_MAX_DELAY_SECONDS = 5.0
RECONNECT_GIVE_UP_SECONDS = 120.0
# The gateway pings every 15 s: a connection silent for longer is dead, not idle.
READ_TIMEOUT_SECONDS = 45.0
_RETRYABLE_STATUSES = {502, 503, 504}
_RETRYABLE_ERROR_CODES = {"unavailable", "control_plane_unavailable", "deadline_exceeded", "internal"}


class _Dropped(Exception):
    """The stream ended before its `end` event, or the gateway said to come back later."""


def _error_event(event: ServerSentEvent) -> Exception:
    try:
        error = json.loads(event.data)["error"]
        code, message, field = error.get("code"), str(error["message"]), error.get("field")
    except (ValueError, KeyError, TypeError):
        return _Dropped(f"the stream reported an unreadable error: {event.data[:200]}")
    if code in _RETRYABLE_ERROR_CODES:
        return _Dropped(message)
    return CliError(message, EXIT_UNAUTHENTICATED if code == "unauthenticated" else EXIT_REFUSED, field)


async def events(
    client: httpx.AsyncClient, path: str, params: dict[str, Any], on_drop: Callable[[str], None],
) -> AsyncIterator[ServerSentEvent]:
    """The stream's events up to and including `end`, across reconnects. Raises CliError for what retrying cannot
    fix (401, 404, an error event that is not about availability) and when the gateway stays away."""
    last_id: str | None = None
    connected_once = False
    failing_since: float | None = None
    delay = RECONNECT_FIRST_DELAY_SECONDS
    while True:
        headers = {"Last-Event-ID": last_id} if last_id is not None else {}
        try:
            async with aconnect_sse(client, "GET", path, params=params, headers=headers) as source:
                response = source.response
                if not response.is_success:
                    await response.aread()
                    if response.status_code not in _RETRYABLE_STATUSES or not connected_once:
                        raise error_from_response(response)
                    raise _Dropped(f"the gateway answered {response.status_code}")
                connected_once, failing_since, delay = True, None, RECONNECT_FIRST_DELAY_SECONDS
                async for event in source.aiter_sse():
                    if event.event == "ping" or (event.event == "message" and not event.data):
                        continue  # keep-alives (httpx-sse makes an empty event of a comment once an id was seen)
                    if event.event == "error":
                        raise _error_event(event)
                    if event.id:
                        last_id = event.id
                    yield event
                    if event.event == "end":
                        return
                raise _Dropped("the stream ended early")
        except httpx.HTTPError as exc:
            if not connected_once:
                raise error_from_transport(exc, str(client.base_url)) from None
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except _Dropped as exc:
            reason = str(exc)
        now = time.monotonic()
        if failing_since is None:
            failing_since = now
            on_drop(f"stream {path} dropped ({reason}); reconnecting")
        elif now - failing_since > RECONNECT_GIVE_UP_SECONDS:
            raise CliError(f"lost the stream {path} and could not reconnect for {RECONNECT_GIVE_UP_SECONDS:.0f} s: "
                           f"{reason}", EXIT_UNREACHABLE)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)
