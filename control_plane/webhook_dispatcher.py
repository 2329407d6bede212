"""Sends the webhook outbox (control_plane/webhook_store.py) on the control plane's event loop.

Every request is signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`, by the
`standardwebhooks` package); a network error, a timeout or a non-2xx answer is tried again after an exponentially
growing delay, up to the policy's number of tries. Every try is logged for the user. Store calls run on the store
threads (in_db_thread); requests are httpx.AsyncClient calls with timeouts and a bounded read of the answer.

Delivery is at least once: a try that reached the receiver but was not recorded (the control plane died in between)
is made again with the same `webhook-id`, which receivers dedupe by. A control plane that stops cleanly lets the
tries in flight finish and records them first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from standardwebhooks import Webhook

from control_plane.db_calls import in_db_thread
from control_plane.models import utcnow
from control_plane.webhook_store import DueDelivery, WebhookStore
from control_plane.webhook_urls import UrlRefused, parse_url, resolve

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024  # read (and dropped) of an answer: a receiver cannot make us read forever
MAX_ERROR_CHARS = 500
USER_AGENT = "BugAgaric-Webhooks/1"
PRUNE_EVERY_SECONDS = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 30.0
    max_seconds: float = 3600.0

    def delay_after(self, attempt: int) -> float | None:
        """Seconds to wait after failed try number `attempt` (1-based): base, 2*base, 4*base... capped at max; None
        when that was the last try."""
        if attempt >= self.max_attempts:
            return None
        return min(self.base_seconds * 2 ** (attempt - 1), self.max_seconds)


def signed_headers(secret: str, message_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one try: the id stays, the timestamp is the try's (receivers refuse old
    ones), and the signature covers `id.timestamp.body`."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }


@dataclass(frozen=True)
class TryResult:
    status_code: int  # 0: no answer
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


async def send_once(client: httpx.AsyncClient, due: DueDelivery, *, timeout_seconds: float,
                    allow_private: bool, now: datetime | None = None) -> TryResult:
    """One signed POST of the delivery's payload to its endpoint, to the address the URL check passed."""
    started = time.monotonic()
    body = due.payload_json.encode()
    try:
        async with asyncio.timeout(timeout_seconds):  # the whole try, however slowly an answer drips in
            target = await resolve(parse_url(due.url), allow_private=allow_private)
            headers = {
                **signed_headers(due.secret, due.id, body, now or utcnow()),
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "host": target.url.netloc.decode("ascii"),
            }
            extensions = {"sni_hostname": target.url.host} if target.url.scheme == "https" else {}
            request = client.build_request("POST", target.url.copy_with(host=target.address), content=body,
                                           headers=headers, extensions=extensions)
            response = await client.send(request, stream=True)
            try:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES:
                        break
            finally:
                await response.aclose()
        error = "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code} {response.reason_phrase}"
        return TryResult(response.status_code, error, _elapsed_ms(started))
    except UrlRefused as exc:
        return TryResult(0, str(exc), _elapsed_ms(started))
    except TimeoutError:
        return TryResult(0, f"timed out after {timeout_seconds:g}s", _elapsed_ms(started))
    except httpx.HTTPError as exc:
        return TryResult(0, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] or type(exc).__name__,
                         _elapsed_ms(started))


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class WebhookDispatcher:
    """Polls the outbox for due deliveries and sends them, each endpoint's in event order, endpoints concurrently."""

    def __init__(self, store: WebhookStore, policy: RetryPolicy, *, timeout_seconds: float = 10.0,
                 poll_seconds: float = 1.0, allow_private: bool = False, batch: int = 100,
                 log_retention: timedelta = timedelta(days=30)) -> None:
        self._store = store
        self._log_retention = log_retention
        self._pruned_at = 0.0  # monotonic time of the last pruning of the delivery log
        self._policy = policy
        self._timeout = timeout_seconds
        self._poll = poll_seconds
        self._allow_private = allow_private
        self._batch = batch
        # A claimed try that never got recorded (the process died mid-try) is due again once this is over: longer
        # than a try can take (its timeout) with room to record it.
        self._lease = timedelta(seconds=2 * timeout_seconds + 5)
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout_seconds)
        self._in_flight: set[str] = set()
        self._senders: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._closing = False
        self._loop_task: asyncio.Task | None = None

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self.dispatch_due()
                if time.monotonic() - self._pruned_at > PRUNE_EVERY_SECONDS:
                    self._pruned_at = time.monotonic()
                    await in_db_thread(self._store.prune, utcnow() - self._log_retention)
            except Exception as exc:  # the store is unreachable for now: try again at the next poll
                log.warning("webhook dispatch: %s: %s", type(exc).__name__, exc)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll)
            except TimeoutError:
                pass

    async def dispatch_due(self) -> int:
        """Claims the due deliveries and starts sending them; returns how many were started."""
        due = await in_db_thread(self._store.claim_due, utcnow(), self._lease, self._batch)
        by_endpoint: dict[str, list[DueDelivery]] = defaultdict(list)
        for delivery in due:
            if delivery.id not in self._in_flight:  # still being tried: its result will set its next try
                self._in_flight.add(delivery.id)
                by_endpoint[delivery.endpoint_id].append(delivery)
        for deliveries in by_endpoint.values():
            sender = asyncio.create_task(self._send_in_order(deliveries))
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return sum(len(d) for d in by_endpoint.values())

    async def _send_in_order(self, deliveries: list[DueDelivery]) -> None:
        for index, delivery in enumerate(deliveries):
            if self._closing:  # stopping: the rest are due again at once, for the next start
                unsent = deliveries[index:]
                await in_db_thread(self._store.release, [d.id for d in unsent], utcnow())
                self._in_flight.difference_update(d.id for d in unsent)
                return
            try:
                await self._try(delivery)
            except Exception:
                log.exception("webhook delivery %s: try %d not recorded", delivery.id, delivery.attempt)
            finally:
                self._in_flight.discard(delivery.id)

    async def _try(self, delivery: DueDelivery) -> None:
        result = await send_once(self._client, delivery, timeout_seconds=self._timeout,
                                 allow_private=self._allow_private)
        now = utcnow()
        delay = None if result.ok else self._policy.delay_after(delivery.attempt)
        next_at = now + timedelta(seconds=delay) if delay is not None else None
        await in_db_thread(self._store.record_attempt, delivery.id, delivery.attempt, status_code=result.status_code,
                           error=result.error, duration_ms=result.duration_ms, delivered=result.ok,
                           next_attempt_at=next_at, time=now)
        if not result.ok:
            log.info("webhook delivery %s try %d failed (%s); %s", delivery.id, delivery.attempt, result.error,
                     f"next try in {delay:g}s" if delay is not None else "no tries left")

    async def close(self) -> None:
        """Stops polling; lets the tries in flight finish and be recorded (for at most a request's timeout), so a
        clean restart sends nothing twice."""
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._senders:
            _done, pending = await asyncio.wait(set(self._senders), timeout=self._timeout + 5)
            for sender in pending:
                sender.cancel()
        await self._client.aclose()
