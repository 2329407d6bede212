"""Users cannot reach the host or each other, and hostile input cannot starve the service: the whole system as real
processes, driven over REST and gRPC as a non-admin user would (and as a hostile one)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest

from protos import control_plane_pb2, control_plane_pb2_grpc
from protos.auth import bearer_metadata
from tests.helpers.stack import Stack, start_stack
from tests.helpers.tasks import tiny_sft_config, wait_for_task
from tests.helpers.tiny_models import sft_rows, write_sft_rows

TERMINAL = {"succeeded", "failed", "stopped"}
GATEWAY_DEADLINE_SECONDS = 10.0  # the gateway's per-call gRPC deadline (BUGAGARIC_GRPC_TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_llama_dir):
    workspace = tmp_path_factory.mktemp("hardening")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    write_sft_rows(workspace / "data" / "train.jsonl", 16)
    # Planted by somebody with access to the host: links out of the workspace, and a FIFO (opening it blocks).
    (workspace / "data" / "passwd.jsonl").symlink_to("/etc/passwd")
    (workspace / "data" / "etc").symlink_to("/etc")
    os.mkfifo(workspace / "data" / "pipe.jsonl")
    running = start_stack(workspace, slots=2)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def users(stack) -> dict[str, str]:
    return {name: stack.create_user(name, f"{name}-password") for name in ("alice", "bob")}


def client(stack: Stack, token: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, timeout=60, headers={"authorization": f"Bearer {token}"})


def assert_no_host_file_in(text: str) -> None:
    assert "root:" not in text and "/bin/bash" not in text and "nologin" not in text, text


# --- paths ------------------------------------------------------------------------------------------------------------

HOST_FILE_CASES = [
    # (type, config, the field the error must name)
    *[("sft", tiny_sft_config(train_data_path=p), "train_data_path") for p in
      ("/etc/passwd", "../../../../../../etc/passwd", "data/passwd.jsonl", "data/etc/passwd", "~/../../etc/passwd")],
    ("sft", tiny_sft_config(eval_data_path="/etc/passwd"), "eval_data_path"),
    ("sft", tiny_sft_config(config_file="/etc/passwd"), "config_file"),
    ("sft", tiny_sft_config(config_file="data/passwd.jsonl"), "config_file"),
    ("sft", tiny_sft_config(model_name_or_path="/etc"), "model_name_or_path"),
    ("sft", tiny_sft_config(model_name_or_path="data/etc"), "model_name_or_path"),
    ("dpo", tiny_sft_config(train_data_path="/etc/passwd"), "train_data_path"),
    ("kbalign", {"model_name_or_path": "models/tiny-llama", "input_path": "/etc/passwd"}, "input_path"),
    ("kbalign", {"model_name_or_path": "models/tiny-llama", "input_path": "data/etc"}, "input_path"),
    ("embedding", {"model_name_or_path": "models/tiny-llama", "train_data": "/etc/passwd"}, "train_data"),
    # The platform's own state: the store, the admin password.
    ("sft", tiny_sft_config(train_data_path="var/bugagaric.db"), "train_data_path"),
    ("sft", tiny_sft_config(config_file="var/admin_password"), "config_file"),
]


def test_a_user_reads_no_host_file_through_any_path_field(stack, users):
    with client(stack, users["alice"]) as api:
        for task_type, config, field in HOST_FILE_CASES:
            response = api.post("/api/finetune/start", json={"type": task_type, "config": config})
            assert response.status_code == 400, (task_type, config, response.text)
            assert response.json()["error"]["field"] == field, (config, response.text)
            assert_no_host_file_in(response.text)
            report = api.post("/api/finetune/validate", json={"type": task_type, "config": config})
            assert report.status_code == 200 and not report.json()["ok"], report.text
            assert report.json()["error"]["field"] == field, (config, report.text)
            assert_no_host_file_in(report.text)
        assert api.get("/api/finetune/tasks").json()["total"] == 0  # nothing was queued


def test_no_task_writes_outside_the_output_root(stack, users):
    with client(stack, users["alice"]) as api:
        for given in ("/tmp/bugagaric-escape", "../escape", "data/escape", "var/agent", "models/tiny-llama"):
            response = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(output_dir=given)})
            assert response.status_code == 400 and response.json()["error"]["field"] == "output_dir", response.text
            assert "outside the output root" in response.json()["error"]["message"]
    assert not Path("/tmp/bugagaric-escape").exists() and not (stack.workspace / "data" / "escape").exists()


def test_a_user_cannot_write_into_or_train_on_another_users_task(stack, users):
    with client(stack, users["alice"]) as alice, client(stack, users["bob"]) as bob:
        started = alice.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(output_dir="output/team")})
        assert started.status_code == 201, started.text
        done = wait_for_task(alice, started.json()["id"], lambda t: t["status"] in TERMINAL)
        assert done["status"] == "succeeded", done["error"]
        hers = Path(done["output_dir"])
        assert hers == stack.workspace / "output" / "team" and (hers / "adapter_config.json").is_file()
        relative = hers.relative_to(stack.workspace).as_posix()

        for config, words in (
            (tiny_sft_config(output_dir=relative), "was already used by task"),
            (tiny_sft_config(output_dir=f"{relative}/mine"), "inside the output directory of another task"),
            (tiny_sft_config(model_name_or_path=f"./{relative}"), "belongs to another user's task"),
            (tiny_sft_config(train_data_path=f"{relative}/adapter_config.json"), "belongs to another user's task"),
        ):
            response = bob.post("/api/finetune/start", json={"type": "sft", "config": config})
            assert response.status_code == 400 and words in response.json()["error"]["message"], response.text
        # Alice may read her own output (a path on the agent: ./...): what stops her is the agent's model check, as
        # her output is a LoRA adapter, not a model directory a trainer could load.
        again = alice.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(
            model_name_or_path=f"./{relative}")})
        assert again.status_code == 400, again.text
        error = again.json()["error"]
        assert error["field"] == "model_name_or_path" and "without config.json" in error["message"], error
        assert sorted(p.name for p in hers.iterdir() if p.is_dir() and len(p.name) == 32) == []  # nothing nested


# --- files that never end ------------------------------------------------------------------------------------------

def test_endless_files_leave_logins_answering_within_a_second(stack, users):
    answers: list[tuple[int, float]] = []

    def submit(path: str) -> None:
        with client(stack, users["alice"]) as api:
            started = time.monotonic()
            response = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(train_data_path=path)})
            answers.append((response.status_code, time.monotonic() - started))

    submitters = [threading.Thread(target=submit, args=(p,)) for p in ["/dev/urandom"] * 6 + ["data/pipe.jsonl"] * 6]
    for thread in submitters:
        thread.start()
    logins = []
    with httpx.Client(base_url=stack.base_url, timeout=30) as anonymous:
        for _ in range(5):
            started = time.monotonic()
            response = anonymous.post("/api/auth/login", json={"username": "bob", "password": "bob-password"})
            logins.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
            time.sleep(0.2)
    for thread in submitters:
        thread.join(timeout=60)
    assert sorted(code for code, _ in answers) == [400] * 12, answers
    assert max(seconds for _, seconds in answers) < GATEWAY_DEADLINE_SECONDS
    assert max(logins) < 1.0, logins
    health = httpx.get(f"{stack.base_url}/api/health", timeout=10).json()
    assert health["status"] == "ok" and health["serving"] is True


def test_a_200k_row_dataset_is_accepted_within_the_gateway_deadline(stack, users):
    rows = sft_rows(64)
    path = stack.workspace / "data" / "big.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(200_000):
            handle.write(json.dumps(rows[i % len(rows)]) + "\n")
    assert path.stat().st_size > 20 * 1024**2
    with client(stack, users["alice"]) as api:
        started = time.monotonic()
        response = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(train_data_path="data/big.jsonl")})
        elapsed = time.monotonic() - started
        assert response.status_code == 201, response.text
        assert elapsed < GATEWAY_DEADLINE_SECONDS
        task = wait_for_task(api, response.json()["id"], lambda t: t["validation"]["state"] != "pending")
        assert task["validation"] == {"state": "passed", "rows": 200_000, "message": ""}
        api.delete(f"/api/finetune/tasks/{task['id']}")  # training on 200k rows is not the point here
        print(f"\n200k rows ({path.stat().st_size / 1e6:.0f} MB): submit answered in {elapsed:.2f}s")


# --- credentials ---------------------------------------------------------------------------------------------------

def test_streams_end_within_seconds_of_logout(stack):
    token = stack.create_user("carol", "carol-password")
    with client(stack, token) as api:
        task = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(max_steps=400)}).json()
        wait_for_task(api, task["id"], lambda t: t["status"] == "running")
        channel = grpc.insecure_channel(stack.control_plane_address)
        stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
        stream = stub.StreamTaskLogs(control_plane_pb2.StreamTaskLogsRequest(task_id=task["id"], follow=True),
                                     metadata=bearer_metadata(token))
        outcome: dict = {}

        def read() -> None:
            try:
                for _ in stream:
                    pass
                outcome["end"] = "finished"
            except grpc.RpcError as exc:
                outcome["end"] = exc.code()
            outcome["at"] = time.monotonic()

        reader = threading.Thread(target=read)
        reader.start()
        sse_lines: list[str] = []

        def read_sse() -> None:
            with httpx.stream("GET", f"{stack.base_url}/api/finetune/tasks/{task['id']}/logs/stream",
                              headers={"authorization": f"Bearer {token}"}, timeout=60) as response:
                for line in response.iter_lines():
                    sse_lines.append(line)
            outcome["sse_at"] = time.monotonic()

        sse = threading.Thread(target=read_sse)
        sse.start()
        time.sleep(2)
        assert api.post("/api/auth/logout").status_code == 200
        logged_out = time.monotonic()
        reader.join(timeout=20)
        sse.join(timeout=20)
        channel.close()
        assert outcome.get("end") == grpc.StatusCode.UNAUTHENTICATED, outcome
        assert outcome["at"] - logged_out < 6 and outcome["sse_at"] - logged_out < 8, outcome
        assert "event: error" in sse_lines and any("unauthenticated" in line for line in sse_lines), sse_lines[-5:]
        with client(stack, stack.admin_token) as admin:
            admin.delete(f"/api/finetune/tasks/{task['id']}")


def test_concurrent_wrong_logins_are_checked_at_most_the_limit_and_the_owner_is_not_locked_out(stack):
    stack.create_user("dave", "dave-password")
    answers: list[int] = []

    def wrong(_: int) -> None:
        with httpx.Client(base_url=stack.base_url, timeout=30) as anonymous:
            answers.append(anonymous.post("/api/auth/login", json={"username": "dave", "password": "guess-it"}).status_code)

    threads = [threading.Thread(target=wrong, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [401] * 5 + [429] * 5, answers  # 5 passwords checked, 5 refused unchecked
    # The attacker's address is backed off; the owner, elsewhere (the console's proxy forwards the client), is not.
    owner = httpx.post(f"{stack.base_url}/api/auth/login", json={"username": "dave", "password": "dave-password"},
                       headers={"x-forwarded-for": "192.0.2.77"}, timeout=30)
    assert owner.status_code == 200, owner.text


def test_the_store_and_the_logs_are_readable_by_their_owner_only(stack, users):
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(stack.workspace / "var" / "bugagaric.db") == 0o600
    spools = list((stack.agent_dir() / "tasks").glob("*/attempt-*/*.log")) + \
        list((stack.agent_dir() / "tasks").glob("*/attempt-*/spool.jsonl"))
    assert spools and all(mode(p) == 0o600 for p in spools), [(p, oct(mode(p))) for p in spools]


def test_health_says_unavailable_while_token_checks_cannot_be_served(tmp_path):
    """In-process: the one token-check thread is taken (as a stuck database would take them all)."""
    import asyncio

    from control_plane.server import start_control_plane
    from control_plane.settings import ControlPlaneSettings

    settings = ControlPlaneSettings(
        database_url=f"sqlite:///{tmp_path / 'var' / 'cp.db'}", control_plane_port=0, cluster_token="cluster-secret",
        admin_password="admin-password", workspace=tmp_path, token_check_threads=1,
    )

    async def scenario() -> None:
        running = await start_control_plane(settings)
        release = threading.Event()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
                ready = await stub.GetSystemHealth(control_plane_pb2.GetSystemHealthRequest(), timeout=10)
                assert ready.serving and ready.status == "degraded"  # serving; no agent registered
                blocked = asyncio.ensure_future(running.token_check._pool.run(release.wait))
                stuck = await stub.GetSystemHealth(control_plane_pb2.GetSystemHealthRequest(), timeout=10)
                assert not stuck.serving and stuck.status == "unavailable"
                release.set()
                await blocked
                again = await stub.GetSystemHealth(control_plane_pb2.GetSystemHealthRequest(), timeout=10)
                assert again.serving and again.status == "degraded"
        finally:
            release.set()
            await running.stop()

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        runner.run(scenario())
