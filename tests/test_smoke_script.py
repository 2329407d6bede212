"""`python3 test_finetune_api.py`, the seed's API smoke test, run as a newcomer runs it — a subprocess of the system's
python3 (which lacks torch here, so the model is built with .venv/bin/python) — against a whole system of real
processes on free ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import httpx
import pytest

from tests.helpers.stack import REPO_ROOT, free_port, start_stack

SCRIPT = REPO_ROOT / "test_finetune_api.py"
CHECKS = ["health", "login", "templates", "start", "status", "logs", "list", "stop", "delete"]


def newcomer_python() -> str:
    """The `python3` on PATH (a fresh machine's system Python), else this interpreter."""
    return shutil.which("python3") or sys.executable


def has_torch(python: str) -> bool:
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def run_script(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    # Only what a newcomer's shell would have: none of the credentials this script would otherwise pick up.
    env = {k: v for k, v in os.environ.items()
           if k not in {"BUGAGARIC_API_KEY", "BUGAGARIC_ADMIN_PASSWORD", "BUGAGARIC_WORKSPACE", "PYTHONPATH"}}
    return subprocess.run([newcomer_python(), str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("smoke-workspace")
    running = start_stack(workspace, slots=1, stop_grace_seconds=10)
    yield running
    running.stop()


def test_the_smoke_test_passes_against_a_running_system(stack):
    result = run_script("--base", stack.base_url, "--user", "admin", "--password", stack.admin_password,
                        "--workspace", str(stack.workspace))
    output = result.stdout
    assert result.returncode == 0, f"{output}\n{result.stderr}"
    lines = output.splitlines()
    for check in CHECKS:
        assert any(line.startswith(f"✅ {check}: ") for line in lines), f"no ✅ {check} line:\n{output}"
    assert "❌" not in output and "⏭" not in output
    assert lines[-1] == f"{len(CHECKS)} passed, 0 failed"
    assert "✅ health: ok, 1 agent(s) alive" in lines
    assert "password from --password" in output
    if not has_torch(newcomer_python()):
        assert "built with .venv/bin/python" in output  # the fallback: torch is the project's, not python3's

    # What it built stays for the next run; what it ran is gone, outputs included.
    assert (stack.workspace / "models" / "smoke-tiny-llama" / "config.json").is_file()
    assert (stack.workspace / "data" / "smoke" / "train.jsonl").is_file()
    tasks = httpx.get(f"{stack.base_url}/api/finetune/tasks", headers={"authorization": f"Bearer {stack.admin_token}"},
                      timeout=30).json()
    assert tasks["total"] == 0, tasks
    assert not list((stack.workspace / "output" / "smoke").glob("*"))


def test_a_wrong_password_fails_the_login_and_the_run(stack):
    result = run_script("--base", stack.base_url, "--user", "admin", "--password", "not-the-password",
                        "--workspace", str(stack.workspace), timeout=60)
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert "✅ health: ok, 1 agent(s) alive" in lines
    assert any(line.startswith("❌ login: as admin (password from --password): 401") for line in lines), result.stdout
    assert "⏭ start: not run (needs a login)" in lines
    assert lines[-1] == "1 passed, 1 failed, 7 not run"


def test_an_unreachable_system_exits_2_with_a_hint():
    result = run_script("--base", f"http://127.0.0.1:{free_port()}", timeout=60)
    assert result.returncode == 2, result.stdout
    assert result.stdout.splitlines()[1].startswith("❌ health: ")
    assert "./start_finetune_system.sh" in result.stdout
    assert result.stdout.splitlines()[-1] == "0 passed, 1 failed"


def test_credentials_the_first_that_applies(tmp_path, monkeypatch):
    import argparse

    import test_finetune_api as smoke

    for name in ("BUGAGARIC_API_KEY", "BUGAGARIC_ADMIN_PASSWORD", "BUGAGARIC_ADMIN_USER", "BUGAGARIC_ADMIN_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    args = argparse.Namespace(user=None, password=None)
    with pytest.raises(smoke.CheckFailed, match="var/admin_password does not exist"):
        smoke.credentials(args, tmp_path)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "admin_password").write_text("root s3cret\n")
    assert smoke.credentials(args, tmp_path) == ("password", "root", "s3cret", "var/admin_password")
    monkeypatch.setenv("BUGAGARIC_ADMIN_PASSWORD", "from-env")
    assert smoke.credentials(args, tmp_path) == ("password", "admin", "from-env", "BUGAGARIC_ADMIN_PASSWORD")
    monkeypatch.setenv("BUGAGARIC_API_KEY", "a-token")
    assert smoke.credentials(args, tmp_path) == ("token", None, "a-token", "BUGAGARIC_API_KEY")
    args.password = "given"
    assert smoke.credentials(args, tmp_path) == ("password", "admin", "given", "--password")
