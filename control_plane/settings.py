"""Control-plane settings, from `BUGAGARIC_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ControlPlaneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUGAGARIC_", extra="ignore")

    control_plane_host: str = "127.0.0.1"
    control_plane_port: int = 50051
    # Prometheus metrics (control_plane.metrics) over HTTP on a port of their own: /metrics. Port 0 takes a free one
    # (logged); host "" means control_plane_host.
    control_plane_metrics_host: str = ""
    control_plane_metrics_port: int = Field(default=9150, ge=0, le=65535)
    database_url: str = "sqlite:///var/bugagaric.db"
    # The control plane's own directory (its state: var/ with the store and the blobs). It reads no task data: paths
    # in task configs are paths on the agents.
    workspace: Path = Field(default_factory=Path.cwd)
    # Uploaded datasets and published models, content-addressed (relative: under the workspace).
    blob_dir: Path = Path("var/blobs")
    # The largest dataset upload (bytes); the gateway answers 413 past it.
    max_dataset_bytes: int = 2 * 1024**3
    # An agent whose last heartbeat is older than this gets no new tasks.
    agent_timeout_seconds: float = 10.0
    # ... and one silent for this long is taken for gone: its tasks are requeued (retries left) or failed agent_lost.
    # Until then a returning agent's tasks go on and end in their real status with every line.
    agent_gone_seconds: float = 300.0
    # Submitted data given by path are checked on a live agent (a shallow dry run), for at most the timeout. A submit
    # waits the budget for its check; a longer one finishes after the answer, the task waiting in the queue meanwhile.
    data_check_timeout_seconds: float = 900.0
    submit_check_budget_seconds: float = 2.0
    heartbeat_seconds: int = 2
    # The scheduler also wakes on every submit, stop and agent registration; this is its fallback tick.
    scheduler_interval_seconds: float = 1.0
    # Accounts. On first start (no users yet) an admin is created with this password, or a generated one written to
    # admin_password_file (owner-only) for ./start_finetune_system.sh to print once.
    admin_user: str = "admin"
    admin_password: str = ""
    admin_password_file: Path = Path("var/admin_password")
    token_ttl_hours: float = 24.0
    # Failed logins (kept in the store): after this many failures a key backs off — its next attempt waits
    # login_backoff_base_seconds, doubling with each further failure up to login_backoff_max_seconds; a key quiet for
    # login_quiet_window_seconds starts again from zero. Keys: (username, client address), client address across
    # usernames, username across addresses.
    login_limit_per_user_address: int = 5
    login_limit_per_address: int = 20
    login_limit_per_user: int = 30
    login_backoff_base_seconds: float = 1.0
    login_backoff_max_seconds: float = 300.0
    login_quiet_window_seconds: float = 900.0
    # Peers (addresses or CIDRs, comma-separated) whose `bugagaric-client-address` metadata names the client, e.g. the
    # gateway; any other caller counts under its own address. Empty trusts nobody.
    trusted_proxies: str = "127.0.0.1,::1"
    # Thread pools of their own: argon2 (logins, new users) and token checks, so neither can starve the other.
    password_threads: int = 2
    token_check_threads: int = 4
    # A chat session (a finished task's model loaded on an agent's device, held like a task's) closes after this long
    # unused, freeing its device.
    chat_idle_seconds: float = Field(default=300.0, gt=0)
    # Shared secret between the control plane and its agents (required).
    cluster_token: str = ""
    # Webhooks (control_plane/webhook_dispatcher.py): a failed try (network error, timeout, non-2xx) is made again
    # after base, 2*base, 4*base... seconds (at most max), webhook_max_attempts tries in all. Endpoints on loopback,
    # private or link-local addresses are refused unless allowed (a user must not reach internal services).
    webhook_max_attempts: int = Field(default=5, ge=1)
    webhook_backoff_base_seconds: float = Field(default=30.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_allow_private_urls: bool = False
    # Ended deliveries older than this leave the delivery log (pending ones stay).
    webhook_log_retention_days: float = Field(default=30.0, gt=0)
    # TLS for its gRPC server and its channels to the agents (protos.tls; README "TLS"). Unset: plaintext.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_client_auth: bool = False  # mutual TLS: refuse clients (agents, gateway) without a certificate from the CA
    tls_server_name: str = ""
    # How often the store is probed for the gRPC health service (NOT_SERVING while it does not answer).
    store_probe_seconds: float = Field(default=5.0, gt=0)
