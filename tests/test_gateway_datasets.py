"""Datasets, models and a task's files over REST: the streaming multipart reader on its own, then the whole system
(control plane, one agent, gateway as real processes) for uploads, their refusals and streamed downloads.

Also a tiny trainer plugin (type `file-test`, BUGAGARIC_TRAINER_PLUGINS=tests.test_gateway_datasets) that writes
files of a given size into its output directory, so the downloads have something real to stream.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import time

import httpx
import pytest

from gateway.dataset_upload import CHUNK_BYTES, DatasetUploadForm
from gateway.errors import ApiError
from gateway.multipart_stream import FormEnd, MultipartStream, PartData, PartEnd, PartStart

MAX_DATASET_BYTES = 50_000
FILE_TYPE = "file-test"
BOUNDARY = "bugagaric-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


# --- the trainer plugin ----------------------------------------------------------------------------------------------


def write_files(config, ctx) -> dict:
    """Writes `size_bytes` of random bytes to sub/dir/weights.bin and a small summary, then ends."""
    target = ctx.output_dir / "sub" / "dir" / "weights.bin"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(os.urandom(config.size_bytes))
    (ctx.output_dir / "train_results.json").write_text(json.dumps({"size": config.size_bytes}))
    return {}


def file_task_type():
    from pydantic import BaseModel, ConfigDict

    from trainers.registry import DataReport, TaskType

    class FileConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size_bytes: int = 0

    return TaskType(name=FILE_TYPE, description="writes files into its output directory", config_model=FileConfig,
                    entry_module=__name__, validate_data=lambda c, w: DataReport(path="", rows=0),
                    default_config={}, data_example={}, listed=False)


if __name__ == "__main__":
    from trainers.common.cli import main

    sys.exit(main(FILE_TYPE, write_files))
elif __name__ in os.environ.get("BUGAGARIC_TRAINER_PLUGINS", "").split(","):
    from trainers import registry as _registry

    _registry.register(file_task_type())


# --- building bodies -------------------------------------------------------------------------------------------------


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    headers = f"Content-Disposition: {disposition}\r\n"
    if filename is not None:
        headers += "Content-Type: application/octet-stream\r\n"
    return f"--{BOUNDARY}\r\n{headers}\r\n".encode() + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def sft_rows(n: int, bad_line: int | None = None) -> bytes:
    rows = [{"query": f"question {i}", "chosen": {"text": f"answer {i}"}} for i in range(1, n + 1)]
    if bad_line is not None:
        rows[bad_line - 1] = {"query": "no answer here"}
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def messages_of(body: bytes, piece: int) -> list:
    """The UploadDatasetRequests for `body` fed in pieces of `piece` bytes."""
    upload = DatasetUploadForm(CONTENT_TYPE)
    out = []
    for start in range(0, len(body), piece):
        out.extend(upload.feed(body[start:start + piece]))
    return out + upload.finish()


def refusal(body: bytes, piece: int = 7) -> ApiError:
    with pytest.raises(ApiError) as caught:
        messages_of(body, piece)
    assert caught.value.status == 400
    return caught.value


# --- the multipart reader and the form, on their own -----------------------------------------------------------------


def test_parts_arrive_as_events_however_the_body_is_split():
    body = form(part("type", b"sft"), part("file", b"line one\r\n--not the boundary\r\nline two", "a.jsonl"))
    for piece in (1, 2, 3, 5, 64, len(body)):
        reader = MultipartStream(CONTENT_TYPE)
        events = [e for start in range(0, len(body), piece) for e in reader.feed(body[start:start + piece])]
        events += reader.close()
        data = {"type": b"", "file": b""}
        current = None
        for event in events:
            if isinstance(event, PartStart):
                current = event.name
            elif isinstance(event, PartData):
                data[current] += event.data
        assert data == {"type": b"sft", "file": b"line one\r\n--not the boundary\r\nline two"}, piece
        starts = [e for e in events if isinstance(e, PartStart)]
        assert starts == [PartStart("type", None), PartStart("file", b"a.jsonl")]
        assert [e for e in events if isinstance(e, PartEnd)] == [PartEnd("type"), PartEnd("file")]
        assert isinstance(events[-1], FormEnd)


def test_the_upload_is_a_header_then_chunks_of_a_mebibyte():
    content = os.urandom(CHUNK_BYTES * 2 + 12345)
    messages = messages_of(form(part("type", b" sft "), part("file", content, "C:\\data\\train.jsonl")), 65536)
    assert messages[0].WhichOneof("part") == "header"
    assert (messages[0].header.name, messages[0].header.type) == ("train.jsonl", "sft")
    chunks = [m.data for m in messages[1:]]
    assert all(m.WhichOneof("part") == "data" for m in messages[1:])
    assert [len(c) for c in chunks] == [CHUNK_BYTES, CHUNK_BYTES, 12345]
    assert b"".join(chunks) == content


def test_the_header_is_ready_before_the_file_has_arrived():
    upload = DatasetUploadForm(CONTENT_TYPE)
    start = form(part("type", b"dpo"), part("file", b"x" * 100, "d/pairs.json"))[:-60]
    messages = upload.feed(start)
    assert [m.WhichOneof("part") for m in messages] == ["header"]
    assert messages[0].header.name == "pairs.json"


def test_an_empty_file_is_a_header_alone():
    messages = messages_of(form(part("type", b"sft"), part("file", b"", "empty.jsonl")), 10)
    assert [m.WhichOneof("part") for m in messages] == ["header"]


@pytest.mark.parametrize(("body", "field", "words"), [
    (form(part("file", b"{}", "a.jsonl"), part("type", b"sft")), "type", "must come before"),
    (form(part("file", b"{}", "a.jsonl")), "type", "must come before"),
    (form(part("type", b"sft")), "file", "missing"),
    (form(), "type", "missing"),
    (form(part("type", b"sft"), part("file", b"{}")), "file", "file upload"),
    (form(part("type", b"sft"), part("file", b"{}", "")), "file", "needs a name"),
    (form(part("type", b"sft"), part("file", b"{}", "dir/")), "file", "needs a name"),
    (form(part("type", b""), part("file", b"{}", "a.jsonl")), "type", "task type"),
    (form(part("type", b"\xff\xfe"), part("file", b"{}", "a.jsonl")), "type", "task type"),
    (form(part("type", b"x" * 500), part("file", b"{}", "a.jsonl")), "type", "longer than"),
    (form(part("type", b"sft"), part("type", b"dpo"), part("file", b"{}", "a.jsonl")), "type", "twice"),
    (form(part("type", b"sft"), part("file", b"{}", "a.jsonl"), part("file", b"{}", "b.jsonl")), "file", "twice"),
    (form(part("type", b"sft"), part("name", b"x"), part("file", b"{}", "a.jsonl")), "name", "unknown form field"),
])
def test_a_form_breaking_the_rules_is_a_400_naming_the_field(body, field, words):
    err = refusal(body)
    assert err.field == field and words in err.message, err.message


def test_a_file_name_that_is_not_utf8_is_refused():
    raw = part("type", b"sft")
    raw += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="'.encode() + b'\xff.jsonl"\r\n\r\n{}\r\n'
    raw += f"--{BOUNDARY}--\r\n".encode()
    err = refusal(raw)
    assert err.field == "file" and "UTF-8" in err.message


@pytest.mark.parametrize("body", [
    form(part("type", b"sft"), part("file", b"{}", "a.jsonl"))[:-10],  # cut before the closing boundary
    b"not multipart at all",
    f"--{BOUNDARY}\r\nX-Nothing: here\r\n\r\nvalue\r\n--{BOUNDARY}--\r\n".encode(),  # no Content-Disposition
    f"--{BOUNDARY}\r\nContent-Disposition: attachment\r\n\r\nvalue\r\n--{BOUNDARY}--\r\n".encode(),
    b"",
])
def test_a_malformed_body_is_a_400(body):
    assert refusal(body).field is None


@pytest.mark.parametrize("content_type", [None, "", "application/json", "multipart/form-data",
                                          "multipart/form-data; boundary=", "multipart/mixed; boundary=x",
                                          "multipart/form-data; boundary=" + "b" * 71])
def test_a_content_type_without_a_usable_boundary_is_a_400(content_type):
    with pytest.raises(ApiError) as caught:
        DatasetUploadForm(content_type)
    assert caught.value.status == 400 and "boundary" in caught.value.message


def test_an_epilogue_after_the_closing_boundary_is_ignored():
    body = form(part("type", b"sft"), part("file", b"{}", "a.jsonl")) + b"trailing words"
    assert [m.WhichOneof("part") for m in messages_of(body, 4)] == ["header", "data"]


# --- the whole system ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tests.helpers.stack import start_stack

    running = start_stack(tmp_path_factory.mktemp("datasets"), slots=1, extra_env={
        "BUGAGARIC_MAX_DATASET_BYTES": str(MAX_DATASET_BYTES), "BUGAGARIC_TRAINER_PLUGINS": __name__})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(stack):
    with httpx.Client(base_url=stack.base_url, timeout=60, headers={"authorization": f"Bearer {stack.admin_token}"}) as c:
        yield c


def upload(api: httpx.Client, body: bytes, **kwargs) -> httpx.Response:
    return api.post("/api/finetune/datasets", content=body, headers={"content-type": CONTENT_TYPE}, **kwargs)


def blob_files(stack) -> set[str]:
    root = stack.workspace / "var" / "blobs"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def assert_error(response: httpx.Response, status: int, code: str, field: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field), error
    return error


def test_an_upload_is_201_with_its_sha256_and_rows(stack, api):
    content = sft_rows(25)
    response = upload(api, form(part("type", b"sft"), part("file", content, "train.jsonl")))
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["sha256"] == hashlib.sha256(content).hexdigest()
    assert any(name.endswith(dataset["sha256"]) for name in blob_files(stack))  # what the checks below watch
    assert (dataset["rows"], dataset["size"], dataset["name"], dataset["type"]) == (25, len(content), "train.jsonl", "sft")
    assert dataset["owner"] == "admin" and dataset["created_at"].endswith("Z")

    listed = api.get("/api/finetune/datasets", params={"type": "sft"}).json()["datasets"]
    assert dataset in listed
    assert api.get("/api/finetune/datasets", params={"type": "dpo"}).json()["datasets"] == []
    detail = api.get(f"/api/finetune/datasets/{dataset['id']}").json()
    assert isinstance(detail["stats"], dict) and detail["preview"][0] == json.loads(content.splitlines()[0])
    assert {k: detail[k] for k in dataset} == dataset

    assert api.delete(f"/api/finetune/datasets/{dataset['id']}").json() == {"deleted": dataset["id"]}
    assert_error(api.get(f"/api/finetune/datasets/{dataset['id']}"), 404, "not_found", "dataset_id")


def test_a_streamed_upload_without_content_length(api):
    content = sft_rows(40)
    body = form(part("type", b"sft"), part("file", content, "chunked.jsonl"))
    response = upload(api, iter([body[i:i + 1000] for i in range(0, len(body), 1000)]))
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == hashlib.sha256(content).hexdigest()


def test_a_bad_row_names_its_line_and_keeps_nothing(api):
    before = api.get("/api/finetune/datasets").json()["datasets"]
    response = upload(api, form(part("type", b"sft"), part("file", sft_rows(10, bad_line=7), "bad.jsonl")))
    error = assert_error(response, 400, "invalid_argument", "file")
    assert "line 7" in error["message"], error
    assert api.get("/api/finetune/datasets").json()["datasets"] == before


@pytest.mark.parametrize(("body", "field"), [
    # The whole file has gone to the control plane before the form breaks: the upload is cancelled, not completed.
    (form(part("type", b"sft"), part("file", sft_rows(5), "late.jsonl"), part("extra", b"x")), "extra"),
    (form(part("type", b"sft"), part("file", sft_rows(5), "cut.jsonl"))[:-12], None),
])
def test_a_form_that_breaks_after_its_file_keeps_nothing(stack, api, body, field):
    before = api.get("/api/finetune/datasets").json()["datasets"]
    blobs_before = blob_files(stack)
    assert_error(upload(api, body), 400, "invalid_argument", field)
    assert api.get("/api/finetune/datasets").json()["datasets"] == before
    deadline = time.monotonic() + 10  # the control plane cleans up once it sees the cancel
    while blob_files(stack) != blobs_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert blob_files(stack) == blobs_before


def test_file_before_type_is_a_400_naming_type(api):
    response = upload(api, form(part("file", sft_rows(2), "train.jsonl"), part("type", b"sft")))
    assert_error(response, 400, "invalid_argument", "type")


def test_a_missing_file_is_a_400_naming_file(api):
    assert_error(upload(api, form(part("type", b"sft"))), 400, "invalid_argument", "file")


def test_an_unknown_type_is_the_control_planes_400(api):
    response = upload(api, form(part("type", b"no-such-type"), part("file", sft_rows(2), "train.jsonl")))
    assert_error(response, 400, "invalid_argument", "type")


def test_not_multipart_is_a_400(api):
    response = api.post("/api/finetune/datasets", json={"type": "sft", "file": "x"})
    assert_error(response, 400, "invalid_argument", None)


def test_a_file_over_the_limit_is_413(api):
    # Within the body limit (the file plus the multipart framing): the control plane counts the file's bytes.
    content = sft_rows(1200)
    assert MAX_DATASET_BYTES < len(content) < MAX_DATASET_BYTES + 60_000
    response = upload(api, form(part("type", b"sft"), part("file", content, "big.jsonl")))
    assert "BUGAGARIC_MAX_DATASET_BYTES" in assert_error(response, 413, "payload_too_large", "file")["message"]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_413_before_the_control_plane(api, chunked):
    body = form(part("type", b"sft"), part("file", b"x" * (MAX_DATASET_BYTES + 100_000), "huge.jsonl"))
    response = upload(api, iter([body[i:i + 65536] for i in range(0, len(body), 65536)]) if chunked else body)
    error = assert_error(response, 413, "payload_too_large", None)
    assert str(MAX_DATASET_BYTES + 64 * 1024) in error["message"]
    assert api.get("/api/finetune/datasets").status_code == 200  # the gateway is fine afterwards


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-real-token"])
def test_an_upload_without_a_valid_token_is_401(stack, authorization):
    headers = {"content-type": CONTENT_TYPE, **({"authorization": authorization} if authorization else {})}
    for body in (form(part("type", b"sft"), part("file", sft_rows(2), "train.jsonl")),
                 form(part("file", b"{}", "a.jsonl"))):  # bad input too: the token is checked first
        response = httpx.post(f"{stack.base_url}/api/finetune/datasets", content=body, headers=headers, timeout=30)
        assert_error(response, 401, "unauthenticated", None)


def test_another_user_sees_none_of_the_datasets(stack, api):
    mine = upload(api, form(part("type", b"sft"), part("file", sft_rows(3), "mine.jsonl"))).json()
    token = stack.create_user("dataset-stranger", "a-long-password-1")
    with httpx.Client(base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {token}"}) as other:
        assert other.get("/api/finetune/datasets").json() == {"datasets": []}
        assert_error(other.get(f"/api/finetune/datasets/{mine['id']}"), 404, "not_found", "dataset_id")
        assert_error(other.delete(f"/api/finetune/datasets/{mine['id']}"), 404, "not_found", "dataset_id")


def test_models_are_listed(api):
    response = api.get("/api/finetune/models")
    assert response.status_code == 200, response.text
    models = response.json()["models"]
    assert isinstance(models, list)
    for model in models:
        assert set(model) == {"name", "kind", "size", "agents"}


@pytest.fixture(scope="module")
def finished_file_task(api):
    from tests.helpers.tasks import wait_for_task

    response = api.post("/api/finetune/start", json={"type": FILE_TYPE, "config": {"size_bytes": 5 * CHUNK_BYTES + 17}})
    assert response.status_code == 201, response.text
    task = wait_for_task(api, response.json()["id"], lambda t: t["status"] in ("succeeded", "failed", "stopped"))
    assert task["status"] == "succeeded", task
    return task


def test_artifacts_are_listed(api, finished_file_task):
    response = api.get(f"/api/finetune/tasks/{finished_file_task['id']}/artifacts")
    assert response.status_code == 200, response.text
    body = response.json()
    files = {a["path"]: a for a in body["artifacts"]}
    assert files["sub/dir/weights.bin"]["size"] == 5 * CHUNK_BYTES + 17
    assert files["train_results.json"]["kind"] == "summary"
    assert body["source"] in ("agent", "published")
    assert "published_model_sha256" in finished_file_task


def test_an_artifact_download_streams_in_chunks(api, finished_file_task):
    url = f"/api/finetune/tasks/{finished_file_task['id']}/artifacts/sub/dir/weights.bin"
    with api.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-disposition"].startswith('attachment; filename="weights.bin"')
        assert "content-length" not in response.headers  # relayed as it arrives, not buffered to be measured
        pieces = list(response.iter_raw())
    assert len(pieces) > 1
    assert sum(len(p) for p in pieces) == 5 * CHUNK_BYTES + 17


def test_the_model_downloads_as_a_tar(api, finished_file_task):
    task_id = finished_file_task["id"]
    with api.stream("GET", f"/api/finetune/tasks/{task_id}/model") as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/x-tar"
        assert f'filename="{task_id}-model.tar"' in response.headers["content-disposition"]
        pieces = list(response.iter_raw())
    assert len(pieces) > 1
    with tarfile.open(fileobj=io.BytesIO(b"".join(pieces))) as archive:
        names = {m.name: m.size for m in archive if m.isfile()}
    assert names["sub/dir/weights.bin"] == 5 * CHUNK_BYTES + 17


@pytest.mark.parametrize(("path", "status", "code"), [
    ("%2E%2E/%2E%2E/etc/passwd", 400, "invalid_argument"),
    ("sub/%2E%2E/%2E%2E/x", 400, "invalid_argument"),
    ("%2Fetc%2Fpasswd", 400, "invalid_argument"),
    ("no/such/file", 404, "not_found"),
])
def test_a_bad_artifact_path_is_the_error_json_before_any_byte(api, finished_file_task, path, status, code):
    response = api.get(f"/api/finetune/tasks/{finished_file_task['id']}/artifacts/{path}")
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_downloads_of_an_unknown_task_are_404_json(api):
    assert_error(api.get("/api/finetune/tasks/no-such-task/model"), 404, "not_found", "task_id")
    response = api.get("/api/finetune/tasks/no-such-task/artifacts/a/b.txt")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert_error(api.get("/api/finetune/tasks/x/artifacts/a%ED%A0%80/b"), 400, "invalid_argument", "path")


def test_export_checks_its_body(api):
    assert_error(api.post("/api/finetune/tasks/t1/export", content=b'{"merge_lora": "yes"}'), 400,
                 "invalid_argument", "merge_lora")
    assert_error(api.post("/api/finetune/tasks/t1/export", content=b'{"dtype": 3}'), 400, "invalid_argument", "dtype")
    assert_error(api.post("/api/finetune/tasks/t1/export", content=b'{"other": 1}'), 400, "invalid_argument", "other")
    assert api.post("/api/finetune/tasks/no-such-task/export").status_code == 404


# --- large uploads the control plane ends early ----------------------------------------------------------------------
# A control plane (in this process) whose limit is 3 MiB behind a gateway that lets 64 MiB through, as when the two
# hosts are configured apart: the control plane ends these uploads while the gateway is still sending, and its status
# (not a transport error) must be the answer.

CP_LIMIT = 3 * CHUNK_BYTES


@pytest.fixture(scope="module")
def roomy(tmp_path_factory):
    from tests.helpers.live import LiveControlPlane, start_gateway

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BUGAGARIC_MAX_DATASET_BYTES", str(CP_LIMIT))
        control_plane = LiveControlPlane(tmp_path_factory.mktemp("roomy")).start()
    gateway = start_gateway(control_plane, max_dataset_bytes=64 * CHUNK_BYTES)
    token = httpx.post(f"{gateway.base_url}/api/auth/login", timeout=30,
                       json={"username": "admin", "password": control_plane.admin_password}).json()["token"]
    yield gateway, token
    gateway.stop()
    control_plane.stop()


def big_form(task_type: bytes, mib: int):
    """A streamed body (no Content-Length) of `mib` MiB of valid SFT rows."""
    rows = sft_rows(2000)
    yield part("type", task_type) + part("file", b"", "big.jsonl")[:-2]
    sent = 0
    while sent < mib * CHUNK_BYTES:
        yield rows
        sent += len(rows)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def post_big(roomy, task_type: bytes, mib: int, token: str | None = None) -> httpx.Response:
    gateway, admin_token = roomy
    headers = {"content-type": CONTENT_TYPE, "authorization": f"Bearer {token or admin_token}"}
    return httpx.post(f"{gateway.base_url}/api/finetune/datasets", content=big_form(task_type, mib), headers=headers,
                      timeout=120)


@pytest.mark.parametrize("attempt", range(3))
def test_a_refused_header_of_a_large_upload_is_its_own_error(roomy, attempt):
    assert_error(post_big(roomy, b"no-such-type", 12), 400, "invalid_argument", "type")
    assert_error(post_big(roomy, b"sft", 12, token="not-a-real-token"), 401, "unauthenticated", None)


def test_a_large_file_over_the_control_planes_limit_is_413(roomy):
    assert_error(post_big(roomy, b"sft", 12), 413, "payload_too_large", "file")


def test_a_large_upload_under_the_limit_streams_through(roomy):
    body = b"".join(big_form(b"sft", 2))
    content = body[body.index(b'filename="big.jsonl"'):].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
    response = post_big(roomy, b"sft", 2)
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == hashlib.sha256(content).hexdigest()
    assert response.json()["size"] == len(content) > CHUNK_BYTES
