"""The caller's webhook endpoints over REST, each one WebhookService call: create (the signing secret shown in this
answer only), list, delete, and an endpoint's delivery log. The control plane checks the URL and the event types;
the gateway only checks the body's JSON types."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from gateway import serializers as ser
from gateway.api_models import ApiModel, Deleted, ErrorResponse, RequestModel, Timestamp
from gateway.client import ControlPlane, control_plane
from gateway.errors import bad_request
from gateway.inputs import json_body_doc, parse_body
from protos import control_plane_pb2 as cp

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])
CP = Annotated[ControlPlane, Depends(control_plane)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad input; `error.field` names it (`url`, `events`, "
          "`description`, `limit`)"},
    401: {"model": ErrorResponse, "description": "missing, invalid or expired token"},
    404: {"model": ErrorResponse, "description": "no such webhook of the caller's"},
    409: {"model": ErrorResponse, "description": "the caller has the most webhooks a user may have"},
    503: {"model": ErrorResponse, "description": "control plane unavailable"},
}
EVENTS_TEXT = "event types to send: task.started, task.succeeded, task.failed, task.stopped (omitted or empty: all)"


class CreateWebhookBody(RequestModel):
    url: str = Field(description="the receiver: http:// or https://, on a public address (private ones only where "
                     "the operator allows them)")
    events: list[str] = Field(default_factory=list, description=EVENTS_TEXT)
    description: str = Field(default="", max_length=500, description="what the endpoint is for")


class WebhookInfo(ApiModel):
    """An endpoint as listed: never its secret."""

    id: str
    url: str
    events: list[str]
    description: str
    created_at: Timestamp


class CreatedWebhook(WebhookInfo):
    secret: str = Field(description="`whsec_...`: verifies the requests' `webhook-signature` (Standard Webhooks); "
                        "shown this once")


class WebhookList(ApiModel):
    webhooks: list[WebhookInfo] = Field(description="oldest first")


class WebhookAttempt(ApiModel):
    number: int
    time: Timestamp
    status_code: int | None = Field(description="the receiver's HTTP status; null when it did not answer")
    error: str | None = Field(description="why the try failed (non-2xx, timeout, connection error); null on a 2xx")
    duration_ms: int
    next_attempt_at: Timestamp = Field(description="when the next try is due; null when none follows")


class WebhookDelivery(ApiModel):
    id: str = Field(description="the `webhook-id` header, the same on every try (dedupe by it)")
    event_type: str
    task_id: str
    state: str = Field(description="pending, delivered, or failed (out of tries)")
    attempts: int
    created_at: Timestamp
    next_attempt_at: Timestamp = Field(description="while pending: when the next try is due")
    finished_at: Timestamp
    payload: dict[str, Any] = Field(description="the JSON body sent")
    attempt_log: list[WebhookAttempt]


class WebhookDeliveryList(ApiModel):
    deliveries: list[WebhookDelivery] = Field(description="newest first")


def _info(webhook: cp.Webhook) -> dict[str, Any]:
    return {"id": webhook.id, "url": webhook.url, "events": list(webhook.events), "description": webhook.description,
            "created_at": ser.timestamp(webhook, "created_at")}


def _attempt(attempt: cp.WebhookAttempt) -> dict[str, Any]:
    return {"number": attempt.number, "time": ser.timestamp(attempt, "time"),
            "status_code": attempt.status_code or None, "error": attempt.error or None,
            "duration_ms": attempt.duration_ms, "next_attempt_at": ser.timestamp(attempt, "next_attempt_at")}


def _delivery(delivery: cp.WebhookDelivery) -> dict[str, Any]:
    return {"id": delivery.id, "event_type": delivery.event_type, "task_id": delivery.task_id,
            "state": delivery.state, "attempts": delivery.attempts,
            "created_at": ser.timestamp(delivery, "created_at"),
            "next_attempt_at": ser.timestamp(delivery, "next_attempt_at"),
            "finished_at": ser.timestamp(delivery, "finished_at"),
            "payload": json.loads(delivery.payload_json or "{}"),
            "attempt_log": [_attempt(a) for a in delivery.attempt_log]}


@router.post("", status_code=201, summary="Add a webhook endpoint (its secret is in this answer only)",
             responses=_ERRORS, response_model=CreatedWebhook, openapi_extra=json_body_doc(CreateWebhookBody))
async def create_webhook(request: Request, call: CP) -> Any:
    body = parse_body(await request.body(), CreateWebhookBody)
    events = body.get("events", [])
    if not all(isinstance(event, str) for event in events):
        raise bad_request("'events' must be a list of strings", field="events")
    reply = await call("WebhookService.CreateWebhook", cp.CreateWebhookRequest(
        url=body["url"], events=events, description=body.get("description", "")))
    return {**_info(reply.webhook), "secret": reply.secret}


@router.get("", summary="The caller's webhook endpoints", responses=_ERRORS, response_model=WebhookList)
async def list_webhooks(call: CP) -> Any:
    reply = await call("WebhookService.ListWebhooks", cp.ListWebhooksRequest())
    return {"webhooks": [_info(webhook) for webhook in reply.webhooks]}


@router.delete("/{webhook_id}", summary="Delete a webhook endpoint (its pending deliveries are dropped)",
               responses=_ERRORS, response_model=Deleted)
async def delete_webhook(webhook_id: str, call: CP) -> Any:
    reply = await call("WebhookService.DeleteWebhook", cp.DeleteWebhookRequest(webhook_id=webhook_id))
    return {"deleted": reply.webhook_id}


@router.get("/{webhook_id}/deliveries", summary="An endpoint's delivery log: its newest deliveries with every try",
            responses=_ERRORS, response_model=WebhookDeliveryList)
async def list_webhook_deliveries(
    webhook_id: str, call: CP,
    limit: Annotated[int, Query(ge=1, le=200, description="how many deliveries, newest first")] = 50,
) -> Any:
    reply = await call("WebhookService.ListWebhookDeliveries",
                       cp.ListWebhookDeliveriesRequest(webhook_id=webhook_id, limit=limit))
    return {"deliveries": [_delivery(delivery) for delivery in reply.deliveries]}
