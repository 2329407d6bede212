"""scripts/system.py, behind ./start_finetune_system.sh: its `stop` stops running tasks through the API as the admin
(recorded as user_stop), against a whole system of real processes."""

from __future__ import annotations

import importlib.util
import shutil

import httpx

from tests.helpers.stack import REPO_ROOT, start_stack
from tests.helpers.tasks import tiny_sft_config, wait_for_task
from tests.helpers.tiny_models import write_sft_rows


def load_system_script(monkeypatch, gateway_port: int, admin_password: str):
    """The script as the start script runs it, pointed at this stack (it reads its ports and the admin's password
    from the environment when it is loaded)."""
    monkeypatch.setenv("BUGAGARIC_GATEWAY_PORT", str(gateway_port))
    monkeypatch.setenv("BUGAGARIC_ADMIN_PASSWORD", admin_password)
    spec = importlib.util.spec_from_file_location("system_script", REPO_ROOT / "scripts" / "system.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stop_stops_running_tasks_through_the_api_as_the_admin(tmp_path_factory, tiny_llama_dir, monkeypatch):
    workspace = tmp_path_factory.mktemp("system-script")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    write_sft_rows(workspace / "data" / "train.jsonl", 16)
    stack = start_stack(workspace, slots=1)
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30,
                          headers={"authorization": f"Bearer {stack.admin_token}"}) as api:
            task = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(max_steps=400)}).json()
            wait_for_task(api, task["id"], lambda t: t["status"] == "running")
            load_system_script(monkeypatch, stack.gateway_port, stack.admin_password).stop_active_tasks()
            stopped = api.get(f"/api/finetune/tasks/{task['id']}").json()
            assert stopped["status"] == "stopped" and stopped["events"][-1]["reason"] == "user_stop", stopped
    finally:
        stack.stop()
