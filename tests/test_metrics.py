"""Prometheus: the gateway's /metrics, the control plane's and each agent's metrics ports, scraped during a real SFT
run and parsed with prometheus_client's parser; the Grafana dashboard queries only metrics the services export."""

from __future__ import annotations

import json
import re
import shutil

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.stack import REPO_ROOT, start_stack
from tests.helpers.tasks import tiny_sft_config, wait_for_task
from tests.helpers.tiny_models import write_sft_rows

DASHBOARD = REPO_ROOT / "monitoring" / "grafana" / "bugagaric-dashboard.json"
SCRAPES = REPO_ROOT / "test-output"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "gauge": ("",), "summary": ("", "_count", "_sum", "_created"), "unknown": ("",)}


def parse(text: str) -> dict:
    """family name -> family, as prometheus_client's parser reads the exposition text."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def exported_names(families) -> set[str]:
    """Every series name a family can produce (a counter `x` is scraped as `x_total`, a histogram as `x_bucket` ...),
    whether or not it has samples yet (a GPU family on a CPU-only agent has none)."""
    return {family.name + suffix for family in families for suffix in _SUFFIXES.get(family.type, ("",))}


def samples(families: dict, name: str, **labels) -> list:
    """The samples called `name` (a series name, e.g. x_total) whose labels include `labels`."""
    found = []
    for family in families.values():
        found += [s for s in family.samples if s.name == name and labels.items() <= s.labels.items()]
    return found


def value(families: dict, name: str, **labels) -> float:
    return sum(s.value for s in samples(families, name, **labels))


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in re.findall(r"\bbugagaric_[a-z0-9_]+", expr)}


# -- the gateway's middleware, in process ---------------------------------------------------------------------------

@pytest.fixture
def gateway_client():
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    # No control plane behind it: the routes used here answer before any gRPC call (401, 404, 405) or need none.
    app = create_app(GatewaySettings(control_plane_address="127.0.0.1:9", grpc_timeout_seconds=1))
    with TestClient(app) as client:
        yield client


def test_gateway_counts_requests_by_route_template(gateway_client):
    for task_id in ("a1", "b2", "c3"):  # three raw paths, one template
        assert gateway_client.get(f"/api/finetune/tasks/{task_id}").status_code == 401
    assert gateway_client.get("/no/such/route/42").status_code == 401  # refused before routing: still labelled
    assert gateway_client.delete("/api/health").status_code == 405
    assert gateway_client.request("BREW", "/api/health").status_code == 405
    response = gateway_client.get("/metrics")  # public: no token
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = parse(response.text)

    assert value(families, "bugagaric_gateway_requests_total", route="/api/finetune/tasks/{task_id}", method="GET",
                 status="4xx") == 3
    assert value(families, "bugagaric_gateway_requests_total", route="unmatched", status="4xx") == 1
    assert value(families, "bugagaric_gateway_requests_total", route="/api/health", method="DELETE") == 1
    assert value(families, "bugagaric_gateway_requests_total", route="/api/health", method="other") == 1
    assert value(families, "bugagaric_gateway_request_duration_seconds_count",
                 route="/api/finetune/tasks/{task_id}") == 3
    routes = {s.labels["route"] for s in samples(families, "bugagaric_gateway_requests_total")}
    assert not any(task_id in route for route in routes for task_id in ("a1", "b2", "c3")), routes
    # The scrape itself is counted from the next one on; the metrics route is not part of the API document.
    assert value(parse(gateway_client.get("/metrics").text), "bugagaric_gateway_requests_total", route="/metrics") >= 1
    assert "/metrics" not in gateway_client.get("/openapi.json").json()["paths"]


def test_each_gateway_app_has_its_own_registry(gateway_client):
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    gateway_client.get("/api/finetune/tasks/x")
    with TestClient(create_app(GatewaySettings(control_plane_address="127.0.0.1:9"))) as other:
        families = parse(other.get("/metrics").text)
    assert value(families, "bugagaric_gateway_requests_total", route="/api/finetune/tasks/{task_id}") == 0


def test_dashboard_queries_only_exported_metrics(tmp_path):
    """Every metric a panel of the Grafana dashboard queries is one a service exports (the dashboard cannot drift),
    and every family the services export is on the dashboard."""
    from control_plane.db import make_engine
    from control_plane.metrics import ControlPlaneMetrics
    from control_plane.task_store import TaskStore
    from gateway.metrics import GatewayMetrics
    from gpu_agent.agent import Agent
    from gpu_agent.metrics import agent_registry
    from gpu_agent.settings import AgentSettings

    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    agent = Agent(AgentSettings(workspace=str(tmp_path), agent_devices="cpu", warm_pool_size=0, cluster_token="x"))
    try:
        registries = [GatewayMetrics().registry, ControlPlaneMetrics(TaskStore(engine)).registry, agent_registry(agent)]
        families = [family for registry in registries for family in registry.collect()]
    finally:
        agent.inventory.close()
        engine.dispose()
    exported = exported_names(families)
    queried = dashboard_metric_names()
    assert queried <= exported, f"the dashboard queries metrics no service exports: {sorted(queried - exported)}"
    unused = {f.name for f in families if f.name.startswith("bugagaric_")
              and not exported_names([f]) & queried}
    assert not unused, f"exported but on no panel: {sorted(unused)}"


# -- the control plane's gRPC interceptor, in process ----------------------------------------------------------------

def test_grpc_calls_are_counted_by_method_kind_and_code(tmp_path):
    """Unary calls, a refused call, a server stream ended by an abort, a stream written with context.write (health
    Watch) that the client cancels, and a bidirectional stream (reflection)."""
    import asyncio
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from control_plane.server import start_control_plane
    from control_plane.settings import ControlPlaneSettings
    from protos import control_plane_pb2 as cp, control_plane_pb2_grpc
    from protos.auth import bearer_metadata

    settings = ControlPlaneSettings(
        database_url=f"sqlite:///{tmp_path / 'cp.db'}", control_plane_port=0, control_plane_metrics_port=0,
        cluster_token="cluster-secret", admin_password="admin-password", workspace=tmp_path)

    async def scenario() -> dict:
        running = await start_control_plane(settings)
        url = f"http://127.0.0.1:{running.metrics_server.port}/metrics"
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                auth = control_plane_pb2_grpc.AuthServiceStub(channel)
                tasks = control_plane_pb2_grpc.FinetuneServiceStub(channel)
                token = (await auth.Login(cp.LoginRequest(username="admin", password="admin-password"))).token
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await tasks.GetTask(cp.GetTaskRequest(task_id="nope"))
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    async for _ in tasks.StreamTaskLogs(cp.StreamTaskLogsRequest(task_id="nope"),
                                                        metadata=bearer_metadata(token)):
                        pass
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND
                health = health_pb2_grpc.HealthStub(channel)
                serving = health_pb2.HealthCheckResponse.SERVING
                assert (await health.Check(health_pb2.HealthCheckRequest())).status == serving
                watch = health.Watch(health_pb2.HealthCheckRequest())
                assert (await watch.read()).status == serving
                watch.cancel()
                reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
                async for answer in reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                        list_services="")])):
                    assert answer.list_services_response.service
            deadline = time.monotonic() + 30  # the server learns of the cancelled Watch after the client
            async with httpx.AsyncClient() as client:
                while True:
                    families = parse((await client.get(url)).text)
                    if samples(families, "bugagaric_grpc_server_handled_total", grpc_method="Watch") \
                            or time.monotonic() > deadline:
                        return families
                    await asyncio.sleep(0.1)
        finally:
            await running.stop()

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        families = runner.run(scenario())

    def handled(method: str, **labels) -> float:
        return value(families, "bugagaric_grpc_server_handled_total", grpc_method=method, **labels)

    assert handled("Login", grpc_service="bugagaric.finetune.v1.AuthService", grpc_type="unary", grpc_code="OK") == 1
    assert handled("GetTask", grpc_type="unary", grpc_code="UNAUTHENTICATED") == 1
    assert handled("StreamTaskLogs", grpc_type="server_stream", grpc_code="NOT_FOUND") == 1
    assert handled("Check", grpc_service="grpc.health.v1.Health", grpc_code="OK") == 1
    assert handled("Watch", grpc_type="server_stream", grpc_code="CANCELLED") == 1
    assert handled("ServerReflectionInfo", grpc_type="bidi_stream", grpc_code="OK") == 1
    assert value(families, "bugagaric_grpc_server_handling_seconds_count", grpc_method="StreamTaskLogs") == 1


# -- a whole stack, scraped during a run -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_llama_dir):
    workspace = tmp_path_factory.mktemp("metrics-workspace")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    write_sft_rows(workspace / "data" / "train.jsonl", 48)
    running = start_stack(workspace, slots=1, stop_grace_seconds=5)
    yield running
    running.stop()


def scrape(url: str, name: str) -> dict:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    SCRAPES.mkdir(parents=True, exist_ok=True)
    (SCRAPES / f"metrics-{name}.txt").write_text(response.text)  # for the closing note
    return parse(response.text)


def test_every_service_is_scraped_during_a_run(stack):
    with httpx.Client(base_url=stack.base_url, timeout=30,
                      headers={"authorization": f"Bearer {stack.admin_token}"}) as api:
        # Many steps: it is still running while the scrapes below run; stopped at the end.
        response = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(max_steps=100000)})
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        wait_for_task(api, task_id, lambda t: t["status"] == "running" and t["progress"]["step"] >= 1, timeout=240)
        assert api.get(f"/api/finetune/tasks/{task_id}/logs", params={"limit": 10}).json()["lines"]
        try:
            gateway = scrape(f"{stack.base_url}/metrics", "gateway")
            control_plane = scrape(stack.control_plane_metrics_url, "control-plane")
            agent = scrape(stack.agent_metrics_url("agent"), "agent")
            running = api.get(f"/api/finetune/tasks/{task_id}").json()["status"]
        finally:
            api.delete(f"/api/finetune/tasks/{task_id}")  # stop
            wait_for_task(api, task_id, lambda t: t["status"] in {"stopped", "failed", "succeeded"}, timeout=120)
    assert running == "running"  # the scrapes above saw a live run

    # Gateway: requests by route template, method and status class.
    assert value(gateway, "bugagaric_gateway_requests_total", route="/api/finetune/start", method="POST",
                 status="2xx") == 1
    assert value(gateway, "bugagaric_gateway_requests_total", route="/api/finetune/tasks/{task_id}", method="GET",
                 status="2xx") >= 1
    assert value(gateway, "bugagaric_gateway_request_duration_seconds_count", route="/api/finetune/start") == 1

    # Control plane: tasks by status read from the store, the queue, scheduling, ingestion, gRPC by method.
    assert value(control_plane, "bugagaric_tasks", status="running") == 1
    assert value(control_plane, "bugagaric_tasks", status="queued") == 0
    assert value(control_plane, "bugagaric_queue_depth") == 0
    assert value(control_plane, "bugagaric_store_up") == 1
    assert value(control_plane, "bugagaric_scheduling_latency_seconds_count") >= 1
    assert value(control_plane, "bugagaric_ingested_lines_total") > 0
    assert value(control_plane, "bugagaric_ingestion_lag_seconds_count") >= 1
    start_task = {"grpc_service": "bugagaric.finetune.v1.FinetuneService", "grpc_method": "StartTask"}
    assert value(control_plane, "bugagaric_grpc_server_handled_total", **start_task, grpc_code="OK",
                 grpc_type="unary") == 1
    assert value(control_plane, "bugagaric_grpc_server_handling_seconds_count", **start_task) == 1
    assert value(control_plane, "bugagaric_grpc_server_handled_total", grpc_method="Heartbeat", grpc_code="OK") >= 1
    assert value(control_plane, "bugagaric_grpc_server_handled_total", grpc_method="GetTask") >= 1

    # Agent: the one trainer running, its one CPU slot (no GPU readings on this host).
    assert value(agent, "bugagaric_agent_running_trainers") == 1
    assert value(agent, "bugagaric_agent_devices", kind="cpu") == 1
    assert not samples(agent, "bugagaric_agent_gpu_utilization_percent")

    # What the dashboard queries is in these scrapes.
    scraped = exported_names([*gateway.values(), *control_plane.values(), *agent.values()])
    assert dashboard_metric_names() <= scraped, sorted(dashboard_metric_names() - scraped)
