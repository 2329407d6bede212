"""Each attempt as a job on an existing Ray cluster (`ray.job_submission`, imported only when chosen).

The entrypoint is the trainer command, run in the workspace (which the cluster's nodes must see at the same path: a
shared filesystem, or a cluster on this host); the runtime_env carries the task's env and ships this agent's
`trainers`, `gpu_agent` and `protos` packages (py_modules), so the cluster imports the same trainer code the agent
checked the config with. The job's log (stdout and stderr merged) is followed into the attempt's files (log_demux);
its final JobStatus becomes exit.json. Stop: Ray's stop_job sends SIGTERM to the entrypoint's process tree and SIGKILL
after RAY_JOB_STOP_WAIT_TIME_S, which each job gets set to the agent's stop grace.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shlex
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gpu_agent
import protos
import trainers
from gpu_agent.backends.base import (ExecutionBackend, LaunchSpec, RemoteRun, read_remote_state, remote_argv,
                                     remote_env, write_config, write_remote_state)
from gpu_agent.backends.log_demux import LogDemux
from trainers.errors import EXIT_STOPPED_EARLY, EXIT_TRAINER_ERROR

if TYPE_CHECKING:
    from gpu_agent.settings import AgentSettings

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
_SAVE_SECONDS = 2.0
_SHIPPED = (trainers, gpu_agent, protos)


def entrypoint(spec: LaunchSpec, python: str) -> str:
    """A shell line (Ray runs entrypoints with a shell): the trainer in the workspace, exec'd so that Ray's SIGTERM
    reaches it rather than a shell."""
    return f"cd {shlex.quote(str(spec.workspace))} && exec {shlex.join(remote_argv(spec, python))}"


def runtime_env(spec: LaunchSpec, default_grace: float) -> dict[str, Any]:
    env = remote_env(spec)
    # Read by the job's supervisor actor, which gets the same env_vars: the grace between its SIGTERM and SIGKILL.
    env["RAY_JOB_STOP_WAIT_TIME_S"] = str(max(1, math.ceil(default_grace)))
    return {"env_vars": env, "py_modules": [str(Path(module.__file__).parent) for module in _SHIPPED],
            "excludes": ["__pycache__", "*.pyc"]}


class RayBackend(ExecutionBackend):
    name = "ray"

    def __init__(self, address: str, python: str = "python", default_grace: float = 30.0):
        self.address = address
        self.python = python
        self.default_grace = default_grace
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> RayBackend:
        return cls(settings.ray_address, settings.remote_python, settings.stop_grace_seconds)

    @property
    def client(self) -> Any:
        """Connected on first use: an agent starts (and reports its other work) while the cluster is still down."""
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address)
            except (ConnectionError, RuntimeError) as exc:
                raise OSError(f"cannot reach the Ray cluster at {self.address} (BUGAGARIC_RAY_ADDRESS): {exc}") \
                    from None
        return self._client

    def launch(self, spec: LaunchSpec) -> RayRun:
        write_config(spec)
        job_id = f"bugagaric-{spec.task_id}-{spec.directory.name}-{uuid.uuid4().hex[:8]}"
        gpus = spec.nproc if spec.device_kind == "gpu" else 0
        try:
            self.client.submit_job(entrypoint=entrypoint(spec, self.python), submission_id=job_id,
                                   runtime_env=runtime_env(spec, self.default_grace),
                                   entrypoint_num_gpus=gpus or None, entrypoint_num_cpus=None if gpus else spec.nproc,
                                   metadata={"bugagaric_task_id": spec.task_id})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise OSError(f"the Ray cluster at {self.address} refused job {job_id}: {exc}") from None
        write_remote_state(spec.directory, {"backend": self.name, "address": self.address, "job_id": job_id,
                                            "consumed": 0})
        log.info("task %s: submitted Ray job %s to %s", spec.task_id, job_id, self.address)
        run = RayRun(self.client, job_id, spec.directory, self.default_grace)
        run.start()
        return run

    def adopt(self, directory: Path, default_grace: float) -> RayRun | None:
        state = read_remote_state(directory)
        if not state or state.get("backend") != self.name:
            return None
        run = RayRun(self.client, state["job_id"], directory, default_grace, skip=int(state.get("consumed") or 0))
        run.start()
        return run


class RayRun(RemoteRun):
    def __init__(self, client: Any, job_id: str, directory: Path, default_grace: float, skip: int = 0):
        super().__init__(directory, default_grace)
        self.client = client
        self.job_id = job_id
        self.skip = skip  # characters of the job's log an earlier agent (or stream) already wrote

    def describe(self) -> str:
        return f"Ray job {self.job_id}"

    def follow(self) -> int | None:
        demux = LogDemux(self.directory)
        demux.consumed = self.skip
        try:
            while True:
                try:
                    asyncio.run(self._tail(demux))
                except Exception as exc:  # noqa: BLE001 - the stream broke: poll the status, stream again
                    log.warning("%s: log stream broke (%s); reading it again", self.describe(), exc)
                info = self.client.get_job_info(self.job_id)
                if info.status.is_terminal():
                    # Whatever the stream missed: the log holds everything from its first character.
                    rest = self.client.get_job_logs(self.job_id)[demux.consumed:]
                    if rest:
                        demux.feed(rest)
                    return self._exit_code(info)
                time.sleep(_POLL_SECONDS)
        finally:
            demux.close()
            self._save(demux)

    async def _tail(self, demux: LogDemux) -> None:
        """Streams the log from its start (Ray's tail always does), dropping what was already taken."""
        seen = 0
        saved = time.monotonic()
        async for chunk in self.client.tail_job_logs(self.job_id):
            new = chunk[max(0, demux.consumed - seen):]
            seen += len(chunk)
            if new:
                demux.feed(new)
            if time.monotonic() - saved > _SAVE_SECONDS:
                self._save(demux)
                saved = time.monotonic()

    def _save(self, demux: LogDemux) -> None:
        write_remote_state(self.directory, {"backend": "ray", "job_id": self.job_id, "consumed": demux.consumed})

    def _exit_code(self, info: Any) -> int:
        from ray.job_submission import JobStatus

        if info.status == JobStatus.SUCCEEDED:
            return 0
        if info.status == JobStatus.STOPPED:
            return EXIT_STOPPED_EARLY  # Ray records no code for a stopped job: the trainer's code for a SIGTERM stop
        if info.driver_exit_code is None:  # it never ran (e.g. its runtime_env could not be set up)
            self.note_error(f"{self.describe()} failed: {info.message or 'no reason given'}")
            return EXIT_TRAINER_ERROR
        return int(info.driver_exit_code)

    def _stop(self, grace: float) -> None:
        self.client.stop_job(self.job_id)

    def _kill(self) -> None:
        # Ray has no forced stop of its own: a second stop_job is a no-op on a stopping job, and its supervisor
        # SIGKILLs the entrypoint after RAY_JOB_STOP_WAIT_TIME_S anyway.
        self.client.stop_job(self.job_id)
