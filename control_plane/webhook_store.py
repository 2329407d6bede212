"""Webhook endpoints, their outbox of deliveries and the delivery log, in the store. Endpoints are per user: nobody
sees, deletes or reads the log of another user's endpoint (an admin neither: it is the admin's own tasks' events
that an admin's endpoint gets)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from control_plane.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow

SECRET_PREFIX = "whsec_"


class WebhookNotFound(LookupError):
    def __init__(self, webhook_id: str):
        super().__init__(f"webhook {webhook_id!r} not found")
        self.webhook_id = webhook_id


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def delete_webhooks_of(session: Session, owner: str) -> None:
    """A deleted user's endpoints, deliveries and log, in the caller's transaction (AccountStore.delete_user): a new
    user of the same name must not inherit them."""
    ids = list(session.exec(select(WebhookEndpoint.id).where(col(WebhookEndpoint.owner) == owner)).all())
    if ids:
        _delete_endpoints(session, ids)


def _delete_endpoints(session: Session, endpoint_ids: list[str]) -> None:
    deliveries = select(WebhookDelivery.id).where(col(WebhookDelivery.endpoint_id).in_(endpoint_ids))
    session.execute(delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(deliveries)))
    session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id).in_(endpoint_ids)))
    session.execute(delete(WebhookEndpoint).where(col(WebhookEndpoint.id).in_(endpoint_ids)))


@dataclass(frozen=True)
class DueDelivery:
    """A delivery claimed for one try, with what sending it needs."""

    id: str
    endpoint_id: str
    url: str
    secret: str
    payload_json: str
    attempt: int  # the number of this try (1 for the first)


@dataclass(frozen=True)
class DeliveryLog:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


class WebhookStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _session(self) -> Session:
        return Session(self._engine, expire_on_commit=False)

    # --- endpoints ---------------------------------------------------------------------------------------------

    def create(self, owner: str, url: str, events: list[str], description: str) -> WebhookEndpoint:
        endpoint = WebhookEndpoint(id=f"wh_{secrets.token_hex(8)}", owner=owner, url=url, events=",".join(events),
                                   description=description, secret=new_secret())
        with self._session() as session:
            session.add(endpoint)
            session.commit()
        return endpoint

    def count(self, owner: str) -> int:
        with self._session() as session:
            return int(session.exec(select(func.count()).select_from(WebhookEndpoint)
                                    .where(col(WebhookEndpoint.owner) == owner)).one())

    def list(self, owner: str) -> list[WebhookEndpoint]:
        with self._session() as session:
            return list(session.exec(select(WebhookEndpoint).where(col(WebhookEndpoint.owner) == owner)
                                     .order_by(col(WebhookEndpoint.created_at), col(WebhookEndpoint.id))).all())

    def get(self, webhook_id: str, owner: str) -> WebhookEndpoint:
        with self._session() as session:
            endpoint = session.get(WebhookEndpoint, webhook_id)
        if endpoint is None or endpoint.owner != owner:
            raise WebhookNotFound(webhook_id)
        return endpoint

    def delete(self, webhook_id: str, owner: str) -> None:
        """The endpoint with its deliveries (pending ones are dropped) and their log."""
        with self._session() as session:
            endpoint = session.get(WebhookEndpoint, webhook_id)
            if endpoint is None or endpoint.owner != owner:
                raise WebhookNotFound(webhook_id)
            _delete_endpoints(session, [webhook_id])
            session.commit()

    def deliveries(self, webhook_id: str, owner: str, limit: int) -> list[DeliveryLog]:
        """The endpoint's newest `limit` deliveries, newest first, each with its tries in order."""
        self.get(webhook_id, owner)
        with self._session() as session:
            rows = list(session.exec(
                select(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == webhook_id)
                .order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.task_event_id).desc())
                .limit(limit)).all())
            attempts: dict[str, list[WebhookAttempt]] = {row.id: [] for row in rows}
            if rows:
                tries = select(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(list(attempts)))
                for attempt in session.exec(tries.order_by(col(WebhookAttempt.number))).all():
                    attempts[attempt.delivery_id].append(attempt)
        return [DeliveryLog(row, attempts[row.id]) for row in rows]

    # --- the dispatcher's side ---------------------------------------------------------------------------------

    def claim_due(self, now: datetime, lease: timedelta, limit: int) -> list[DueDelivery]:
        """Pending deliveries due by `now` (oldest events first), each claimed for one try: its next_attempt_at moves
        to now + lease, compare-and-set, so no other dispatcher takes it meanwhile, and one whose try never got
        recorded (the control plane died mid-request) is tried again once the lease is over."""
        claimed: list[DueDelivery] = []
        with self._session() as session:
            rows = session.exec(
                select(WebhookDelivery, WebhookEndpoint)
                .where(col(WebhookDelivery.state) == "pending", col(WebhookDelivery.next_attempt_at) <= now,
                       col(WebhookEndpoint.id) == col(WebhookDelivery.endpoint_id))
                .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.task_event_id))
                .limit(limit)).all()
            for delivery, endpoint in rows:
                result = session.execute(
                    update(WebhookDelivery)
                    .where(col(WebhookDelivery.id) == delivery.id, col(WebhookDelivery.state) == "pending",
                           col(WebhookDelivery.next_attempt_at) == delivery.next_attempt_at)
                    .values(next_attempt_at=now + lease))
                if result.rowcount == 1:
                    claimed.append(DueDelivery(delivery.id, endpoint.id, endpoint.url, endpoint.secret,
                                               delivery.payload_json, delivery.attempts + 1))
            session.commit()
        return claimed

    def record_attempt(self, delivery_id: str, number: int, *, status_code: int, error: str, duration_ms: int,
                       delivered: bool, next_attempt_at: datetime | None, time: datetime | None = None) -> bool:
        """Logs try `number` and moves the delivery on: delivered, pending until `next_attempt_at`, or failed (no
        next try). Compare-and-set on the tries counted: a try recorded twice (or for a deleted endpoint) is not.
        Returns whether it was recorded."""
        time = time or utcnow()
        state = "delivered" if delivered else ("pending" if next_attempt_at is not None else "failed")
        with self._session() as session:
            result = session.execute(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.attempts) == number - 1,
                       col(WebhookDelivery.state) == "pending")
                .values(attempts=number, state=state, next_attempt_at=next_attempt_at,
                        finished_at=None if state == "pending" else time))
            if result.rowcount != 1:
                session.rollback()
                return False
            session.add(WebhookAttempt(delivery_id=delivery_id, number=number, time=time, status_code=status_code,
                                       error=error, duration_ms=duration_ms, next_attempt_at=next_attempt_at))
            session.commit()
        return True

    def release(self, delivery_ids: list[str], now: datetime) -> None:
        """Claimed deliveries that were not tried (the dispatcher is stopping): due again at `now`."""
        if not delivery_ids:
            return
        with self._session() as session:
            session.execute(update(WebhookDelivery)
                            .where(col(WebhookDelivery.id).in_(delivery_ids), col(WebhookDelivery.state) == "pending")
                            .values(next_attempt_at=now))
            session.commit()

    def prune(self, finished_before: datetime) -> int:
        """Drops the deliveries (and their tries) that ended before `finished_before`: the log keeps a window, not
        everything forever. Pending ones always stay. Returns how many went."""
        with self._session() as session:
            old = select(WebhookDelivery.id).where(col(WebhookDelivery.state) != "pending",
                                                   col(WebhookDelivery.finished_at) < finished_before)
            session.execute(delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(old)))
            result = session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.state) != "pending",
                                                                   col(WebhookDelivery.finished_at) < finished_before))
            session.commit()
        return result.rowcount
