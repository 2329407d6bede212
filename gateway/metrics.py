"""Prometheus metrics of the gateway: requests counted and timed by route template, served at `/metrics`.

Labels are the matched route's path template (`/api/finetune/tasks/{task_id}`, never the raw path), the method and
the status class (`2xx` ...), so the number of series stays bounded whatever paths clients send; a path no route
matches is `unmatched`, an unusual method `other`. Each app has a registry of its own (tests build several apps in one process).

A request is counted when its response starts (the status is known then); its duration is observed when the response
ends, so an SSE stream is timed over its whole life, and nothing is kept per stream once it ends.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.routing import iter_route_contexts
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"
# Any other method a client sends is labelled "other" (the label set stays bounded).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Seconds; REST calls are milliseconds, uploads, downloads and SSE streams run for minutes.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class GatewayMetrics:
    """The gateway's metric families, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("route", "method", "status")
        self.requests = Counter("bugagaric_gateway_requests", "HTTP requests answered, by route template, method and "
                                "status class", labels, registry=self.registry)
        self.duration = Histogram("bugagaric_gateway_request_duration_seconds", "From the request's arrival to the "
                                  "end of its response (a stream: its whole life)", labels,
                                  buckets=DURATION_BUCKETS, registry=self.registry)
        self.in_progress = Gauge("bugagaric_gateway_requests_in_progress", "Requests (open streams included) not "
                                 "answered to the end yet", registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_template(app: ASGIApp, scope: Scope) -> str:
    """The path template of the route this request goes to (also for a request refused before routing, e.g. a 401),
    or UNMATCHED. A route matching the path under another method (a 405) still names it."""
    return _template(getattr(getattr(app, "router", None), "routes", ()), scope) or UNMATCHED


def _template(routes, scope: Scope) -> str | None:
    partial = None
    # FastAPI keeps an included router as one entry; iter_route_contexts yields its routes with their full paths.
    for route in iter_route_contexts(routes):
        match, child_scope = route.matches(scope)
        if match == Match.FULL:
            inner = getattr(route.original_route, "routes", None)  # a mounted app's own routes: name the inner one
            if isinstance(route.original_route, Mount) and inner:
                return route.path + (_template(inner, {**scope, **child_scope}) or "")
            return route.path_format or route.path
        if match == Match.PARTIAL and partial is None:
            partial = route.path_format or route.path
    return partial


class PrometheusMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): streamed bodies pass through untouched. `app_ref` is the FastAPI app whose
    routes name the template; `metrics` the app's GatewayMetrics."""

    def __init__(self, app: ASGIApp, *, app_ref: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self._routes_of = app_ref
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self._metrics
        started = time.perf_counter()
        labels: dict[str, str] = {}
        arrived = dict(scope)  # routing rewrites the scope (a mount's root_path): match what arrived
        method = scope["method"] if scope["method"] in METHODS else "other"

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                labels.update(route=route_template(self._routes_of, arrived), method=method,
                              status=f"{int(message['status']) // 100}xx")
                metrics.requests.labels(**labels).inc()
            await send(message)

        metrics.in_progress.inc()
        try:
            await self.app(scope, receive, observe)
        finally:
            metrics.in_progress.dec()
            if labels:  # a response started: counted, timed to its end (or to the client going away)
                metrics.duration.labels(**labels).observe(time.perf_counter() - started)


router = APIRouter()


# Public (gateway.authn.PUBLIC_PATHS) like a health check: Prometheus scrapes without a token. Not in the API document.
@router.get(METRICS_PATH, include_in_schema=False)
async def metrics_page(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app) -> None:
    """Call after the other middleware: Starlette runs the last added first, so every answer (a 401, a 413, a 500
    from the catch-all) passes through this one."""
    metrics = GatewayMetrics()
    app.state.metrics = metrics
    app.add_middleware(PrometheusMiddleware, app_ref=app, metrics=metrics)
    app.include_router(router)
