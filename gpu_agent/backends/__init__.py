"""Where an agent runs its trainers: local processes (the default), Kubernetes Jobs or Ray jobs.

Every backend leaves an attempt's output in the attempt directory's files (stdout.log, stderr.log, metrics.jsonl,
exit.json), so the agent's spool and tail code (gpu_agent.task_run, gpu_agent.log_spool) is the same for all three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpu_agent.backends.base import ExecutionBackend, LaunchSpec, RunHandle

if TYPE_CHECKING:
    from gpu_agent.settings import AgentSettings

from gpu_agent.backends.settings_check import BACKENDS

__all__ = ["BACKENDS", "ExecutionBackend", "LaunchSpec", "RunHandle", "from_settings"]


def from_settings(settings: AgentSettings) -> ExecutionBackend:
    """The backend BUGAGARIC_AGENT_BACKEND names; its client library is imported only here, when it is chosen."""
    name = settings.agent_backend
    if name == "kubernetes":
        from gpu_agent.backends.kubernetes import KubernetesBackend

        return KubernetesBackend.from_settings(settings)
    if name == "ray":
        from gpu_agent.backends.ray_backend import RayBackend

        return RayBackend.from_settings(settings)
    from gpu_agent.backends.local import LocalBackend

    return LocalBackend()
