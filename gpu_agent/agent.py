"""The agent's task table: launches into free slots, stops, and describes; knows nothing about gRPC."""

from __future__ import annotations

import logging
import re
import socket
from typing import TYPE_CHECKING, Mapping

from gpu_agent import devices, process_runner
from gpu_agent.settings import AgentSettings
from gpu_agent.task_run import TaskRun
from trainers import registry
from trainers.errors import ConfigError

if TYPE_CHECKING:
    from grpc_health.v1.health import aio as health_aio

    from gpu_agent.registration import Registrar

log = logging.getLogger(__name__)

# The task id names a directory: keep it to characters that cannot climb out of tasks/.
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class AgentError(Exception):
    pass


class InvalidRequest(AgentError):
    pass


class AlreadyExists(AgentError):
    pass


class NoFreeSlot(AgentError):
    pass


class TaskNotFound(AgentError):
    pass


class Agent:
    def __init__(self, settings: AgentSettings):
        self.settings = settings
        self.workspace = settings.workspace_path()
        self.agent_dir = settings.agent_dir_path()
        self.hostname = socket.gethostname()
        self.agent_id = settings.agent_id  # filled in by the server once the port is bound
        self.slots = settings.agent_slots
        self.tasks: dict[str, TaskRun] = {}
        self.devices: dict[str, list[int]] = {}  # task id -> the device indices it was given
        # Set by server.start_agent.
        self.health: health_aio.HealthServicer | None = None
        self.registrar: Registrar | None = None

    @property
    def free_slots(self) -> int:
        return max(0, self.slots - len(self.running_task_ids()))

    def running_task_ids(self) -> list[str]:
        return [task_id for task_id, run in self.tasks.items() if not run.ended]

    def launch(self, task_id: str, type_name: str, config_json: str, env: Mapping[str, str]) -> TaskRun:
        if not _TASK_ID.match(task_id):
            raise InvalidRequest(f"task_id {task_id!r} must be 1-128 of [A-Za-z0-9._-], starting alphanumeric")
        try:
            task_type = registry.get(type_name)
            config = task_type.parse_config(config_json)
        except ConfigError as exc:
            raise InvalidRequest(exc.message) from None
        directory = process_runner.task_dir(self.agent_dir, task_id)
        if task_id in self.tasks or (directory / process_runner.STATE_FILE).exists():
            raise AlreadyExists(f"task {task_id} was already launched on this agent")
        if self.free_slots <= 0:
            raise NoFreeSlot(f"all {self.slots} slot(s) are busy: {', '.join(self.running_task_ids())}")
        busy = [index for t in self.running_task_ids() for index in self.devices.get(t, [])]
        try:
            chosen = devices.pick_devices(getattr(config, "gpu_vis", None), getattr(config, "gpus", None), busy, self.slots)
        except devices.DevicesBusy as exc:
            raise NoFreeSlot(str(exc)) from None
        process = process_runner.launch(
            task_id=task_id, entry_module=task_type.entry_module, config_json=config_json, directory=directory,
            workspace=self.workspace, extra_env={**env, **devices.visible_devices_env(chosen)},
        )
        self.devices[task_id] = chosen
        run = TaskRun(task_id=task_id, task_type=type_name, directory=directory, process=process,
                      default_grace=self.settings.stop_grace_seconds)
        self.tasks[task_id] = run
        run.start()
        return run

    def get(self, task_id: str) -> TaskRun:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise TaskNotFound(f"task {task_id} is not known to this agent") from None

    def stop(self, task_id: str, grace_seconds: float = 0.0) -> TaskRun:
        run = self.get(task_id)
        run.request_stop(grace_seconds)
        return run

    async def close(self) -> None:
        """Stops watching every task; running trainers keep running in their own sessions."""
        running = self.running_task_ids()
        for run in self.tasks.values():
            await run.detach()
        if running:
            log.info("agent stopping; %d trainer(s) keep running in their own sessions: %s", len(running),
                     ", ".join(f"{t} (pid {self.tasks[t].process.pid})" for t in running))
