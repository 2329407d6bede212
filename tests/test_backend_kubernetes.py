"""The Kubernetes backend: the Jobs it would submit, the stream demux every remote backend shares (with the metrics
transport on the trainer's side), the backend settings; and a real cluster when one is configured:

    BUGAGARIC_TEST_K8S_CONTEXT=kind-kind           a kubeconfig context
    BUGAGARIC_TEST_K8S_IMAGE=bugagaric:dev         an image holding this project and its trainer dependencies
    BUGAGARIC_TEST_K8S_WORKSPACE=/srv/bugagaric    a directory this machine and the cluster's node share at the same
                                                   path (mounted into the pod as a hostPath)
    BUGAGARIC_TEST_K8S_NAMESPACE=default           optional
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from gpu_agent.backends.base import LaunchSpec
from gpu_agent.backends.kubernetes import (KubernetesBackend, _DNS_LABEL, check_name, job_manifest, job_name,
                                           label_value)
from gpu_agent.backends.log_demux import LogDemux
from gpu_agent.log_spool import SpoolWriter
from gpu_agent.process_runner import read_exit_file
from gpu_agent.settings import AgentSettings
from tests.helpers.tiny_models import write_sft_rows
from trainers.common.metrics import METRIC_LINE_PREFIX, MetricsEmitter

pytestmark = pytest.mark.timeout(600)


def _spec(tmp_path: Path, task_id: str = "My_Task.v2", nproc: int = 1, kind: str = "gpu", **env: str) -> LaunchSpec:
    return LaunchSpec(task_id=task_id, entry_module="trainers.sft", config_json="{}",
                      directory=tmp_path / "var/agent/tasks" / task_id / "attempt-3", workspace=tmp_path,
                      extra_env={"BUGAGARIC_ATTEMPT": "3", "HF_HUB_OFFLINE": "1", **env}, nproc=nproc,
                      device_kind=kind)


def _backend(**overrides) -> KubernetesBackend:
    return KubernetesBackend(**{"namespace": "train", "image": "registry.local/bugagaric:1", "volume_claim": "ws",
                                "default_grace": 45.0, **overrides})


def _container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_the_job_of_a_two_gpu_attempt(tmp_path):
    spec = _spec(tmp_path, nproc=2, CUDA_VISIBLE_DEVICES="0,1", BUGAGARIC_CLUSTER_TOKEN="secret",
                 BUGAGARIC_ADMIN_PASSWORD="secret")
    manifest = _backend().manifest(spec, attempt=3)
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    meta = manifest["metadata"]
    assert meta["namespace"] == "train" and meta["annotations"]["bugagaric/task-id"] == "My_Task.v2"
    assert meta["labels"]["bugagaric/task"] == "My_Task.v2" and meta["labels"]["bugagaric/attempt"] == "3"
    job_spec = manifest["spec"]
    assert job_spec["backoffLimit"] == 0  # retries are new attempts, the control plane's
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["terminationGracePeriodSeconds"] == 45

    container = _container(manifest)
    assert container["image"] == "registry.local/bugagaric:1"
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "2"}}
    # Two devices: torchrun in the pod, on a port it picks; the config from the attempt directory on the volume.
    assert container["command"] == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                    "-m", "trainers.sft", "--config", str(spec.directory / "config.json")]
    assert container["workingDir"] == str(tmp_path)
    assert container["volumeMounts"] == [{"name": "workspace", "mountPath": str(tmp_path)}]
    assert pod["volumes"] == [{"name": "workspace", "persistentVolumeClaim": {"claimName": "ws"}}]

    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["BUGAGARIC_METRICS_FILE"] == "-" and env["BUGAGARIC_TASK_ID"] == "My_Task.v2"
    assert env["BUGAGARIC_WORKSPACE"] == str(tmp_path) and env["HF_HUB_OFFLINE"] == "1"
    # Never the agent's secrets, nor this host's device numbering (the device plugin picks the pod's GPUs).
    assert not {"BUGAGARIC_CLUSTER_TOKEN", "BUGAGARIC_ADMIN_PASSWORD", "CUDA_VISIBLE_DEVICES"} & set(env)
    # Nor anything else of the agent's own environment.
    assert "PATH" not in env and "HOME" not in env


def test_a_cpu_attempt_requests_no_gpu_and_a_host_path_volume(tmp_path):
    manifest = _backend(volume_claim="", host_path="/srv/ws", gpu_resource="amd.com/gpu").manifest(
        _spec(tmp_path, kind="cpu"), attempt=1)
    container = _container(manifest)
    assert "limits" not in container["resources"] and container["resources"] == {"requests": {"cpu": "1"}}
    assert container["command"] == ["python", "-m", "trainers.sft", "--config",
                                    str(tmp_path / "var/agent/tasks/My_Task.v2/attempt-3/config.json")]
    assert manifest["spec"]["template"]["spec"]["volumes"] == [
        {"name": "workspace", "hostPath": {"path": "/srv/ws", "type": "Directory"}}]


def test_the_fetch_step_runs_with_the_pods_python(tmp_path):
    spec = LaunchSpec(task_id="t", entry_module="trainers.sft", config_json="{}", directory=tmp_path / "a",
                      workspace=tmp_path,
                      before_trainer=[sys.executable, "-m", "gpu_agent.input_fetch", "--plan", "p.json", "--"],
                      device_kind="cpu")
    command = _container(_backend(python="/opt/venv/bin/python").manifest(spec, attempt=1))["command"]
    assert command[:6] == ["/opt/venv/bin/python", "-m", "gpu_agent.input_fetch", "--plan", "p.json", "--"]
    assert command[6:8] == ["/opt/venv/bin/python", "-m"] and sys.executable not in command


def test_the_manifest_is_what_the_clients_model_sends(tmp_path):
    """Read into the client's V1Job and serialized back as the API gets it, the manifest is unchanged: a misspelt
    or misplaced key would be dropped on the way (the API server would never see it)."""
    from kubernetes.client import ApiClient, V1Job

    for spec in (_spec(tmp_path, nproc=2), _spec(tmp_path, kind="cpu")):
        for backend in (_backend(), _backend(volume_claim="", host_path="/srv/ws")):
            manifest = backend.manifest(spec, attempt=1)
            assert ApiClient().sanitize_for_serialization(V1Job.from_dict(manifest)) == manifest
    misspelt = _backend().manifest(_spec(tmp_path), attempt=1)
    misspelt["spec"]["backofLimit"] = misspelt["spec"].pop("backoffLimit")
    assert ApiClient().sanitize_for_serialization(V1Job.from_dict(misspelt)) != misspelt  # the check can fail


@pytest.mark.parametrize("task_id", ["My_Task.v2", "a", "UPPER_case.with.dots", "x" * 128, "0-starts-with-digit",
                                     "a.b", "a_b", "A-B"])
def test_names_and_labels_are_valid_for_kubernetes(task_id):
    name = job_name(task_id, 12)
    assert _DNS_LABEL.match(name) and len(name) <= 63, name
    value = label_value(task_id)
    assert len(value) <= 63 and (not value or (value[0].isalnum() and value[-1].isalnum()))
    manifest = job_manifest(name=name, namespace="ns", image="i", command=["true"], env={}, workspace="/ws",
                            task_id=task_id, attempt=12, volume_claim="c")
    assert manifest["metadata"]["annotations"]["bugagaric/task-id"] == task_id


def test_ids_that_differ_only_in_what_a_name_cannot_hold_get_different_jobs():
    names = {job_name(task_id, 1) for task_id in ("a.b", "a_b", "A-B", "a-b")}
    assert len(names) == 4
    assert job_name("a.b", 1) != job_name("a.b", 2)


def test_the_demux_splits_metrics_errors_and_lines_for_the_spool(tmp_path):
    demux = LogDemux(tmp_path)
    event = json.dumps({"event": "step", "step": 1, "loss": 2.5})
    stream = (f"loading model\r\n{METRIC_LINE_PREFIX}{event}\nstep 1/2 loss=2.5000\n"
              f"{METRIC_LINE_PREFIX}{json.dumps({'event': 'end', 'step': 2})}\n"
              "error: the dataset has no rows\nlast line without newline")
    # Chunks cut anywhere, the prefix and a multi-byte character included.
    data = ("ünïcode line\n" + stream).encode()
    for start in range(0, len(data), 7):
        demux.feed(data[start:start + 7])
    demux.note("kubernetes: pod waiting: ContainerCreating")
    demux.close()
    assert demux.consumed == len(data)

    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [event, json.dumps({"event": "end", "step": 2})]
    assert (tmp_path / "stderr.log").read_text() == "error: the dataset has no rows\n"
    assert (tmp_path / "stdout.log").read_text().splitlines() == [
        "ünïcode line", "loading model", "step 1/2 loss=2.5000", "kubernetes: pod waiting: ContainerCreating",
        "last line without newline"]

    # The agent's own spool reads them as it reads a local trainer's files.
    writer = SpoolWriter(tmp_path)
    records, _ = writer.poll(final=True)
    writer.close()
    metrics = [json.loads(r["values_json"]) for r in records if r["kind"] == "metric"]
    assert [m["event"] for m in metrics] == ["step", "end"] and metrics[0]["loss"] == 2.5
    assert [r["text"] for r in records if r["kind"] == "log" and r["stream"] == "stderr"] == [
        "error: the dataset has no rows"]


def test_the_metrics_file_dash_sends_events_to_stdout_as_prefixed_lines(monkeypatch, tmp_path):
    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", "-")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    emitter = MetricsEmitter(task_id="t1", stdout=out)
    emitter.step(step=1, total_steps=2, loss=1.25)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(METRIC_LINE_PREFIX)
    record = json.loads(lines[0][len(METRIC_LINE_PREFIX):])
    assert record["event"] == "step" and record["loss"] == 1.25 and record["task_id"] == "t1"
    assert lines[1] == "step 1/2 loss=1.2500"
    assert not (tmp_path / "-").exists()  # not a file named "-"


@pytest.mark.parametrize("overrides, variable", [
    ({"agent_backend": "slurm"}, "BUGAGARIC_AGENT_BACKEND"),
    ({"agent_backend": "ray"}, "BUGAGARIC_RAY_ADDRESS"),
    ({"agent_backend": "ray", "ray_address": "127.0.0.1:8265"}, "BUGAGARIC_RAY_ADDRESS"),
    ({"agent_backend": "kubernetes", "k8s_volume_claim": "ws"}, "BUGAGARIC_K8S_IMAGE"),
    ({"agent_backend": "kubernetes", "k8s_image": "i"}, "BUGAGARIC_K8S_VOLUME_CLAIM"),
    ({"agent_backend": "kubernetes", "k8s_image": "i", "k8s_volume_claim": "ws", "k8s_host_path": "/srv"},
     "BUGAGARIC_K8S_HOST_PATH"),
    ({"agent_backend": "kubernetes", "k8s_image": "i", "k8s_host_path": "srv"}, "BUGAGARIC_K8S_HOST_PATH"),
    ({"agent_backend": "kubernetes", "k8s_image": "i", "k8s_volume_claim": "Work_Space"},
     "BUGAGARIC_K8S_VOLUME_CLAIM"),
    ({"agent_backend": "kubernetes", "k8s_image": "i", "k8s_volume_claim": "ws", "k8s_namespace": "Team.A"},
     "BUGAGARIC_K8S_NAMESPACE"),
    ({"agent_backend": "kubernetes", "k8s_image": "i", "k8s_volume_claim": "ws", "agent_dir": "/elsewhere"},
     "BUGAGARIC_AGENT_DIR"),
])
def test_a_bad_backend_setting_names_its_variable(tmp_path, overrides, variable):
    with pytest.raises(ValueError, match=variable):
        AgentSettings(workspace=str(tmp_path), **overrides)


def test_backend_env_vars_are_read(monkeypatch, tmp_path):
    monkeypatch.setenv("BUGAGARIC_AGENT_BACKEND", "ray")
    monkeypatch.setenv("BUGAGARIC_RAY_ADDRESS", "http://10.0.0.5:8265")
    settings = AgentSettings(workspace=str(tmp_path))
    assert settings.agent_backend == "ray" and settings.ray_address == "http://10.0.0.5:8265"
    check_name("x", "default")
    assert AgentSettings(workspace=str(tmp_path), agent_backend="local").agent_backend == "local"


def test_an_agent_with_a_kubernetes_backend_and_no_cluster_config_does_not_start(monkeypatch, tmp_path):
    from gpu_agent.agent import Agent

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = AgentSettings(workspace=str(tmp_path), agent_backend="kubernetes", k8s_image="i",
                             k8s_volume_claim="ws", agent_devices="cpu", control_plane_address="")
    with pytest.raises(ValueError, match="BUGAGARIC_AGENT_BACKEND=kubernetes: cannot load"):
        Agent(settings)


# -- a real cluster, when one is configured --------------------------------------------------------------------

K8S_CONTEXT = os.environ.get("BUGAGARIC_TEST_K8S_CONTEXT", "")


@pytest.mark.skipif(not K8S_CONTEXT, reason="no Kubernetes cluster configured: set BUGAGARIC_TEST_K8S_CONTEXT, "
                    "BUGAGARIC_TEST_K8S_IMAGE and BUGAGARIC_TEST_K8S_WORKSPACE (see this module's docstring)")
def test_a_tiny_sft_attempt_runs_as_a_job_on_a_real_cluster(tiny_llama_dir):
    from gpu_agent.backends.kubernetes import load_api_client

    image = os.environ["BUGAGARIC_TEST_K8S_IMAGE"]
    shared = Path(os.environ["BUGAGARIC_TEST_K8S_WORKSPACE"])
    workspace = shared / f"test-{uuid.uuid4().hex[:8]}"
    workspace.mkdir(parents=True)
    try:
        model = shutil.copytree(tiny_llama_dir, workspace / "models/tiny-llama")
        write_sft_rows(workspace / "data/train.jsonl", 16)
        config = {"model_name_or_path": str(model), "train_data_path": "data/train.jsonl", "output_dir": "output/sft",
                  "use_lora": True, "per_device_train_batch_size": 4, "max_steps": 2, "max_length": 128}
        spec = LaunchSpec(task_id="K8s_Test.1", entry_module="trainers.sft", config_json=json.dumps(config),
                          directory=workspace / "var/agent/tasks/K8s_Test.1/attempt-1", workspace=workspace,
                          extra_env={"HF_HUB_OFFLINE": "1", "BUGAGARIC_MODEL_ROOTS": str(workspace / "models")},
                          device_kind="cpu")
        backend = KubernetesBackend(namespace=os.environ.get("BUGAGARIC_TEST_K8S_NAMESPACE", "default"),
                                    image=image, host_path=str(workspace), default_grace=10,
                                    api_client=load_api_client(K8S_CONTEXT))
        run = backend.launch(spec)
        assert run.wait(500), f"{run.describe()} did not end"
        stdout = (spec.directory / "stdout.log").read_text()
        assert read_exit_file(spec.directory) == 0, stdout[-3000:] + (spec.directory / "stderr.log").read_text()
        assert "step 2/2" in stdout and METRIC_LINE_PREFIX.strip() not in stdout
        events = [json.loads(line) for line in (spec.directory / "metrics.jsonl").read_text().splitlines()]
        assert events[0]["event"] == "start" and events[-1]["event"] == "end"
        assert (workspace / "output/sft/adapter_config.json").is_file()
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
