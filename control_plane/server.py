"""Builds and runs the control plane: store, scheduler, ingestion and the gRPC server (health + reflection)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from control_plane.accounts import AccountStore
from control_plane.agent_clients import AgentClients
from control_plane.agent_reports import AgentReadings
from control_plane.auth_service import PUBLIC_METHODS, AuthService, TokenCheck, make_token_check
from control_plane.blob_store import LocalBlobStore
from control_plane.bootstrap import ensure_admin
from control_plane.data_check import DataChecker, SubmissionChecks
from control_plane.db import make_engine
from control_plane.dataset_service import DatasetService
from control_plane.dataset_store import DatasetStore
from control_plane.db_calls import in_db_thread
from control_plane.finetune_service import FinetuneService
from control_plane.ingestion import Ingestion
from control_plane.metrics import ControlPlaneMetrics
from control_plane.login_throttle import LoginThrottle, ThrottlePolicy, TrustedProxies
from control_plane.model_catalog import ModelCatalog
from control_plane.notifier import TaskChangeNotifier
from control_plane.published_models import ModelPublisher, PublishedModels
from control_plane.registry_service import AgentRegistryService
from control_plane.scheduler import Scheduler
from control_plane.chat_sessions import ChatSessions
from control_plane.settings import ControlPlaneSettings
from control_plane.store_health import StoreHealth
from control_plane.task_inputs import TaskInputs
from control_plane.task_store import TaskStore
from control_plane.template_store import TemplateStore
from control_plane.webhook_dispatcher import WebhookDispatcher
from control_plane.webhook_rpcs import add_webhooks
from protos import control_plane_pb2, control_plane_pb2_grpc
from protos.auth import BearerTokenInterceptor
from protos.metrics_http import MetricsServer
from protos.tls import Tls

log = logging.getLogger(__name__)

SERVICE_NAMES = tuple(service.full_name for service in control_plane_pb2.DESCRIPTOR.services_by_name.values())


@dataclass
class RunningControlPlane:
    server: grpc.aio.Server
    port: int
    store: TaskStore
    scheduler: Scheduler
    ingestion: Ingestion
    clients: AgentClients
    scheduler_task: asyncio.Task
    checks: SubmissionChecks
    token_check: TokenCheck
    auth: AuthService
    publisher: ModelPublisher
    datasets: DatasetService
    blobs: LocalBlobStore
    chat: ChatSessions | None = None
    webhooks: WebhookDispatcher | None = None
    metrics_server: MetricsServer | None = None  # Prometheus /metrics (its .port)
    store_health: StoreHealth | None = None

    async def stop(self, grace: float = 2.0) -> None:
        self.scheduler_task.cancel()
        if self.webhooks is not None:
            await self.webhooks.close()  # tries in flight finish and are recorded: a clean restart resends none
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.close)
        if self.store_health is not None:
            await self.store_health.close()
        if self.chat is not None:
            await self.chat.close_all()  # frees their devices on the agents now
        await self.publisher.close()
        self.datasets.close()
        await self.checks.close()
        await self.ingestion.close()
        await self.server.stop(grace)
        await self.clients.close()
        self.token_check.close()
        self.auth.close()
        self.store.engine.dispose()


async def start_control_plane(settings: ControlPlaneSettings) -> RunningControlPlane:
    if not settings.cluster_token:
        raise SystemExit("BUGAGARIC_CLUSTER_TOKEN is not set: the control plane and its agents share it to trust each other")
    tls = Tls.from_settings(settings)  # before anything else: a broken TLS setting stops the start here
    engine = await in_db_thread(make_engine, settings.database_url)
    store = TaskStore(engine)
    metrics = ControlPlaneMetrics(store)
    trusted_proxies = TrustedProxies.parse(settings.trusted_proxies)
    accounts = AccountStore(
        engine, timedelta(hours=settings.token_ttl_hours), LoginThrottle(engine, ThrottlePolicy.from_settings(settings))
    )
    # Its probe(timeout) tells whether token checks are being served.
    token_check = make_token_check(accounts, settings.cluster_token, settings.token_check_threads)
    admin_password_file = settings.admin_password_file
    if not admin_password_file.is_absolute():
        admin_password_file = settings.workspace / admin_password_file
    await in_db_thread(ensure_admin, accounts, settings.admin_user, settings.admin_password, admin_password_file)
    clients = AgentClients(settings.cluster_token, tls)
    notifier = TaskChangeNotifier()
    workspace = settings.workspace.resolve()
    blob_dir = settings.blob_dir if settings.blob_dir.is_absolute() else workspace / settings.blob_dir
    blobs = LocalBlobStore(blob_dir)
    published = PublishedModels(engine)
    catalog = ModelCatalog(engine)
    inputs = TaskInputs(DatasetStore(engine), published, store)
    datasets = DatasetService(DatasetStore(engine), blobs, store, published, max_bytes=settings.max_dataset_bytes)
    publisher = ModelPublisher(published, blobs, clients, agent_address=lambda task_id: _agent_address(store, task_id),
                               on_published=notifier.notify)
    scheduler_ref: list[Scheduler] = []
    ingestion = Ingestion(store, clients, notifier, on_task_ended=lambda: scheduler_ref[0].wake(),
                          on_succeeded=publisher.publish_later, metrics=metrics)
    scheduler = Scheduler(
        store, clients, ingestion,
        agent_timeout_seconds=settings.agent_timeout_seconds,
        agent_gone_seconds=settings.agent_gone_seconds,
        interval_seconds=settings.scheduler_interval_seconds,
        catalog=catalog, inputs=inputs, metrics=metrics,
    )
    scheduler_ref.append(scheduler)
    service_ref: list[FinetuneService] = []
    checker = DataChecker(clients, candidates=lambda *args: service_ref[0].candidate_agents(*args),
                          request_for=lambda *args: service_ref[0].check_request(*args),
                          timeout_seconds=settings.data_check_timeout_seconds,
                          submit_budget_seconds=settings.submit_check_budget_seconds)
    checks = SubmissionChecks(store, checker, on_passed=scheduler.task_joined_queue, on_changed=notifier.notify)
    readings = AgentReadings()

    server = grpc.aio.server(
        # Metrics first: it counts and times the calls authentication refuses too.
        interceptors=[metrics.interceptor(), BearerTokenInterceptor(token_check, PUBLIC_METHODS)],
        # Without SO_REUSEPORT a second control plane on the same port fails to bind instead of sharing it.
        options=[("grpc.so_reuseport", 0)],
    )
    chat = ChatSessions(store, scheduler, clients, catalog, published, idle_seconds=settings.chat_idle_seconds)
    scheduler.extra_held = chat.held  # a chat session's device is no task's
    service = FinetuneService(store, TemplateStore(engine), scheduler, clients, notifier, checks,
                              serving=token_check.probe, datasets=datasets, catalog=catalog, inputs=inputs,
                              published=published, blobs=blobs, readings=readings, chat=chat)
    service_ref.append(service)
    control_plane_pb2_grpc.add_FinetuneServiceServicer_to_server(service, server)
    auth = AuthService(accounts, token_check, trusted_proxies, settings.password_threads)
    control_plane_pb2_grpc.add_AuthServiceServicer_to_server(auth, server)
    control_plane_pb2_grpc.add_AgentRegistryServicer_to_server(
        AgentRegistryService(store, scheduler, ingestion, clients, settings.heartbeat_seconds, catalog, blobs,
                             readings), server
    )
    webhooks = add_webhooks(server, engine, settings)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    store_health = StoreHealth(engine, health_servicer, ("", *SERVICE_NAMES), settings.store_probe_seconds)
    await store_health.set_all(True)  # the store answered just now (make_engine)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    port = tls.bind(server, settings.control_plane_host, settings.control_plane_port, "control plane")
    await server.start()
    ingestion.resume_active()
    await checks.resume_pending()
    await publisher.resume(store)
    scheduler_task = asyncio.create_task(scheduler.run(), name="scheduler")
    webhooks.start()
    store_health.start()
    log.info("control plane listening on %s:%d (database %s)", settings.control_plane_host, port, _redact(settings.database_url))
    metrics_host = settings.control_plane_metrics_host or settings.control_plane_host
    metrics_server = MetricsServer(metrics.registry, metrics_host, settings.control_plane_metrics_port,
                                   "BUGAGARIC_CONTROL_PLANE_METRICS_PORT")
    log.info("metrics on http://%s:%d/metrics", metrics_host, metrics_server.port)
    return RunningControlPlane(server, port, store, scheduler, ingestion, clients, scheduler_task, checks, token_check,
                               auth, publisher, datasets, blobs, chat, store_health=store_health, webhooks=webhooks,
                               metrics_server=metrics_server)


def _agent_address(store: TaskStore, task_id: str) -> str | None:
    """Reads the store: the publisher calls it on a store thread."""
    agent_id = store.get_task(task_id).agent_id
    agent = store.get_agent(agent_id) if agent_id else None
    return agent.address if agent is not None else None


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
