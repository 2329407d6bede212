"""The agent's task table: launches onto free devices, stops, adopts after a restart, and describes; knows nothing
about gRPC."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from gpu_agent import devices as device_claims
from gpu_agent import gang_launch, input_fetch, process_runner
from gpu_agent.backends import LaunchSpec, from_settings as backend_from_settings
from gpu_agent.blob_cache import BlobCache, CacheError, Held, InputSpec
from gpu_agent.chat_runner import ChatRunner
from gpu_agent.inventory import Inventory
from gpu_agent.model_inventory import ModelInventory, model_roots_env, place_models
from gpu_agent.settings import AgentSettings
from gpu_agent.shallow_checks import ShallowChecks
from gpu_agent.task_run import FINAL_STATUSES, TaskRun
from gpu_agent.warm_pool import WarmPool
from protos.addresses import host_of
from protos.metrics_http import MetricsServer
from protos.tls import Tls
from trainers import registry
from trainers.errors import ConfigError
from trainers.output_dirs import output_dir_value
from trainers.paths import is_ref, resolve

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
    def __init__(self, settings: AgentSettings, inventory: Inventory | None = None):
        self.settings = settings
        self.tls = Tls.from_settings(settings)  # its server, its registration and every input fetch use it
        self.workspace = settings.workspace_path()
        self.agent_dir = settings.agent_dir_path()
        self.hostname = socket.gethostname()
        self.agent_id = settings.agent_id  # filled in by the server once the port is bound
        self.inventory = inventory or Inventory.discover(settings.agent_slots, settings.agent_devices)
        self.models = ModelInventory(settings.models_dir_path(), self.workspace)
        self.cache_dir = settings.cache_dir_path()
        self.tasks: dict[str, TaskRun] = {}  # task id -> its latest attempt known to this agent
        self._shallow_checks: ShallowChecks | None = None
        self.warm_pool: WarmPool | None = None  # started by start_warm_pool (server.start_agent)
        # Set by server.start_agent.
        self.health: health_aio.HealthServicer | None = None
        self.registrar: Registrar | None = None
        self.metrics_server: MetricsServer | None = None  # Prometheus /metrics (gpu_agent.metrics)
        self.chat = ChatRunner(self)  # chat sessions hold devices too
        self.backend = backend_from_settings(settings)  # local processes, Kubernetes Jobs or Ray jobs

    def start_warm_pool(self) -> None:
        """Starts the warm trainer pool (BUGAGARIC_WARM_POOL_SIZE > 0); attempts start cold until it is ready."""
        if self.settings.warm_pool_size > 0 and self.warm_pool is None:
            self.warm_pool = WarmPool(size=self.settings.warm_pool_size, workspace=self.workspace,
                                      preload=self.settings.warm_pool_preload,
                                      env=process_runner.environment_without_secrets())
            self.warm_pool.start()

    def warm_pool_memory_bytes(self) -> int:
        """What the warm pool holds (proportional set size of its server and idle workers); 0 without one. Blocks
        for a local round trip: call it off the event loop."""
        return self.warm_pool.memory_bytes() if self.warm_pool is not None else 0

    @property
    def shallow_checks(self) -> ShallowChecks:
        """The submit-time checks' worker pool, started with the first check (an agent that gets none never pays)."""
        if self._shallow_checks is None:
            self._shallow_checks = ShallowChecks(self.workspace)
        return self._shallow_checks

    @property
    def slots(self) -> int:
        return len(self.inventory)

    @property
    def free_slots(self) -> int:
        held = self.held_devices()
        return sum(1 for index in self.inventory.indices if index not in held)

    def held_devices(self) -> set[int]:
        tasks = {index for run in self.tasks.values() if not run.ended for index in run.devices}
        return tasks | self.chat.held_devices()

    def running_task_ids(self) -> list[str]:
        return [task_id for task_id, run in self.tasks.items() if not run.ended]

    def launch(self, task_id: str, type_name: str, config_json: str, env: Mapping[str, str], *,
               devices: Sequence[int] = (), attempt: int = 0, log_seq_base: int = 0, metric_seq_base: int = 0,
               resume_from_checkpoint: str = "", inputs: Sequence[InputSpec] = (),
               gang: gang_launch.GangSpec | None = None) -> TaskRun:
        if not _TASK_ID.match(task_id):
            raise InvalidRequest(f"task_id {task_id!r} must be 1-128 of [A-Za-z0-9._-], starting alphanumeric")
        if attempt < 0:
            raise InvalidRequest(f"attempt must be >= 1, not {attempt}")
        attempt = attempt or 1
        try:
            task_type = registry.get(type_name)
            parsed = task_type.parse_config(config_json)
        except ConfigError as exc:
            raise InvalidRequest(exc.message) from None
        self._check_inputs(inputs)
        if gang is not None:
            try:
                gang_launch.check(gang)
            except gang_launch.BadGang as exc:
                raise InvalidRequest(str(exc)) from None
        current = self.tasks.get(task_id)
        if current is not None and not current.ended:
            raise AlreadyExists(f"task {task_id} is already running on this agent (attempt {current.attempt})")
        directory = process_runner.attempt_dir(self.agent_dir, task_id, attempt)
        if directory.exists():
            raise AlreadyExists(f"attempt {attempt} of task {task_id} was already launched on this agent")
        try:
            chosen = device_claims.claim(devices, self.inventory.indices, self.held_devices())
        except device_claims.BadDevices as exc:
            raise InvalidRequest(str(exc)) from None
        except device_claims.DevicesUnavailable as exc:
            raise NoFreeSlot(str(exc)) from None
        config_json, model_env = self.place_model(config_json, env)
        extra_env = {**env, **model_env, **device_claims.visible_devices_env(chosen, self.inventory.kind),
                     "BUGAGARIC_ATTEMPT": str(attempt)}
        if gang is not None and gang.resume_subpath:
            # Named by rank 0's host; every node resumes from its own copy of it.
            resume_from_checkpoint = gang.resume_from(self.output_dir_of(parsed, type_name, task_id))
        if resume_from_checkpoint:
            extra_env["BUGAGARIC_RESUME_FROM_CHECKPOINT"] = resume_from_checkpoint
        before_trainer: list[str] = []
        plan = None
        if inputs:
            plan = input_fetch.write_plan(
                directory, control_plane_address=self.settings.control_plane_address,
                cluster_token=self.settings.cluster_token, cache_dir=self.cache_dir,
                cache_max_bytes=self.settings.agent_cache_max_bytes, inputs=inputs, tls=self.tls)
            before_trainer = input_fetch.command(plan)
        launcher: list[str] = []
        if gang is not None:
            if gang.node_rank == 0 and not gang.rdzv_port:
                try:
                    gang = gang.with_port(gang_launch.choose_port(self.settings.gang_port_range))
                except gang_launch.BadGang as exc:
                    raise NoFreeSlot(str(exc)) from None
            extra_env.update(gang_launch.environment(gang))
            launcher = gang_launch.torchrun_argv(gang, len(chosen), task_type.entry_module,
                                                 directory / process_runner.CONFIG_FILE,
                                                 host_of(self.settings.advertise_address(0)))
        try:
            process = self.backend.launch(LaunchSpec(
                task_id=task_id, entry_module=task_type.entry_module, config_json=config_json, directory=directory,
                workspace=self.workspace, extra_env=extra_env, nproc=len(chosen), before_trainer=before_trainer,
                input_plan=plan, warm_pool=self.warm_pool, launcher_argv=launcher, device_kind=self.inventory.kind,
            ))
        except OSError:
            (directory / input_fetch.TOKEN_FILE).unlink(missing_ok=True)  # no fetch step will take it
            raise
        run = TaskRun(task_id=task_id, task_type=type_name, directory=directory, process=process,
                      default_grace=self.settings.stop_grace_seconds, attempt=attempt, devices=chosen,
                      log_seq_base=log_seq_base, metric_seq_base=metric_seq_base,
                      resume_from_checkpoint=resume_from_checkpoint,
                      output_dir=str(self.output_dir_of(parsed, type_name, task_id)),
                      rdzv_port=gang.rdzv_port if gang is not None and gang.node_rank == 0 else 0)
        self.tasks[task_id] = run
        run.start()
        log.info("task %s attempt %d: running on %s device(s) %s%s%s, %s", task_id, attempt, self.inventory.kind, chosen,
                 f" (data-parallel, {len(chosen)} processes)" if len(chosen) > 1 else "",
                 f" as node {gang.node_rank} of {gang.nnodes} (rendezvous {gang.rdzv_host}:{gang.rdzv_port})"
                 if gang is not None else "",
                 "forked from the warm pool" if process.reaper is not None else "started cold")
        return run

    def place_model(self, config_json: str, env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """The config with each held model's name replaced by its local path, and the model roots the trainer (or
        dry run) needs to read them."""
        try:
            config = json.loads(config_json or "{}")
        except ValueError:
            return config_json, {}  # the type's own parser says what is wrong with it
        if not isinstance(config, dict):
            return config_json, {}
        models = place_models(config, self.models)
        for model in models:
            log.info("model %s: held here, at %s", model.name, model.local_path)
        if models:
            config_json = json.dumps(config)
        return config_json, model_roots_env(self.models, models, dict(env))

    def output_dir_of(self, config: object, type_name: str, task_id: str) -> Path:
        """Where the trainer writes, as it decides it (trainers.output_dirs.check_task_paths): the config's
        output_dir against the workspace, else the default directory of the task."""
        return resolve(output_dir_value(config, type_name, task_id, self.workspace), self.workspace)

    def fetch_inputs(self, specs: Sequence[InputSpec]) -> list[Held]:
        """For a dry run in this process: the inputs held in the cache (blocking: call it off the event loop).
        CacheError when one cannot be fetched; release them with Held.close()."""
        self._check_inputs(specs)
        cache = BlobCache(self.cache_dir, self.settings.agent_cache_max_bytes, say=lambda line: log.info("%s", line))
        transfer = input_fetch.GrpcTransfer(self.settings.control_plane_address, self.settings.cluster_token, self.tls)
        try:
            return input_fetch.fetch_all(specs, cache, transfer)
        finally:
            transfer.close()

    def _check_inputs(self, inputs: Sequence[InputSpec]) -> None:
        if inputs and not self.settings.control_plane_address:
            raise InvalidRequest("inputs: this agent has no control plane to fetch them from "
                                 "(BUGAGARIC_CONTROL_PLANE_ADDRESS is empty)")
        for spec in inputs:
            if not is_ref(spec.ref):
                raise InvalidRequest(f"inputs: {spec.ref!r} is not a reference like dataset:<id> or task:<id>")
            try:
                spec.check()
            except CacheError as exc:
                raise InvalidRequest(f"inputs: {exc}") from None

    def adopt_leftovers(self) -> list[TaskRun]:
        """After a restart: watches again every attempt a previous agent launched that had not ended.

        A supervisor still alive (same pid and start time) is followed to its end; one that ended meanwhile has its
        output drained and its exit status read from exit.json. Either way the final status reaches the spool.
        """
        adopted: list[TaskRun] = []
        for path in process_runner.state_files(self.agent_dir):
            directory = path.parent
            if process_runner.attempt_number(directory) is None:
                continue  # a flat task dir from before attempts: not ours to resume
            state = process_runner.read_state(directory)
            if not state or state.get("status") in FINAL_STATUSES or not state.get("task_id"):
                continue
            task_id = state["task_id"]
            current = self.tasks.get(task_id)
            if current is not None and current.attempt > int(state.get("attempt") or 1):
                continue
            try:
                run = TaskRun.from_state(directory, state, self.settings.stop_grace_seconds)
                run.process = self.backend.adopt(directory, self.settings.stop_grace_seconds) or run.process
                how = run.adopt()
            except Exception:
                log.exception("could not adopt %s", directory)
                continue
            self.tasks[task_id] = run
            adopted.append(run)
            log.info("task %s attempt %d: adopted after an agent restart: %s", task_id, run.attempt, how)
        return adopted

    def get(self, task_id: str) -> TaskRun:
        run = self.tasks.get(task_id)
        if run is None:
            run = self._load_ended(task_id)
        if run is None:
            raise TaskNotFound(f"task {task_id} is not known to this agent")
        return run

    def _load_ended(self, task_id: str) -> TaskRun | None:
        """A task that ended before this agent started: its latest attempt, read back from disk for readers."""
        if not _TASK_ID.match(task_id):
            return None
        for directory in reversed(process_runner.attempt_dirs(self.agent_dir, task_id)):
            state = process_runner.read_state(directory)
            if state and state.get("status") in FINAL_STATUSES:
                run = TaskRun.from_state(directory, state, self.settings.stop_grace_seconds,
                                         adopted=bool(state.get("adopted")))
                self.tasks[task_id] = run
                return run
            if state:
                return None  # not ended, yet not adopted: nothing trustworthy to serve
        return None

    def stop(self, task_id: str, grace_seconds: float = 0.0) -> TaskRun:
        run = self.get(task_id)
        run.request_stop(grace_seconds)
        return run

    async def close(self) -> None:
        """Stops watching every task; running trainers keep running in their own sessions."""
        running = self.running_task_ids()
        await self.chat.close_all()
        for run in self.tasks.values():
            await run.detach()
        if running:
            log.info("agent stopping; %d trainer(s) keep running in their own sessions: %s", len(running),
                     ", ".join(f"{t} (pid {self.tasks[t].process.pid})" for t in running))
        self.inventory.close()
        if self.warm_pool is not None:
            await asyncio.to_thread(self.warm_pool.close)
        if self._shallow_checks is not None:
            self._shallow_checks.close()
