"""Control-plane settings, from `BUGAGARIC_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ControlPlaneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUGAGARIC_", extra="ignore")

    control_plane_host: str = "127.0.0.1"
    control_plane_port: int = 50051
    database_url: str = "sqlite:///var/bugagaric.db"
    # Relative data and output paths in task configs resolve under the workspace (default: the current directory).
    workspace: Path = Field(default_factory=Path.cwd)
    # An agent whose last heartbeat is older than this gets no new tasks.
    agent_timeout_seconds: float = 10.0
    heartbeat_seconds: int = 2
    # The scheduler also wakes on every submit, stop and agent registration; this is its fallback tick.
    scheduler_interval_seconds: float = 1.0
    # Accounts. On first start (no users yet) an admin is created with this password, or a generated one written to
    # admin_password_file (owner-only) for ./start_finetune_system.sh to print once.
    admin_user: str = "admin"
    admin_password: str = ""
    admin_password_file: Path = Path("var/admin_password")
    token_ttl_hours: float = 24.0
    login_attempts_per_minute: int = 5
    # Shared secret between the control plane and its agents (required).
    cluster_token: str = ""
