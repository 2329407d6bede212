"""Datasets on the control plane's gRPC API: uploads checked row by row as they stream, stored once per content,
owned like tasks; and the blobs agents fetch (AgentRegistry.FetchBlob). A real control plane on loopback, no agent."""

from __future__ import annotations

import hashlib
import json

import grpc
import pytest

from protos import common_pb2, control_plane_pb2 as cp, control_plane_pb2_grpc
from tests.helpers.live import LiveControlPlane

GOOD_ROW = {"query": "q", "retrieval_result": ["p"], "chosen": {"text": "an answer"}}
LIMIT = 64 * 1024


def rows(count: int, bad_line: int | None = None) -> bytes:
    lines = []
    for number in range(1, count + 1):
        row = {"query": f"q{number}", "chosen": {"text": f"answer {number}"}}
        if number == bad_line:
            row["chosen"] = {}
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    running = LiveControlPlane(tmp_path_factory.mktemp("datasets"), max_dataset_bytes=LIMIT).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def channel(plane):
    with grpc.insecure_channel(plane.address) as chan:
        yield chan


def token_of(channel, username: str, password: str) -> str:
    auth = control_plane_pb2_grpc.AuthServiceStub(channel)
    return auth.Login(cp.LoginRequest(username=username, password=password)).token


@pytest.fixture(scope="module")
def users(plane, channel):
    admin = token_of(channel, "admin", plane.admin_password)
    auth = control_plane_pb2_grpc.AuthServiceStub(channel)
    for name in ("alice", "bob"):
        auth.CreateUser(cp.CreateUserRequest(username=name, password=f"{name}-password-1"),
                        metadata=(("authorization", f"Bearer {admin}"),))
    return {name: (("authorization", f"Bearer {token_of(channel, name, f'{name}-password-1')}"),)
            for name in ("alice", "bob")} | {"admin": (("authorization", f"Bearer {admin}"),)}


def upload(channel, metadata, data: bytes, *, name="train.jsonl", type="sft", chunk=1000):
    def messages():
        yield cp.UploadDatasetRequest(header=cp.DatasetHeader(name=name, type=type))
        for start in range(0, len(data), chunk):
            yield cp.UploadDatasetRequest(data=data[start:start + chunk])

    return control_plane_pb2_grpc.FinetuneServiceStub(channel).UploadDataset(messages(), metadata=metadata)


def blob_files(plane) -> list:
    root = plane.settings.workspace / "var" / "blobs"
    return [p for p in root.rglob("*") if p.is_file() and "incoming" not in p.parts]


def test_upload_is_checked_stored_once_and_owned(plane, channel, users):
    data = rows(30)
    first = upload(channel, users["alice"], data)
    assert first.rows == 30 and first.sha256 == hashlib.sha256(data).hexdigest() and first.size_bytes == len(data)
    again = upload(channel, users["alice"], data, chunk=7)  # the same bytes, cut differently
    assert again.id == first.id
    other = upload(channel, users["bob"], data)  # someone else's record, the same blob
    assert other.id != first.id and other.owner == "bob"
    assert len([p for p in blob_files(plane) if p.name == first.sha256]) == 1

    stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
    mine = stub.ListDatasets(cp.ListDatasetsRequest(), metadata=users["alice"]).datasets
    assert first.id in {d.id for d in mine} and other.id not in {d.id for d in mine}
    detail = stub.GetDataset(cp.GetDatasetRequest(dataset_id=first.id), metadata=users["alice"])
    assert json.loads(detail.stats_json)["rows"] == 30
    assert json.loads(detail.preview_json[0]) == {"query": "q1", "chosen": {"text": "answer 1"}}
    with pytest.raises(grpc.RpcError) as seen:
        stub.GetDataset(cp.GetDatasetRequest(dataset_id=first.id), metadata=users["bob"])
    assert seen.value.code() == grpc.StatusCode.NOT_FOUND
    # Bob cannot train on Alice's dataset: refused at submit, naming the field.
    with pytest.raises(grpc.RpcError) as seen:
        stub.StartTask(cp.StartTaskRequest(type="sft", config_json=json.dumps(
            {"model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{first.id}"})), metadata=users["bob"])
    assert seen.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "train_data_path" in seen.value.details()


def test_a_bad_line_is_refused_by_number_and_nothing_is_kept(plane, channel, users):
    before = blob_files(plane)
    with pytest.raises(grpc.RpcError) as seen:
        upload(channel, users["alice"], rows(12, bad_line=7), name="broken.jsonl")
    assert seen.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "broken.jsonl line 7: chosen.text" in seen.value.details()
    assert blob_files(plane) == before
    assert not list((plane.settings.workspace / "var" / "blobs" / "incoming").iterdir())


def test_too_large_and_wrong_type_uploads(plane, channel, users):
    with pytest.raises(grpc.RpcError) as seen:
        upload(channel, users["alice"], rows(2000), chunk=4096)
    assert seen.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in seen.value.details()
    with pytest.raises(grpc.RpcError) as seen:
        upload(channel, users["alice"], rows(3), type="nope")
    assert seen.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not list((plane.settings.workspace / "var" / "blobs" / "incoming").iterdir())


def test_a_dataset_in_use_cannot_be_deleted_and_its_blob_goes_with_the_last_record(plane, channel, users):
    data = rows(5) + b"\n"
    dataset = upload(channel, users["alice"], data, name="used.jsonl")
    stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
    task = stub.StartTask(cp.StartTaskRequest(type="sft", config_json=json.dumps(
        {"model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{dataset.id}"})), metadata=users["alice"])
    assert task.validation.state == "passed" and task.validation.rows == 5  # no agent needed: checked at upload
    with pytest.raises(grpc.RpcError) as seen:
        stub.DeleteDataset(cp.DeleteDatasetRequest(dataset_id=dataset.id), metadata=users["alice"])
    assert seen.value.code() == grpc.StatusCode.FAILED_PRECONDITION and task.id in seen.value.details()
    stub.StopTask(cp.StopTaskRequest(task_id=task.id), metadata=users["alice"])
    stub.DeleteDataset(cp.DeleteDatasetRequest(dataset_id=dataset.id), metadata=users["alice"])
    assert dataset.sha256 not in {p.name for p in blob_files(plane)}


def test_agents_fetch_blobs_from_an_offset_with_the_cluster_token(plane, channel, users):
    data = rows(40)
    dataset = upload(channel, users["alice"], data, name="fetch.jsonl")
    registry = control_plane_pb2_grpc.AgentRegistryStub(channel)
    cluster = (("authorization", f"Bearer {plane.settings.cluster_token}"),)
    whole = b"".join(c.data for c in registry.FetchBlob(cp.FetchBlobRequest(sha256=dataset.sha256), metadata=cluster))
    assert whole == data
    tail = list(registry.FetchBlob(cp.FetchBlobRequest(sha256=dataset.sha256, offset=100), metadata=cluster))
    assert tail[0].offset == 100 and b"".join(c.data for c in tail) == data[100:]
    assert isinstance(tail[0], common_pb2.FileChunk)
    with pytest.raises(grpc.RpcError) as seen:  # a user token is no cluster token
        list(registry.FetchBlob(cp.FetchBlobRequest(sha256=dataset.sha256), metadata=users["alice"]))
    assert seen.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_output_dir_is_claimed_once(plane, channel, users):
    stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
    dataset = upload(channel, users["alice"], rows(3), name="claims.jsonl")
    config = {"model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{dataset.id}", "output_dir": "output/mine"}
    first = stub.StartTask(cp.StartTaskRequest(type="sft", config_json=json.dumps(config)), metadata=users["alice"])
    config["output_dir"] = "output/./mine/"
    with pytest.raises(grpc.RpcError) as seen:
        stub.StartTask(cp.StartTaskRequest(type="sft", config_json=json.dumps(config)), metadata=users["alice"])
    assert seen.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output_dir" in seen.value.details() and first.id in seen.value.details()
    field = dict(seen.value.trailing_metadata()).get("bugagaric-error-field")
    assert field == "output_dir"


def test_a_task_that_has_not_run_has_no_artifacts_and_cannot_be_exported(plane, channel, users):
    stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
    dataset = upload(channel, users["alice"], rows(3), name="unrun.jsonl")
    task = stub.StartTask(cp.StartTaskRequest(type="sft", config_json=json.dumps(
        {"model_name_or_path": "tiny-llama", "train_data_path": f"dataset:{dataset.id}"})), metadata=users["alice"])

    def refused(call, code, words):
        with pytest.raises(grpc.RpcError) as seen:
            call()
        assert seen.value.code() == code and words in seen.value.details(), seen.value.details()

    refused(lambda: stub.ListArtifacts(cp.ListArtifactsRequest(task_id=task.id), metadata=users["alice"]),
            grpc.StatusCode.NOT_FOUND, "it has not run yet")
    refused(lambda: list(stub.DownloadModel(cp.DownloadModelRequest(task_id=task.id), metadata=users["alice"])),
            grpc.StatusCode.NOT_FOUND, "no model of it was published")
    for bad in ("../x", "/etc/passwd", "a\\b", ""):
        refused(lambda: list(stub.DownloadArtifact(cp.DownloadArtifactRequest(task_id=task.id, path=bad),
                                                   metadata=users["alice"])), grpc.StatusCode.INVALID_ARGUMENT, "path")
    refused(lambda: stub.ExportTask(cp.ExportTaskRequest(task_id=task.id), metadata=users["alice"]),
            grpc.StatusCode.FAILED_PRECONDITION, "only a succeeded task can be exported")
    refused(lambda: stub.ListArtifacts(cp.ListArtifactsRequest(task_id=task.id), metadata=users["bob"]),
            grpc.StatusCode.NOT_FOUND, "not found")  # someone else's task does not exist for them
