"""WebhookService: the caller's webhook endpoints and their delivery logs, over gRPC; and `add_webhooks`, which wires
the service and the outbox's dispatcher into the control plane."""

from __future__ import annotations

from datetime import timedelta

import grpc

from control_plane.auth_service import caller
from control_plane.converters import timestamp
from control_plane.grpc_errors import abort
from control_plane.models import WebhookEndpoint
from control_plane.webhook_dispatcher import RetryPolicy, WebhookDispatcher
from control_plane.webhook_service import TooManyWebhooks, WebhookRefused, WebhookService
from control_plane.webhook_store import DeliveryLog, WebhookNotFound, WebhookStore
from protos import control_plane_pb2, control_plane_pb2_grpc


class WebhookRpcs(control_plane_pb2_grpc.WebhookServiceServicer):
    def __init__(self, service: WebhookService) -> None:
        self._service = service

    async def CreateWebhook(self, request, context):
        try:
            endpoint = await self._service.create(caller().username, request.url, list(request.events),
                                                  request.description)
        except WebhookRefused as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.field)
        except TooManyWebhooks as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "url")
        return control_plane_pb2.CreateWebhookResponse(webhook=webhook_to_proto(endpoint), secret=endpoint.secret)

    async def ListWebhooks(self, request, context):
        endpoints = await self._service.list(caller().username)
        return control_plane_pb2.ListWebhooksResponse(webhooks=[webhook_to_proto(e) for e in endpoints])

    async def DeleteWebhook(self, request, context):
        try:
            await self._service.delete(request.webhook_id, caller().username)
        except WebhookNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "webhook_id")
        return control_plane_pb2.DeleteWebhookResponse(webhook_id=request.webhook_id)

    async def ListWebhookDeliveries(self, request, context):
        try:
            logs = await self._service.deliveries(request.webhook_id, caller().username, request.limit)
        except WebhookRefused as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.field)
        except WebhookNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "webhook_id")
        return control_plane_pb2.ListWebhookDeliveriesResponse(deliveries=[delivery_to_proto(log) for log in logs])


def webhook_to_proto(endpoint: WebhookEndpoint) -> control_plane_pb2.Webhook:
    return control_plane_pb2.Webhook(id=endpoint.id, url=endpoint.url, events=endpoint.events.split(","),
                                     description=endpoint.description, created_at=timestamp(endpoint.created_at))


def delivery_to_proto(log: DeliveryLog) -> control_plane_pb2.WebhookDelivery:
    delivery = log.delivery
    return control_plane_pb2.WebhookDelivery(
        id=delivery.id, event_type=delivery.event_type, task_id=delivery.task_id, state=delivery.state,
        attempts=delivery.attempts, created_at=timestamp(delivery.created_at),
        next_attempt_at=timestamp(delivery.next_attempt_at) if delivery.state == "pending" else None,
        finished_at=timestamp(delivery.finished_at), payload_json=delivery.payload_json,
        attempt_log=[control_plane_pb2.WebhookAttempt(
            number=a.number, time=timestamp(a.time), status_code=a.status_code, error=a.error,
            duration_ms=a.duration_ms, next_attempt_at=timestamp(a.next_attempt_at)) for a in log.attempts],
    )


def add_webhooks(server: grpc.aio.Server, engine, settings) -> WebhookDispatcher:
    """Registers WebhookService on `server` and builds the dispatcher of the outbox (start it once serving)."""
    store = WebhookStore(engine)
    service = WebhookService(store, allow_private_urls=settings.webhook_allow_private_urls)
    control_plane_pb2_grpc.add_WebhookServiceServicer_to_server(WebhookRpcs(service), server)
    policy = RetryPolicy(settings.webhook_max_attempts, settings.webhook_backoff_base_seconds,
                         settings.webhook_backoff_max_seconds)
    return WebhookDispatcher(store, policy, timeout_seconds=settings.webhook_timeout_seconds,
                             poll_seconds=settings.webhook_poll_seconds,
                             allow_private=settings.webhook_allow_private_urls,
                             log_retention=timedelta(days=settings.webhook_log_retention_days))
