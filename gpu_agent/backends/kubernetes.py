"""Each attempt as a Kubernetes `batch/v1` Job (the official `kubernetes` client, imported only when chosen).

The pod runs the trainer command in the configured image, with the workspace volume (a PVC or a host path) mounted at
the workspace's own path: the config in the attempt directory, the datasets and models it names and the outputs it
writes are where the agent expects them. The agent follows the pod's log into the attempt's files (log_demux) and
records the Job's end in exit.json. Stop: the Job is deleted (its pod gets SIGTERM and, after the pod's
terminationGracePeriodSeconds, SIGKILL); a forced stop deletes the pod with no grace.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from gpu_agent.backends.base import (ExecutionBackend, LaunchSpec, RemoteRun, read_remote_state, remote_argv,
                                     remote_env, write_config, write_remote_state)
from gpu_agent.backends.log_demux import LogDemux
from trainers.errors import EXIT_STOPPED_EARLY, EXIT_TRAINER_ERROR

if TYPE_CHECKING:
    from gpu_agent.settings import AgentSettings

log = logging.getLogger(__name__)

CONTAINER = "trainer"
VOLUME = "workspace"
MANAGED_BY = "bugagaric"
# A pod that cannot start for one of these reasons never will: the attempt fails instead of waiting forever.
FATAL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                           "CreateContainerConfigError", "CreateContainerError"})
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_POLL_SECONDS = 1.0
_SAVE_SECONDS = 2.0  # how often the log position is saved for an agent restart


def check_name(variable: str, value: str, subdomain: bool = False) -> None:
    pattern = _DNS_SUBDOMAIN if subdomain else _DNS_LABEL
    if not pattern.match(value):
        kind = "DNS-1123 subdomain" if subdomain else "DNS-1123 label (lowercase letters, digits and '-')"
        raise ValueError(f"{variable} must be a Kubernetes {kind}, not {value!r}")


def _slug(text: str, limit: int) -> str:
    """Lowercase letters, digits and '-', starting and ending alphanumeric, at most limit characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-")


def job_name(task_id: str, attempt: int) -> str:
    """A DNS-1123 label (the Job controller copies it into a label, so at most 63): task ids may hold '.', '_' and
    uppercase, and two ids that differ only there must not share a name, hence the hash of the id itself."""
    digest = hashlib.sha256(task_id.encode()).hexdigest()[:8]
    return f"bgr-{_slug(task_id, 40) or 'task'}-a{attempt}-{digest}"


def label_value(text: str) -> str:
    """A valid label value (at most 63 of [A-Za-z0-9._-], alphanumeric at both ends); the exact id is an annotation."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def job_manifest(*, name: str, namespace: str, image: str, command: Sequence[str], env: Mapping[str, str],
                 workspace: str, task_id: str, attempt: int, gpus: int = 0, volume_claim: str = "",
                 host_path: str = "", gpu_resource: str = "nvidia.com/gpu", grace_seconds: float = 30.0,
                 cpus: int = 0) -> dict[str, Any]:
    """The Job the agent submits for one attempt, as the API takes it."""
    if bool(volume_claim) == bool(host_path):
        raise ValueError("exactly one of volume_claim and host_path")
    labels = {"app.kubernetes.io/managed-by": MANAGED_BY, "bugagaric/task": label_value(task_id),
              "bugagaric/attempt": str(attempt)}
    volume: dict[str, Any] = {"name": VOLUME}
    if volume_claim:
        volume["persistentVolumeClaim"] = {"claimName": volume_claim}
    else:
        volume["hostPath"] = {"path": host_path, "type": "Directory"}
    resources: dict[str, Any] = {}
    if gpus > 0:
        resources = {"limits": {gpu_resource: str(gpus)}}
    elif cpus > 0:
        resources = {"requests": {"cpu": str(cpus)}}
    container = {
        "name": CONTAINER, "image": image, "command": list(command), "workingDir": workspace,
        "env": [{"name": key, "value": value} for key, value in sorted(env.items())],
        "resources": resources,
        "volumeMounts": [{"name": VOLUME, "mountPath": workspace}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "annotations": {"bugagaric/task-id": task_id}},
        "spec": {
            "backoffLimit": 0,  # a failed attempt is retried by the control plane, as a new attempt
            "ttlSecondsAfterFinished": 24 * 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": max(1, int(round(grace_seconds))),
                    "containers": [container],
                    "volumes": [volume],
                },
            },
        },
    }


class KubernetesBackend(ExecutionBackend):
    name = "kubernetes"

    def __init__(self, *, namespace: str, image: str, volume_claim: str = "", host_path: str = "",
                 python: str = "python", gpu_resource: str = "nvidia.com/gpu", default_grace: float = 30.0,
                 api_client: Any = None):
        self.namespace = namespace
        self.image = image
        self.volume_claim = volume_claim
        self.host_path = host_path
        self.python = python
        self.gpu_resource = gpu_resource
        self.default_grace = default_grace
        self.api_client = api_client  # kubernetes.client.ApiClient; None: manifests only (no cluster)

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> KubernetesBackend:
        return cls(namespace=settings.k8s_namespace, image=settings.k8s_image,
                   volume_claim=settings.k8s_volume_claim, host_path=settings.k8s_host_path,
                   python=settings.remote_python, gpu_resource=settings.k8s_gpu_resource,
                   default_grace=settings.stop_grace_seconds, api_client=load_api_client(settings.k8s_context))

    def manifest(self, spec: LaunchSpec, attempt: int) -> dict[str, Any]:
        return job_manifest(
            name=job_name(spec.task_id, attempt), namespace=self.namespace, image=self.image,
            command=remote_argv(spec, self.python), env=remote_env(spec), workspace=str(spec.workspace),
            task_id=spec.task_id, attempt=attempt, gpus=spec.nproc if spec.device_kind == "gpu" else 0,
            cpus=spec.nproc if spec.device_kind != "gpu" else 0, volume_claim=self.volume_claim,
            host_path=self.host_path, gpu_resource=self.gpu_resource, grace_seconds=self.default_grace)

    def launch(self, spec: LaunchSpec) -> KubernetesRun:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        attempt = int(spec.extra_env.get("BUGAGARIC_ATTEMPT") or 1)
        write_config(spec)
        body = self.manifest(spec, attempt)
        name = body["metadata"]["name"]
        try:
            client.BatchV1Api(self.api_client).create_namespaced_job(self.namespace, client.V1Job.from_dict(body))
        except ApiException as exc:
            raise OSError(f"Kubernetes refused Job {self.namespace}/{name}: {exc.status} {exc.reason}: "
                          f"{(exc.body or '')[:500]}") from None
        write_remote_state(spec.directory, {"backend": self.name, "namespace": self.namespace, "job": name,
                                            "consumed": 0})
        log.info("task %s: submitted Kubernetes Job %s/%s", spec.task_id, self.namespace, name)
        run = KubernetesRun(self.api_client, self.namespace, name, spec.directory, self.default_grace)
        run.start()
        return run

    def adopt(self, directory: Path, default_grace: float) -> KubernetesRun | None:
        state = read_remote_state(directory)
        if not state or state.get("backend") != self.name:
            return None
        run = KubernetesRun(self.api_client, state["namespace"], state["job"], directory, default_grace,
                            skip=int(state.get("consumed") or 0))
        run.start()
        return run


def load_api_client(context: str = "") -> Any:
    """The client's own config loading: in-cluster where the agent runs in a pod, else ~/.kube/config (KUBECONFIG)."""
    from kubernetes import client, config

    if not context:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            pass
    try:
        return config.new_client_from_config(context=context or None)
    except (config.ConfigException, OSError) as exc:
        where = f"context {context!r} (BUGAGARIC_K8S_CONTEXT)" if context else "the in-cluster config or ~/.kube/config"
        raise ValueError(f"BUGAGARIC_AGENT_BACKEND=kubernetes: cannot load {where}: {exc}") from None


class KubernetesRun(RemoteRun):
    def __init__(self, api_client: Any, namespace: str, name: str, directory: Path, default_grace: float,
                 skip: int = 0):
        super().__init__(directory, default_grace)
        self.api_client = api_client
        self.namespace = namespace
        self.name = name
        self.skip = skip  # bytes of the pod's log an earlier agent already wrote to the attempt's files

    def describe(self) -> str:
        return f"Kubernetes Job {self.namespace}/{self.name}"

    def _apis(self) -> tuple[Any, Any]:
        from kubernetes import client

        return client.BatchV1Api(self.api_client), client.CoreV1Api(self.api_client)

    def follow(self) -> int | None:
        from kubernetes.client.exceptions import ApiException

        batch, core = self._apis()
        demux = LogDemux(self.directory)
        try:
            pod = self._wait_for_container(core, batch, demux)
            if isinstance(pod, int):
                return pod
            if pod is not None:
                self._stream_log(core, pod, demux)
            return self._final_code(batch, core, pod)
        except ApiException as exc:
            self.note_error(f"{self.describe()}: {exc.status} {exc.reason}")
            return None
        finally:
            demux.close()
            self._save(demux)

    def _save(self, demux: LogDemux) -> None:
        write_remote_state(self.directory, {"backend": "kubernetes", "namespace": self.namespace, "job": self.name,
                                            "consumed": self.skip + demux.consumed})

    def _pods(self, core: Any) -> list[Any]:
        return core.list_namespaced_pod(self.namespace, label_selector=f"job-name={self.name}").items

    def _job(self, batch: Any) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return batch.read_namespaced_job_status(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _wait_for_container(self, core: Any, batch: Any, demux: LogDemux) -> str | int | None:
        """The pod's name once its container has started (or ended); an exit code when it never will."""
        said = ""
        while True:
            for pod in self._pods(core):
                statuses = pod.status.container_statuses or []
                state = statuses[0].state if statuses else None
                if state is not None and (state.running or state.terminated):
                    return pod.metadata.name
                waiting = state.waiting if state is not None else None
                if waiting is not None and waiting.reason in FATAL_WAITING:
                    self.note_error(f"{self.describe()}: pod {pod.metadata.name} cannot start: "
                                    f"{waiting.reason}: {waiting.message or ''}".strip())
                    self._delete(grace=0)
                    return EXIT_TRAINER_ERROR
                why = (waiting.reason if waiting is not None else "") or pod.status.phase or ""
                for condition in pod.status.conditions or []:
                    if condition.status == "False" and condition.message:
                        why = f"{condition.reason}: {condition.message}"
                if why and why != said:
                    demux.note(f"kubernetes: pod {pod.metadata.name} waiting: {why}")
                    said = why
            job = self._job(batch)
            if job is None or self.stop_requested:
                return EXIT_STOPPED_EARLY if self.stop_requested else self._gone()
            if self._job_end(job) is not None:
                return None  # ended without a container that ran (e.g. deleted pod): the Job's status says how
            time.sleep(_POLL_SECONDS)

    def _stream_log(self, core: Any, pod: str, demux: LogDemux) -> None:
        response = core.read_namespaced_pod_log(pod, self.namespace, container=CONTAINER, follow=True,
                                                _preload_content=False)
        skip = self.skip
        saved = time.monotonic()
        try:
            for chunk in response.stream(64 * 1024):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                if chunk:
                    demux.feed(chunk)
                if time.monotonic() - saved > _SAVE_SECONDS:
                    self._save(demux)
                    saved = time.monotonic()
        finally:
            response.release_conn()

    def _final_code(self, batch: Any, core: Any, pod: str | None) -> int | None:
        while True:
            job = self._job(batch)
            if job is None:  # deleted: by our stop, or by someone else
                return self._terminated_code(core, pod) or (EXIT_STOPPED_EARLY if self.stop_requested
                                                             else self._gone())
            end = self._job_end(job)
            if end == "Complete":
                return 0
            if end == "Failed":
                code = self._terminated_code(core, pod)
                if code is None:
                    reasons = [f"{c.reason}: {c.message}" for c in job.status.conditions or [] if c.type == "Failed"]
                    self.note_error(f"{self.describe()} failed: {'; '.join(reasons) or 'no reason given'}")
                return code if code is not None else EXIT_TRAINER_ERROR
            if self.stop_requested:
                code = self._terminated_code(core, pod)
                if code is not None:
                    return code
            time.sleep(_POLL_SECONDS)

    @staticmethod
    def _job_end(job: Any) -> str | None:
        for condition in job.status.conditions or []:
            if condition.type in ("Complete", "Failed") and condition.status == "True":
                return condition.type
        return None

    def _terminated_code(self, core: Any, pod: str | None) -> int | None:
        from kubernetes.client.exceptions import ApiException

        if pod is None:
            return None
        try:
            status = core.read_namespaced_pod_status(pod, self.namespace).status
        except ApiException:
            return None
        for container in status.container_statuses or []:
            if container.name == CONTAINER and container.state and container.state.terminated:
                return int(container.state.terminated.exit_code)
        return None

    def _gone(self) -> int:
        self.note_error(f"{self.describe()} was deleted outside the agent")
        return EXIT_TRAINER_ERROR

    def _delete(self, grace: int | None) -> None:
        from kubernetes.client.exceptions import ApiException

        batch, core = self._apis()
        try:
            batch.delete_namespaced_job(self.name, self.namespace, propagation_policy="Background",
                                        grace_period_seconds=grace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        if grace == 0:
            # The Job's deletion leaves its pods to the garbage collector, with their own grace: force them too.
            core.delete_collection_namespaced_pod(self.namespace, label_selector=f"job-name={self.name}",
                                                  grace_period_seconds=0)

    def _stop(self, grace: float) -> None:
        # The pod's terminationGracePeriodSeconds (the agent's stop grace) is the time between SIGTERM and SIGKILL.
        self._delete(grace=None)

    def _kill(self) -> None:
        self._delete(grace=0)
