"""The console's cluster page in a real browser against the real stack (one agent with 2 CPU slots): alice's long
task runs on one slot and her second task, asking for both slots, waits in the queue. The admin sees the agent, both
slots, the running task on its slot (linking to its monitor) and the queued one in the queue; bob, a normal user,
sees the same agent and devices, but alice's task only as "occupied" and her queued task only as a count."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.helpers.browser import console_stack, launch_chromium, screenshot
from tests.helpers.tasks import wait_for_task

ENDED = {"succeeded", "failed", "stopped"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The stack, the console, alice's running and queued tasks (stopped at the end) and the users' passwords."""
    with console_stack(tmp_path_factory.mktemp("cluster"), slots=2, stop_grace_seconds=3.0) as console:
        yield from _with_alices_tasks(console)


def _with_alices_tasks(console):
    """alice's task on one device and her two-device task queued behind it, both stopped at the end."""
    stack, workspace = console.stack, console.workspace
    alice = None
    tasks: list[dict] = []
    try:
        passwords = {"admin": stack.admin_password, "bob": "bob-password-1"}
        stack.create_user("bob", passwords["bob"])
        alice = httpx.Client(base_url=stack.base_url, timeout=60,
                             headers={"authorization": f"Bearer {stack.create_user('alice', 'alice-password-1')}"})
        config = {"model_name_or_path": str(workspace / "models" / "tiny-llama"), "train_data_path": "data/train.jsonl",
                  "max_length": 32, "per_device_train_batch_size": 4}
        for extra in ({"max_steps": 100000}, {"max_steps": 2, "gpus": 2}):  # runs until stopped; waits for both slots
            response = alice.post("/api/finetune/start", json={"type": "sft", "config": config | extra})
            assert response.status_code == 201, response.text
            tasks.append(response.json())
        running = wait_for_task(alice, tasks[0]["id"], lambda t: t["status"] == "running")
        queued = wait_for_task(alice, tasks[1]["id"], lambda t: t["queue_position"] == 1)
        assert queued["status"] == "queued" and len(running["devices"]) == 1
        yield {"url": console.url, "passwords": passwords, "running": running, "queued": queued,
               "gateway": stack.base_url}
    finally:
        if alice is not None:
            for task in reversed(tasks):  # the queued one first, or it would start once the slots free up
                alice.delete(f"/api/finetune/tasks/{task['id']}")
            for task in tasks:
                wait_for_task(alice, task["id"], lambda t: t["status"] in ENDED)
            alice.close()


@pytest.fixture()
def browser():
    with launch_chromium() as launched:
        yield launched


def _open_cluster_page(browser, cluster, username: str):
    """A fresh session of `username` on the cluster page, reached through the sidebar; its uncaught errors listed."""
    context = browser.new_context(viewport={"width": 1440, "height": 960}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{cluster['url']}/login")
    page.locator("button[data-lang='en']").click()
    page.fill("#login-username", username)
    page.fill("#login-password", cluster["passwords"][username])
    page.click("#login-submit")
    page.wait_for_url(re.compile(r".*/finetune$"))
    page.get_by_role("link", name="Cluster", exact=True).click()
    page.wait_for_url(f"{cluster['url']}/cluster")
    page.locator(".cluster-agent").wait_for()
    return page, errors


def test_admin_sees_the_agent_its_slots_the_running_task_and_the_queue(browser, cluster):
    running, queued = cluster["running"], cluster["queued"]
    page, errors = _open_cluster_page(browser, cluster, "admin")
    agent = page.locator(f".cluster-agent[data-agent-id='{running['agent_id']}']")
    assert agent.get_attribute("data-alive") == "true"
    assert agent.locator("[data-testid=agent-status]").inner_text() == "Online"
    assert agent.locator("[data-testid=agent-slots]").inner_text() == "1 free of 2"

    (held,) = running["devices"]
    devices = agent.locator("tr[data-device-index]")
    assert sorted(int(devices.nth(i).get_attribute("data-device-index")) for i in range(devices.count())) == [0, 1]
    slot = agent.locator(f"tr[data-device-index='{held}']")
    assert slot.get_attribute("data-state") == "task"
    on_slot = slot.locator(f".cluster-task[data-task-id='{running['id']}']")
    assert "alice" in on_slot.inner_text() and "sft" in on_slot.inner_text()
    # CPU slots have no NVML readings: utilization and memory are "not reported", not zero.
    assert slot.locator("td").nth(2).inner_text() == "—" and slot.locator("td").nth(3).inner_text() == "—"
    other = agent.locator(f"tr[data-device-index='{1 - held}']")
    assert other.get_attribute("data-state") == "free" and other.locator(".cluster-task").count() == 0

    row = page.locator(f"[data-testid=cluster-queue] tr[data-task-id='{queued['id']}']")
    assert row.locator("[data-testid=queue-position]").inner_text() == "1"
    assert "2 device(s)" in row.inner_text() and "alice" in row.inner_text()
    assert page.locator("[data-testid=queue-hidden]").count() == 0
    screenshot(page, "cluster-admin")

    # The running task links to its monitor.
    on_slot.get_by_role("link").click()
    page.wait_for_url(f"{cluster['url']}/tasks/{running['id']}")
    assert not errors, f"uncaught errors in the page: {errors}"


def test_a_normal_user_sees_others_tasks_only_as_occupied(browser, cluster):
    running, queued = cluster["running"], cluster["queued"]
    # What lets the page mark the slot: the health report names the held devices, not who holds them.
    (reported,) = httpx.get(f"{cluster['gateway']}/api/health", timeout=30).json()["agents"]
    assert reported["busy_devices"] == running["devices"]
    page, errors = _open_cluster_page(browser, cluster, "bob")
    agent = page.locator(f".cluster-agent[data-agent-id='{running['agent_id']}']")
    (held,) = running["devices"]
    slot = agent.locator(f"tr[data-device-index='{held}']")
    assert slot.get_attribute("data-state") == "occupied"
    assert slot.locator("td").last.inner_text() == "Occupied (another user's task)"
    assert agent.locator(f"tr[data-device-index='{1 - held}']").get_attribute("data-state") == "free"
    assert page.locator("[data-testid=queue-hidden]").inner_text() == "1 more queued task(s) of other users."
    html = page.content()
    for secret in (running["id"], queued["id"], "alice"):
        assert secret not in html
    screenshot(page, "cluster-normal-user")
    assert not errors, f"uncaught errors in the page: {errors}"
