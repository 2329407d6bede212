"""Today's behaviour: each attempt a local process tree under gpu_agent.supervisor (gpu_agent.process_runner)."""

from __future__ import annotations

import signal
from dataclasses import dataclass, fields

from gpu_agent import process_runner
from gpu_agent.backends.base import ExecutionBackend, LaunchSpec
from gpu_agent.process_runner import TrainerProcess


@dataclass
class LocalRun(TrainerProcess):
    """A TrainerProcess (what TaskRun has always watched) with the rest of the RunHandle surface."""

    def request_stop(self, grace: float | None = None) -> None:
        self.signal_group(signal.SIGTERM)  # TaskRun's own timer sends SIGKILL after the grace

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)

    def describe(self) -> str:
        return f"supervisor pid {self.pid}"


class LocalBackend(ExecutionBackend):
    name = "local"

    def launch(self, spec: LaunchSpec) -> LocalRun:
        process = process_runner.launch(
            task_id=spec.task_id, entry_module=spec.entry_module, config_json=spec.config_json,
            directory=spec.directory, workspace=spec.workspace, extra_env=spec.extra_env, nproc=spec.nproc,
            before_trainer=spec.before_trainer, input_plan=spec.input_plan, warm_pool=spec.warm_pool,
            launcher_argv=spec.launcher_argv)
        return LocalRun(**{f.name: getattr(process, f.name) for f in fields(process)})
