"""Checks the backend settings when the agent's settings are read: a bad one stops the agent at start, naming the
environment variable."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from gpu_agent.settings import AgentSettings

BACKENDS = ("local", "kubernetes", "ray")


def check_backend_settings(settings: AgentSettings) -> None:
    backend = settings.agent_backend
    if backend not in BACKENDS:
        raise ValueError(f"BUGAGARIC_AGENT_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend != "local" and not settings.remote_python.strip():
        raise ValueError("BUGAGARIC_REMOTE_PYTHON must name the interpreter that runs trainers on the cluster")
    if backend == "ray":
        url = urlparse(settings.ray_address)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("BUGAGARIC_RAY_ADDRESS must be the Ray cluster's dashboard address, like "
                             f"http://127.0.0.1:8265, not {settings.ray_address!r}")
    if backend == "kubernetes":
        if not settings.k8s_image:
            raise ValueError("BUGAGARIC_K8S_IMAGE must name the trainer image when BUGAGARIC_AGENT_BACKEND=kubernetes")
        if bool(settings.k8s_volume_claim) == bool(settings.k8s_host_path):
            raise ValueError("set exactly one of BUGAGARIC_K8S_VOLUME_CLAIM and BUGAGARIC_K8S_HOST_PATH: the volume "
                             "that holds the workspace in the trainer's pod")
        if settings.k8s_host_path and not settings.k8s_host_path.startswith("/"):
            raise ValueError(f"BUGAGARIC_K8S_HOST_PATH must be an absolute path, not {settings.k8s_host_path!r}")
        from gpu_agent.backends.kubernetes import check_name

        check_name("BUGAGARIC_K8S_NAMESPACE", settings.k8s_namespace)
        if settings.k8s_volume_claim:
            check_name("BUGAGARIC_K8S_VOLUME_CLAIM", settings.k8s_volume_claim, subdomain=True)
        try:
            settings.agent_dir_path().relative_to(settings.workspace_path())
        except ValueError:
            raise ValueError("BUGAGARIC_AGENT_DIR must lie inside the workspace with BUGAGARIC_AGENT_BACKEND="
                             "kubernetes: the trainer's pod reads its config from the attempt directory on the "
                             "workspace volume") from None
