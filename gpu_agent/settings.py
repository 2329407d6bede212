"""The agent's settings, read from `BUGAGARIC_*` environment variables (see README for the full list)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUGAGARIC_", extra="ignore")

    agent_host: str = "127.0.0.1"
    agent_port: int = 50061  # 0: an ephemeral port (tests)
    # Prometheus metrics (gpu_agent.metrics) over HTTP on a port of their own: /metrics. Port 0 takes a free one
    # (logged); host "" means agent_host.
    agent_metrics_host: str = ""
    agent_metrics_port: int = Field(default=9160, ge=0, le=65535)
    # What the control plane dials; "" -> host:bound_port, with 0.0.0.0 replaced by 127.0.0.1.
    agent_advertise_address: str = ""
    # Multi-node attempts: node 0 hosts torchrun's rendezvous on a free port of this range ("29400-29499"; "": any).
    gang_port_range: str = ""
    agent_id: str = ""  # "" -> "<hostname>-<port>"
    agent_slots: int = 1  # CPU slots, used where NVML finds no GPU
    agent_devices: str = "auto"  # "auto": GPUs through NVML if any, else CPU slots; "cpu": CPU slots only
    agent_dir: str = "var/agent"  # relative -> under the workspace
    workspace: str = ""  # "" -> the current directory
    stop_grace_seconds: float = 30.0
    control_plane_address: str = "127.0.0.1:50051"  # "": don't register (unit tests)
    heartbeat_seconds: float = 2.0
    # Shared secret with the control plane: sent on registration and heartbeats, required on every GpuAgent call.
    cluster_token: str = ""
    # HF model directories this agent offers (reported to the control plane); relative -> under the workspace.
    models_dir: str = "models"
    # Datasets and published models fetched from the control plane, kept by sha256; "" -> <agent_dir>/cache.
    agent_cache_dir: str = ""
    agent_cache_max_bytes: int = 20 * 1024**3
    # Workers the warm trainer pool keeps forked and ready (gpu_agent.fork_server); 0: every attempt starts cold, as
    # `python -m trainers.<type>`. One by default: an agent starts one attempt per launch call, the pool forks the next
    # worker right after (tens of ms), and the fork server holding the libraries costs ~0.5-1 GiB whatever the size.
    warm_pool_size: int = 1
    # Modules the pool imports up front, comma-separated; "" -> torch, transformers, datasets, peft, trl,
    # sentence-transformers and the trainer modules (gpu_agent.fork_server.DEFAULT_PRELOAD).
    warm_pool_preload: str = ""
    # TLS for its gRPC server and its channels to the control plane (protos.tls; README "TLS"). Unset: plaintext.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_client_auth: bool = False  # mutual TLS: refuse a control plane without a certificate from the CA
    tls_server_name: str = ""
    # Where trainers run (gpu_agent.backends; README "Running trainers on Kubernetes or Ray"): "local" processes, a
    # Kubernetes Job per attempt, or a job on an existing Ray cluster.
    agent_backend: str = "local"
    remote_python: str = "python"  # the interpreter a Job's image / the Ray cluster runs trainers with
    ray_address: str = ""  # the Ray cluster's dashboard (job submission) address, e.g. http://127.0.0.1:8265
    k8s_namespace: str = "default"
    k8s_image: str = ""  # holds this project and its trainer dependencies
    k8s_context: str = ""  # "": in-cluster config, else ~/.kube/config's current context
    # The volume holding the workspace (datasets, models, outputs and the attempt directories), mounted in the pod at
    # the workspace's own path: a PersistentVolumeClaim's name, or a directory on the node.
    k8s_volume_claim: str = ""
    k8s_host_path: str = ""
    k8s_gpu_resource: str = "nvidia.com/gpu"

    @model_validator(mode="after")
    def _check_backend(self) -> "AgentSettings":
        from gpu_agent.backends.settings_check import check_backend_settings

        check_backend_settings(self)
        return self

    def workspace_path(self) -> Path:
        return Path(self.workspace or os.getcwd()).expanduser().resolve()

    def agent_dir_path(self) -> Path:
        path = Path(self.agent_dir).expanduser()
        return path if path.is_absolute() else self.workspace_path() / path

    def models_dir_path(self) -> Path:
        path = Path(self.models_dir).expanduser()
        return path if path.is_absolute() else self.workspace_path() / path

    def cache_dir_path(self) -> Path:
        if not self.agent_cache_dir:
            return self.agent_dir_path() / "cache"
        path = Path(self.agent_cache_dir).expanduser()
        return path if path.is_absolute() else self.workspace_path() / path

    def advertise_address(self, bound_port: int) -> str:
        if self.agent_advertise_address:
            return self.agent_advertise_address
        host = self.agent_host
        if host in ("0.0.0.0", "", "::", "[::]"):
            host = "127.0.0.1"
        return f"{host}:{bound_port}"

    def resolved_agent_id(self, bound_port: int) -> str:
        return self.agent_id or f"{socket.gethostname()}-{bound_port}"
