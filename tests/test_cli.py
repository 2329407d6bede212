"""The `bugagaric` CLI against a running system (control plane, one agent, gateway as real processes): every command
run as a real subprocess of the installed console script, as a person or a CI job would, with its own config
directory. Two short tiny-Llama SFT runs (one followed to success, one stopped) and one export."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.stack import REPO_ROOT, free_port, start_stack
from tests.helpers.tasks import wait_for_task, wait_until_published
from tests.helpers.tiny_models import write_sft_rows

_SCRIPT = Path(sys.executable).parent / "bugagaric"
# The installed console script (pip install -e .), else the same app as a module.
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cli"]
EXIT_TASK_STOPPED, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_UNAUTHENTICATED = 2, 3, 4, 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_llama_dir):
    workspace = tmp_path_factory.mktemp("cli")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    running = start_stack(workspace, slots=2, stop_grace_seconds=5)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def cli_env(stack, tmp_path_factory) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUGAGARIC_")}
    env.update({"BUGAGARIC_CONFIG_DIR": str(tmp_path_factory.mktemp("cli-config")), "BUGAGARIC_URL": stack.base_url,
                "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"})
    return env


def run(env: dict[str, str], *args: str, stdin: str | None = None, cwd: Path | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO_ROOT)


def ok_json(result: subprocess.CompletedProcess):
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)  # --json: nothing but JSON on stdout


def assert_clean_error(result: subprocess.CompletedProcess, exit_code: int, *words: str) -> str:
    """One `error: ...` line on stderr, nothing on stdout, no traceback."""
    assert result.returncode == exit_code, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def logged_in(stack, cli_env) -> dict[str, str]:
    result = run(cli_env, "login", "--username", "admin", "--json", stdin=stack.admin_password + "\n")
    answer = ok_json(result)
    assert answer["username"] == "admin" and answer["kind"] == "token"
    return cli_env


@pytest.fixture(scope="module")
def api(stack):
    with httpx.Client(base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {stack.admin_token}"}) as c:
        yield c


@pytest.fixture(scope="module")
def dataset(logged_in, tmp_path_factory) -> dict:
    rows = write_sft_rows(tmp_path_factory.mktemp("cli-data") / "train.jsonl", 40)
    uploaded = ok_json(run(logged_in, "datasets", "upload", str(rows), "--type", "sft", "--json"))
    assert uploaded["rows"] == 40 and uploaded["type"] == "sft"
    return uploaded


def write_config(directory: Path, name: str, dataset_id: str, yaml_lines: str = "", **overrides) -> Path:
    config = {"model_name_or_path": "models/tiny-llama", "train_data_path": f"dataset:{dataset_id}",
              "max_length": 32, "per_device_train_batch_size": 4, "max_steps": 6, "use_lora": True, **overrides}
    lines = ["# a tiny SFT run\n"] + [f"{key}: {json.dumps(value)}\n" for key, value in config.items()]
    path = directory / name
    path.write_text("".join(lines) + yaml_lines)
    return path


@pytest.fixture(scope="module")
def followed(logged_in, dataset, tmp_path_factory, api) -> tuple[subprocess.CompletedProcess, dict]:
    """`submit --follow` of a tiny SFT run on the uploaded dataset, to the end (the run several tests read)."""
    config = write_config(tmp_path_factory.mktemp("cli-configs"), "sft.yaml", dataset["id"], yaml_lines="learning_rate: 5e-3\n")
    result = run(logged_in, "submit", str(config), "--type", "sft", "--follow")
    match = re.search(r"task (\S+) \(sft\)", result.stdout)
    assert match, result.stdout + result.stderr
    return result, api.get(f"/api/finetune/tasks/{match.group(1)}").json()


# --- credentials and errors ------------------------------------------------------------------------------------------


def test_a_wrong_password_is_one_clean_line(stack, cli_env, tmp_path):
    env = {**cli_env, "BUGAGARIC_CONFIG_DIR": str(tmp_path)}
    line = assert_clean_error(run(env, "login", "--username", "admin", stdin="not-the-password\n"),
                              EXIT_UNAUTHENTICATED)
    assert "password" in line.lower() or "credentials" in line.lower()
    assert not (tmp_path / "credentials.json").exists()


def test_login_saves_a_private_token_and_ls_json_uses_it(logged_in):
    path = Path(logged_in["BUGAGARIC_CONFIG_DIR"]) / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["url"] == logged_in["BUGAGARIC_URL"] and saved["token"]
    page = ok_json(run(logged_in, "ls", "--json"))
    assert isinstance(page["tasks"], list) and "total" in page


def test_no_login_no_gateway_and_a_bad_url_are_clean_errors(cli_env, tmp_path):
    empty = {**cli_env, "BUGAGARIC_CONFIG_DIR": str(tmp_path)}
    assert_clean_error(run(empty, "ls"), EXIT_UNAUTHENTICATED, "bugagaric login")
    nobody = {**empty, "BUGAGARIC_URL": f"http://127.0.0.1:{free_port()}", "BUGAGARIC_API_KEY": "some-key"}
    assert_clean_error(run(nobody, "get", "x", "--json"), EXIT_UNREACHABLE, "cannot reach the gateway")
    assert_clean_error(run({**nobody, "BUGAGARIC_URL": "ftp//nowhere"}, "ls"), EXIT_UNREACHABLE, "bad gateway URL")
    # A credential the gateway does not know: its 401, cleanly.
    assert_clean_error(run({**cli_env, "BUGAGARIC_API_KEY": "not-a-real-key"}, "ls"), EXIT_UNAUTHENTICATED)


def test_a_bad_config_file_is_refused_naming_the_field_or_line(logged_in, dataset, tmp_path):
    typo = write_config(tmp_path, "typo.yaml", dataset["id"], learning_rte=0.1)
    assert_clean_error(run(logged_in, "submit", str(typo), "--type", "sft"), EXIT_REFUSED, "learning_rte")
    wrong = write_config(tmp_path, "wrong.yaml", dataset["id"], max_length="long")
    assert_clean_error(run(logged_in, "submit", str(wrong), "--type", "sft"), EXIT_REFUSED, "max_length")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model_name_or_path: models/tiny-llama\ntrain_data_path: [oops\n")
    assert_clean_error(run(logged_in, "submit", str(broken), "--type", "sft"), EXIT_REFUSED, "broken.yaml line 3")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert_clean_error(run(logged_in, "submit", str(listed), "--type", "sft"), EXIT_REFUSED, "mapping")
    assert_clean_error(run(logged_in, "get", "no-such-task"), EXIT_REFUSED, "task_id")


# --- a followed run and what it leaves ---------------------------------------------------------------------------------


def test_submit_follow_shows_progress_and_logs_and_exits_0(followed, api):
    result, task = followed
    assert result.returncode == 0, result.stdout + result.stderr
    assert task["status"] == "succeeded" and task["config"]["train_data_path"].startswith("dataset:")
    assert task["config"]["learning_rate"] == 5e-3  # "5e-3" in YAML reached the trainer as a number
    assert re.search(rf"\[{task['id']}\] \w+  step \d+/6", result.stdout), result.stdout
    assert f"task {task['id']} (sft) is succeeded" in result.stdout
    lines = api.get(f"/api/finetune/tasks/{task['id']}/logs", params={"limit": 1000}).json()["lines"]
    assert lines and all(line["text"] in result.stdout for line in lines)
    assert "Traceback" not in result.stderr


def test_get_logs_and_ls_of_the_run(followed, logged_in):
    _, task = followed
    got = ok_json(run(logged_in, "get", task["id"], "--json"))
    assert got["id"] == task["id"] and got["status"] == "succeeded" and got["progress"]["step"] == 6
    human = run(logged_in, "get", task["id"])
    assert human.returncode == 0 and task["id"] in human.stdout and "succeeded" in human.stdout

    logs = ok_json(run(logged_in, "logs", task["id"], "--json", "--limit", "5"))
    assert 0 < len(logs["lines"]) <= 5
    plain = run(logged_in, "logs", task["id"], "--limit", "5")
    assert plain.returncode == 0 and logs["lines"][-1]["text"] in plain.stdout
    # -f of an ended task: the tail, then the stream's end at once; the exit code is the task's outcome.
    tail = run(logged_in, "logs", task["id"], "-f", "--limit", "3", "--json")
    assert tail.returncode == 0, tail.stderr
    assert [json.loads(line)["seq"] for line in tail.stdout.splitlines()] == [x["seq"] for x in logs["lines"][-3:]]

    listed = ok_json(run(logged_in, "ls", "--json", "--status", "succeeded", "--type", "sft"))
    assert task["id"] in [t["id"] for t in listed["tasks"]]
    assert ok_json(run(logged_in, "ls", "--json", "--type", "dpo"))["tasks"] == []
    table = run(logged_in, "ls", "--limit", "1")
    assert table.returncode == 0 and "ID" in table.stdout and "task(s)" in table.stderr
    assert_clean_error(run(logged_in, "ls", "--status", "nonsense"), EXIT_REFUSED, "status")
    datasets = ok_json(run(logged_in, "datasets", "ls", "--json"))["datasets"]
    assert task["config"]["train_data_path"].removeprefix("dataset:") in [d["id"] for d in datasets]


def test_artifacts_list_and_download_the_final_model(followed, logged_in, tmp_path):
    _, task = followed
    listing = ok_json(run(logged_in, "artifacts", "ls", task["id"], "--json"))
    paths = {a["path"]: a["size"] for a in listing["artifacts"]}
    assert "adapter_config.json" in paths, paths

    downloaded = ok_json(run(logged_in, "artifacts", "download", task["id"], "-o", str(tmp_path), "--json"))
    model = Path(downloaded["file"])
    assert model == tmp_path / f"{task['id']}-model.tar" and model.stat().st_size == downloaded["bytes"] > 0
    with tarfile.open(model) as tar:
        assert any(name.endswith("adapter_config.json") for name in tar.getnames())
    assert not list(tmp_path.glob("*.part"))

    one = run(logged_in, "artifacts", "download", task["id"], "adapter_config.json", "-o", str(tmp_path / "a.json"))
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "a.json").stat().st_size == paths["adapter_config.json"]
    assert json.loads((tmp_path / "a.json").read_text())
    assert_clean_error(run(logged_in, "artifacts", "download", task["id"], "../etc/passwd", "-o", str(tmp_path / "x")),
                       EXIT_REFUSED, "path")
    assert not (tmp_path / "x").exists()


def test_export_follow_queues_and_runs_an_export_task(followed, logged_in, api):
    _, task = followed
    wait_until_published(api, task["id"])  # what an export loads
    exported = run(logged_in, "export", task["id"], "--merge-lora", "--follow", "--json")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    final = json.loads(exported.stdout)
    assert final["type"] == "export" and final["status"] == "succeeded"


# --- stop, a dropped stream, resume, rm ----------------------------------------------------------------------------


def test_a_followed_task_that_is_stopped_exits_2_across_a_gateway_restart(stack, logged_in, dataset, api, tmp_path):
    config = write_config(tmp_path, "long.yaml", dataset["id"], max_steps=100000, save_steps=50)
    follow = subprocess.Popen([*CLI, "submit", str(config), "--type", "sft", "--follow"], env=logged_in,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(follow.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any(re.search(r"running  step \d+/100000", line) for line in seen):
            assert follow.poll() is None and time.monotonic() < deadline, "".join(seen)
            time.sleep(0.2)
        task_id = re.search(r"task (\S+) \(sft\)", "".join(seen)).group(1)

        # The gateway dies under the follow and comes back on the same port: the follow reconnects.
        stack.kill("gateway")
        stack.restart("gateway")
        stack.wait_healthy()
        lines_before = len(seen)
        deadline = time.monotonic() + 60
        while len(seen) == lines_before:  # a new line arrives only through a re-opened stream
            assert follow.poll() is None and time.monotonic() < deadline, "".join(seen)
            time.sleep(0.2)

        stopped = ok_json(run(logged_in, "stop", task_id, "--json"))
        assert stopped["id"] == task_id and stopped["status"] in {"stopping", "stopped"}
        assert follow.wait(timeout=120) == EXIT_TASK_STOPPED, "".join(seen)
    finally:
        if follow.poll() is None:
            follow.send_signal(signal.SIGINT)
            follow.wait(timeout=30)
        reader.join(timeout=10)
    output = "".join(seen)
    assert "reconnecting" in output and "Traceback" not in output
    # The trainer logs every step: across the reconnect each step's line was printed once, none missing.
    steps = [int(m) for m in re.findall(r"^step (\d+)/100000 loss", output, flags=re.MULTILINE)]
    assert steps == list(range(1, len(steps) + 1)), steps
    assert f"task {task_id} (sft) is stopped" in output
    assert ok_json(run(logged_in, "get", task_id, "--json"))["status"] == "stopped"

    resumed = ok_json(run(logged_in, "resume", task_id, "--json"))
    assert resumed["id"] == task_id and resumed["status"] in {"queued", "starting", "running"}
    assert_clean_error(run(logged_in, "rm", task_id), EXIT_REFUSED)  # not while it runs again
    ok_json(run(logged_in, "stop", task_id, "--json"))
    wait_for_task(api, task_id, lambda t: t["status"] == "stopped")
    assert ok_json(run(logged_in, "rm", task_id, "--json")) == {"deleted": task_id}
    assert_clean_error(run(logged_in, "get", task_id), EXIT_REFUSED, task_id)


def test_logout_revokes_the_token(stack, cli_env, tmp_path):
    env = {**cli_env, "BUGAGARIC_CONFIG_DIR": str(tmp_path)}
    ok_json(run(env, "login", "--username", "admin", "--json", stdin=stack.admin_password + "\n"))
    token = json.loads((tmp_path / "credentials.json").read_text())["token"]
    assert ok_json(run(env, "logout", "--json")) == {"logged_out": True, "revoked": True}
    assert not (tmp_path / "credentials.json").exists()
    assert httpx.get(f"{stack.base_url}/api/auth/me", headers={"authorization": f"Bearer {token}"}).status_code == 401
    assert_clean_error(run(env, "ls"), EXIT_UNAUTHENTICATED)


# --- API keys ------------------------------------------------------------------------------------------------------


def test_an_api_key_from_the_environment_or_saved_by_login(stack, cli_env, api, dataset, tmp_path):
    created = api.post("/api/auth/keys", json={"name": "ci", "scopes": ["read"]})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    env = {**cli_env, "BUGAGARIC_CONFIG_DIR": str(tmp_path / "env")}
    # No login at all: BUGAGARIC_API_KEY is the credential of every command.
    listed = ok_json(run({**env, "BUGAGARIC_API_KEY": key}, "datasets", "ls", "--json"))
    assert dataset["id"] in [d["id"] for d in listed["datasets"]]
    # A read-only key may not submit: the gateway's 403, cleanly.
    config = write_config(tmp_path, "c.yaml", dataset["id"])
    assert_clean_error(run({**env, "BUGAGARIC_API_KEY": key}, "submit", str(config), "--type", "sft"), EXIT_REFUSED)

    saved_env = {**cli_env, "BUGAGARIC_CONFIG_DIR": str(tmp_path / "saved")}
    answer = ok_json(run(saved_env, "login", "--api-key", key, "--json"))
    assert answer["kind"] == "api_key" and answer["username"] == "admin"
    assert ok_json(run(saved_env, "ls", "--json"))["tasks"] is not None
    # logout forgets a saved key but does not revoke it (that is the API's or the console's to do).
    assert ok_json(run(saved_env, "logout", "--json")) == {"logged_out": True, "revoked": False}
    assert httpx.get(f"{stack.base_url}/api/auth/me", headers={"authorization": f"Bearer {key}"}).status_code == 200
    assert_clean_error(run(saved_env, "login", "--api-key", "bugagaric-not-a-key"), EXIT_UNAUTHENTICATED)
